//! Which devices a command runs on: `--device` and `[train] device`.
//!
//! `cpu` (burn's flex backend, always built in), `cuda` / `cuda:N` (needs the `cuda` cargo
//! feature), `wgpu` / `wgpu:N` (Vulkan, Metal or DX12 through wgpu; the `wgpu` feature). Several
//! devices of one kind, `cuda:0,cuda:1` (or `cuda:0,1`), train data-parallel. This module only
//! reads the text; `mdm_prime::device` opens the devices and says when the binary lacks the
//! backend or the machine the device.

use std::fmt;

/// The backend family of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    Cpu,
    Cuda,
    Wgpu,
}

impl Accelerator {
    pub fn name(self) -> &'static str {
        match self {
            Accelerator::Cpu => "cpu",
            Accelerator::Cuda => "cuda",
            Accelerator::Wgpu => "wgpu",
        }
    }
}

/// A parsed device list: one backend, one or more device indices (`cpu` has the one index 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub accelerator: Accelerator,
    pub indices: Vec<usize>,
}

/// The accepted forms, for error messages.
pub const DEVICE_FORMS: &str = "cpu, cuda, cuda:N, cuda:0,cuda:1,… (or cuda:0,1,…), wgpu, wgpu:N";

impl DeviceSpec {
    pub fn cpu() -> Self {
        DeviceSpec {
            accelerator: Accelerator::Cpu,
            indices: vec![0],
        }
    }

    /// Reads `cpu`, `cuda[:N]`, `wgpu[:N]` or a comma-separated list of one kind. An unknown
    /// name, a bad or repeated index, mixed kinds or several CPUs are errors saying what is
    /// accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut accelerator = None;
        let mut indices = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (name, index) = match item.split_once(':') {
                Some((n, i)) => (n.trim(), Some(i.trim())),
                None if item.chars().all(|c| c.is_ascii_digit()) && !item.is_empty() => {
                    // `cuda:0,1`: a bare index continues the kind named before it.
                    match accelerator {
                        Some(a) => (Accelerator::name(a), Some(item)),
                        None => {
                            return Err(format!("{text:?}: name the kind first ({DEVICE_FORMS})"));
                        }
                    }
                }
                None => (item, None),
            };
            let kind = match name.to_ascii_lowercase().as_str() {
                "cpu" | "flex" => Accelerator::Cpu,
                "cuda" | "gpu" => Accelerator::Cuda,
                "wgpu" => Accelerator::Wgpu,
                "" => return Err(format!("{text:?}: an empty device ({DEVICE_FORMS})")),
                other => {
                    return Err(format!("unknown device {other:?} ({DEVICE_FORMS})"));
                }
            };
            if accelerator.is_some_and(|a| a != kind) {
                return Err(format!(
                    "{text:?} mixes device kinds; data-parallel training uses devices of one kind"
                ));
            }
            accelerator = Some(kind);
            let index = match index {
                None => 0,
                Some(i) => i.parse::<usize>().map_err(|_| {
                    format!("{item:?}: the device index must be a number ({DEVICE_FORMS})")
                })?,
            };
            if kind == Accelerator::Cpu && (index != 0 || !indices.is_empty()) {
                return Err(format!(
                    "{text:?}: there is one cpu device (it uses every core); write `cpu`"
                ));
            }
            if indices.contains(&index) {
                return Err(format!("{text:?} names device {index} twice"));
            }
            indices.push(index);
        }
        Ok(DeviceSpec {
            accelerator: accelerator.ok_or_else(|| format!("no device given ({DEVICE_FORMS})"))?,
            indices,
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.accelerator == Accelerator::Cpu {
            return write!(f, "cpu");
        }
        let items: Vec<String> = self
            .indices
            .iter()
            .map(|i| format!("{}:{i}", self.accelerator.name()))
            .collect();
        write!(f, "{}", items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_errors() {
        let ok = |t: &str| DeviceSpec::parse(t).unwrap();
        assert_eq!(ok("cpu"), DeviceSpec::cpu());
        assert_eq!(ok("CUDA").indices, [0]);
        assert_eq!(ok("cuda:3").indices, [3]);
        assert_eq!(ok("cuda:0,cuda:1").indices, [0, 1]);
        assert_eq!(ok("cuda:2, 0").indices, [2, 0]);
        assert_eq!(ok("wgpu:1").accelerator, Accelerator::Wgpu);
        assert_eq!(ok("cuda:0,1").to_string(), "cuda:0,cuda:1");
        assert_eq!(ok("cpu").to_string(), "cpu");
        for (bad, needle) in [
            ("tpu", "unknown device"),
            ("", "empty device"),
            ("cuda:x", "must be a number"),
            ("cuda:0,wgpu:1", "mixes"),
            ("cuda:1,cuda:1", "twice"),
            ("cpu:1", "one cpu device"),
            ("cpu,cpu", "one cpu device"),
            ("0", "name the kind first"),
            ("cuda:-1", "must be a number"),
        ] {
            let e = DeviceSpec::parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }
}
