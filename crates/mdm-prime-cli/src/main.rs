//! The `mdm-prime` command: a thin layer over the `mdm_prime` library.
//!
//! stdout carries data only (digits, samples, JSON summaries); progress and logs go to stderr.
// The doc comments of `args.rs` are clap's help text (`cuda[:N]`), not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

mod args;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = args::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Makes glibc keep freed memory for reuse instead of returning it to the OS.
///
/// By default glibc serves every buffer above its mmap threshold (at most 32 MiB) with a fresh
/// mmap and unmaps it when freed, so the B × L × V logits and their gradients are page-faulted in
/// again on every step: 30 % of a `cpu-gpt2` training step was kernel page-fault work
/// (docs/performance.md). Set `MDM_PRIME_MALLOC=default` to keep glibc's defaults (lower peak
/// RSS, slower).
#[allow(unsafe_code)]
fn keep_freed_memory() {
    if std::env::var("MDM_PRIME_MALLOC").is_ok_and(|v| v == "default") {
        return;
    }
    // SAFETY: mallopt only changes allocator tuning parameters; it is called once, first thing
    // in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
