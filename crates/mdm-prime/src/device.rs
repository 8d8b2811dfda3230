//! Opening the devices a [`DeviceSpec`] names: the one place that knows which backends this
//! binary was built with (cargo features `cuda`, `wgpu`). Model, objective, sampler and trainer
//! code take a `burn::tensor::Device` and never ask what it is; the fused CPU kernels in
//! [`crate::ops`] check the tensors they get and fall back to the composed ops off the CPU.
//!
//! Never `Device::default()`: with the `cuda` feature on, burn's default device is the GPU,
//! so the CPU would stop being the default the moment a binary can use a GPU.

use burn::tensor::Device;
use mdm_prime_core::device::{Accelerator, DeviceSpec};

use crate::Error;

/// The CPU device (burn's flex backend), always available.
pub fn cpu() -> Device {
    Device::flex()
}

/// The devices of `spec`, in order. A backend this binary was built without, or a device index
/// the machine does not have, is an error saying what to do.
pub fn open(spec: &DeviceSpec) -> Result<Vec<Device>, Error> {
    match spec.accelerator {
        Accelerator::Cpu => Ok(vec![cpu()]),
        Accelerator::Cuda => open_cuda(spec),
        Accelerator::Wgpu => open_wgpu(spec),
    }
}

/// The one device of `spec`; several are an error naming `what` (a command that cannot use
/// more than one).
pub fn open_one(spec: &DeviceSpec, what: &str) -> Result<Device, Error> {
    match spec.indices.len() {
        1 => Ok(open(spec)?.remove(0)),
        n => Err(Error::Device(format!(
            "{what} runs on one device, but --device names {n} ({spec}); pick one, e.g. {}:{}",
            spec.accelerator.name(),
            spec.indices[0]
        ))),
    }
}

/// Parses `text` (`--device`) and opens its one device.
pub fn parse_one(text: &str, what: &str) -> Result<Device, Error> {
    open_one(&parse(text)?, what)
}

/// Parses `text` (`--device`).
pub fn parse(text: &str) -> Result<DeviceSpec, Error> {
    DeviceSpec::parse(text).map_err(Error::Device)
}

#[cfg(not(all(feature = "cuda", feature = "wgpu")))]
fn missing_feature(spec: &DeviceSpec, feature: &str) -> Error {
    Error::Device(format!(
        "--device {spec}: this binary was built without the `{feature}` feature; rebuild with \
         `cargo build --release --features {feature}` (README, \"GPUs\"), or use --device cpu"
    ))
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: &DeviceSpec) -> Result<Vec<Device>, Error> {
    open_gpus(
        spec,
        burn::tensor::DeviceType::Cuda,
        "no CUDA driver could be loaded (libcuda.so); install the NVIDIA driver, or use --device cpu",
        |i| Device::cuda(i),
    )
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: &DeviceSpec) -> Result<Vec<Device>, Error> {
    Err(missing_feature(spec, "cuda"))
}

#[cfg(feature = "wgpu")]
fn open_wgpu(spec: &DeviceSpec) -> Result<Vec<Device>, Error> {
    open_gpus(
        spec,
        burn::tensor::DeviceType::Wgpu,
        "no wgpu adapter could be opened (Vulkan, Metal or DX12); check the GPU driver, or use \
         --device cpu",
        |i| Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)),
    )
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu(spec: &DeviceSpec) -> Result<Vec<Device>, Error> {
    Err(missing_feature(spec, "wgpu"))
}

/// Counts the devices of `kind`, checks `spec`'s indices against the count, and opens them.
/// Listing loads the driver; where it is missing that can panic inside the bindings:
/// `no_driver` is reported instead.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn open_gpus(
    spec: &DeviceSpec,
    kind: burn::tensor::DeviceType,
    no_driver: &str,
    device: impl Fn(usize) -> Device,
) -> Result<Vec<Device>, Error> {
    let found = std::panic::catch_unwind(|| Device::enumerate(kind).into_vec().len())
        .map_err(|_| Error::Device(no_driver.into()))?;
    check_indices(spec, found)?;
    Ok(spec.indices.iter().map(|&i| device(i)).collect())
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn check_indices(spec: &DeviceSpec, found: usize) -> Result<(), Error> {
    match spec.indices.iter().find(|&&i| i >= found) {
        None => Ok(()),
        Some(i) => Err(Error::Device(format!(
            "--device {spec}: there is no {} device {i} on this machine ({found} found{})",
            spec.accelerator.name(),
            match found {
                0 => String::new(),
                n => format!(
                    ": {}:0 … {}:{}",
                    spec.accelerator.name(),
                    spec.accelerator.name(),
                    n - 1
                ),
            }
        ))),
    }
}
