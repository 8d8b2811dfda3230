//! The `mdm-prime` command: a thin layer over the `mdm_prime` library.
//!
//! stdout carries data only (digits, samples, JSON summaries); progress and logs go to stderr.

mod args;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
