//! Picking the compute device from `--device`.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Backend;

/// Where the model runs: `cpu`, or `cuda` / `cuda:N` when built with the
/// `cuda` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(index)) => Ok(Self::Cuda(index)),
                _ => Err(format!("device {other:?} is not one of cpu, cuda, cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Work that runs on whichever burn backend `--device` picks (a trait, since
/// closures cannot be generic over the backend).
pub trait OnDevice {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

impl DeviceChoice {
    /// Runs `work` on this device, or says why it cannot run here (a build
    /// without CUDA, or no NVIDIA driver).
    pub fn run<T: OnDevice>(self, work: T) -> Result<T::Output, String> {
        match self {
            Self::Cpu => Ok(work.run::<byteedit_models::CpuBackend>(Default::default())),
            #[cfg(feature = "cuda")]
            Self::Cuda(index) => {
                check_cuda_driver()?;
                let device = burn::backend::cuda::CudaDevice::new(index);
                Ok(work.run::<burn::backend::Cuda>(device))
            }
            #[cfg(not(feature = "cuda"))]
            Self::Cuda(_) => {
                Err("this build has no CUDA support: rebuild with `--features cuda`".into())
            }
        }
    }
}

/// burn's CUDA runtime loads the driver lazily and panics on a device thread
/// when it is missing, so look for it first and fail with a sentence instead.
#[cfg(feature = "cuda")]
fn check_cuda_driver() -> Result<(), String> {
    // SAFETY: loading the CUDA driver library runs its initialisers only;
    // we drop it straight away.
    match unsafe { libloading::Library::new("libcuda.so.1") } {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "--device cuda needs the NVIDIA driver (libcuda.so.1), which could not be loaded: {e}"
        )),
    }
}
