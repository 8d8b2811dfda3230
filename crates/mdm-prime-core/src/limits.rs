//! Sizes that come from a user, checked against the machine's memory before anything is
//! allocated: a request that cannot fit is an error naming the value and the memory it needs,
//! never an allocation abort.

use crate::error::{Error, Result};

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
    check_fits_in(
        what,
        count,
        item_bytes,
        memory_bytes().unwrap_or(UNKNOWN_MEMORY),
    )
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
fn human(bytes: u128) -> String {
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
