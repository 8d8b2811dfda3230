//! Sizes that come from a user, checked against the machine's memory before anything is
//! allocated: a request that cannot fit is an error naming the value and the memory it needs,
//! never an allocation abort.

use crate::error::{Error, Result};

use std::sync::atomic::{AtomicU64, Ordering};

/// A cap set by [`set_memory_cap`] (0 = none).
static CAP: AtomicU64 = AtomicU64::new(0);

/// Caps the memory the checks below allow at `bytes` for this process (0 removes the cap): the
/// fuzz targets run under a 2 GiB RSS limit, so they check against that instead of the machine.
pub fn set_memory_cap(bytes: u64) {
    CAP.store(bytes, Ordering::Relaxed);
}

/// The memory a request may use: the machine's ([`memory_bytes`], 1 TiB where unknown), or the
/// cap of [`set_memory_cap`] when lower.
pub fn memory_budget() -> u128 {
    let machine = memory_bytes().unwrap_or(UNKNOWN_MEMORY);
    match CAP.load(Ordering::Relaxed) {
        0 => machine,
        cap => machine.min(u128::from(cap)),
    }
}

/// The machine's memory (`MemTotal` of /proc/meminfo), or `None` where it cannot be read.
pub fn memory_bytes() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What a request may use when the memory is unknown: 1 TiB (beyond any machine this runs on,
/// still far below what an overflowing size asks for).
const UNKNOWN_MEMORY: u128 = 1 << 40;

/// Checks that `count` items of `item_bytes` each fit in this machine's memory. The error names
/// `what` (the option or value that asked), the count and the memory it would need.
pub fn check_fits(what: &str, count: u128, item_bytes: u128) -> Result<()> {
    check_fits_in(what, count, item_bytes, memory_budget())
}

/// Checks that a request of `need` bytes fits; the error is `what` followed by the memory needed
/// and the memory there is, then `fix`.
pub fn check_bytes(what: &str, need: u128, fix: &str) -> Result<()> {
    let memory = memory_budget();
    if need > memory {
        return Err(Error::Value(format!(
            "{what} needs at least {}, which would not fit in this machine's {}; {fix}",
            human(need),
            human(memory)
        )));
    }
    Ok(())
}

fn check_fits_in(what: &str, count: u128, item_bytes: u128, memory: u128) -> Result<()> {
    let need = count.saturating_mul(item_bytes);
    if need > memory {
        return Err(Error::Value(format!(
            "{what}: {count} × {item_bytes} bytes = {} would not fit in this machine's {}; \
             ask for less",
            human(need),
            human(memory)
        )));
    }
    Ok(())
}

/// `1.5 GiB`-style sizes.
pub fn human(bytes: u128) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_cannot_fit_are_errors_naming_the_value() {
        let gib = 1u128 << 30;
        assert!(check_fits_in("--num", 1000, 4, gib).is_ok());
        let e = check_fits_in("--steps", 100_000_000_000, 1, 24 * gib)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--steps") && e.contains("93.1 GiB") && e.contains("24.0 GiB"),
            "{e}"
        );
        // Products that overflow u128 saturate instead of wrapping to something small.
        assert!(check_fits_in("x", u128::MAX, 8, gib).is_err());
        assert!(memory_bytes().is_none_or(|m| m > gib / 4));
    }
}
