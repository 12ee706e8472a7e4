//! NVML telemetry: which GPUs exist, which one a job gets, and what the
//! job did to it (a ~10 Hz sampler thread per job).
//!
//! Invariant: no NVML (no library, no driver, `SLUICE_NVML=off`) is a
//! normal state — every function here answers "unavailable" or empty and
//! nothing fails because of it. The sampler loop makes only cheap calls
//! (utilisation, memory info, power, a GPM sample); per-process queries,
//! which cost milliseconds and take a driver lock, are never made.
//! Boundary: reads NVML; knows nothing of jobs, workers or the store.

use std::ffi::OsStr;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::gpm::GpmMetricId;
use serde::{Deserialize, Serialize};

/// Time between two samples of a running job's GPU (10 Hz).
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Most points a job's timeline keeps; longer jobs are downsampled.
pub const TIMELINE_POINTS_MAX: usize = 600;

/// Set to `off` to run as if NVML were absent.
pub const ENV_NVML: &str = "SLUICE_NVML";

/// Loads NVML from this library path instead of the system's
/// `libnvidia-ml.so.1`.
pub const ENV_NVML_LIB: &str = "SLUICE_NVML_LIB";

/// Why there is no NVML in this process (a normal state, not a failure).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NvmlUnavailable {
    /// Turned off by the environment.
    #[error("disabled by {ENV_NVML}=off")]
    Disabled,
    /// The library (named) could not be loaded or initialised.
    #[error("NVML ({lib}) could not be loaded: {reason}")]
    NotLoaded {
        /// The library path tried.
        lib: String,
        /// NVML's error.
        reason: String,
    },
}

/// Telemetry is unavailable, and why: what a step report's `gpu.reason`
/// says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("gpu telemetry unavailable: {0}")]
pub struct TelemetryUnavailable(pub NvmlUnavailable);

static NVML: OnceLock<Result<Nvml, NvmlUnavailable>> = OnceLock::new();

/// The process-wide NVML handle, initialised once, or why there is none.
pub fn nvml() -> Result<&'static Nvml, &'static NvmlUnavailable> {
    NVML.get_or_init(|| {
        if std::env::var(ENV_NVML).is_ok_and(|v| v == "off") {
            return Err(NvmlUnavailable::Disabled);
        }
        let lib = std::env::var_os(ENV_NVML_LIB);
        let mut builder = Nvml::builder();
        if let Some(path) = &lib {
            builder.lib_path(OsStr::new(path));
        }
        builder.init().map_err(|e| NvmlUnavailable::NotLoaded {
            lib: lib.as_ref().map_or_else(
                || "libnvidia-ml.so.1".to_string(),
                |p| p.to_string_lossy().into_owned(),
            ),
            reason: e.to_string(),
        })
    })
    .as_ref()
}

/// `Ok` when telemetry works here; otherwise the reason it is unavailable.
pub fn availability() -> Result<(), TelemetryUnavailable> {
    nvml()
        .map(|_| ())
        .map_err(|e| TelemetryUnavailable(e.clone()))
}

/// A GPU as NVML sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// NVML index (PCI bus order).
    pub index: u32,
    /// Product name.
    pub name: String,
    /// `GPU-…`.
    pub uuid: String,
    /// Framebuffer size.
    pub memory_total_bytes: u64,
    /// Framebuffer not in use.
    pub memory_free_bytes: u64,
}

impl DeviceInfo {
    /// One line for `devices()`: name, uuid, memory.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} MiB total, {} MiB free",
            self.name,
            self.uuid,
            self.memory_total_bytes >> 20,
            self.memory_free_bytes >> 20
        )
    }
}

/// The visible GPUs; empty without NVML. A device NVML cannot describe is
/// left out.
pub fn devices() -> Vec<DeviceInfo> {
    let Ok(nvml) = nvml() else {
        return Vec::new();
    };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|index| {
            let d = nvml.device_by_index(index).ok()?;
            let mem = d.memory_info().ok()?;
            Some(DeviceInfo {
                index,
                name: d.name().ok()?,
                uuid: d.uuid().ok()?,
                memory_total_bytes: mem.total,
                memory_free_bytes: mem.free,
            })
        })
        .collect()
}

/// Where a job asking for a GPU goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// This GPU has enough free memory (the one with the most, ties by index).
    Gpu(DeviceInfo),
    /// No GPU is visible; the reason says why.
    NoGpu(String),
    /// GPUs exist but none has enough free memory.
    NoneFits(Vec<DeviceInfo>),
}

/// Picks the GPU with the most free memory among those with at least
/// `min_free_memory_mib` free.
pub fn place(devices: &[DeviceInfo], min_free_memory_mib: u64) -> Placement {
    if devices.is_empty() {
        return Placement::NoGpu(match nvml() {
            Ok(_) => "NVML lists no GPU".to_string(),
            Err(e) => e.to_string(),
        });
    }
    let need = min_free_memory_mib.saturating_mul(1 << 20);
    devices
        .iter()
        .filter(|d| d.memory_free_bytes >= need)
        .min_by_key(|d| (std::cmp::Reverse(d.memory_free_bytes), d.index))
        .map_or_else(
            || Placement::NoneFits(devices.to_vec()),
            |d| Placement::Gpu(d.clone()),
        )
}

/// Peak dense BF16 tensor throughput by product name, for MFU. Unknown
/// products get `None` (no MFU is reported rather than a guessed one).
pub fn peak_flops(device_name: &str) -> Option<f64> {
    const PEAKS: &[(&str, f64)] = &[
        ("H200", 989e12),
        ("GH200", 989e12),
        ("H100 PCIe", 756e12),
        ("H100 NVL", 835e12),
        ("H100", 989e12),
        ("A100", 312e12),
        ("L40S", 362e12),
        ("L4", 121e12),
        ("A10G", 70e12),
        ("A10", 125e12),
        ("V100", 125e12),
        ("T4", 65e12),
    ];
    PEAKS
        .iter()
        .find(|(needle, _)| device_name.contains(needle))
        .map(|(_, flops)| *flops)
}

/// One point of a job's timeline (for dashboard charts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Since the job's `run` line, ms.
    pub t_ms: u64,
    /// GPU utilisation, percent.
    pub util: u32,
    /// Memory-controller utilisation, percent.
    pub mem_util: u32,
    /// Framebuffer in use, bytes.
    pub fb_used_bytes: u64,
}

/// What a job did to its GPU.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// The GPU.
    pub gpu_uuid: String,
    /// Samples taken.
    pub samples: u32,
    /// Mean GPU utilisation, percent.
    pub util_mean: f32,
    /// Peak GPU utilisation, percent.
    pub util_max: u32,
    /// Mean memory-controller utilisation, percent.
    pub mem_util_mean: f32,
    /// Peak framebuffer in use, bytes.
    pub fb_used_max_bytes: u64,
    /// Mean framebuffer in use, bytes.
    pub fb_used_mean_bytes: u64,
    /// Mean board power, watts.
    pub power_mean_w: Option<f32>,
    /// Peak board power, watts.
    pub power_max_w: Option<f32>,
    /// Energy over the job, millijoules (total-energy counter delta).
    pub energy_mj: Option<u64>,
    /// Mean SM activity (GPM, Hopper+), percent.
    pub sm_active_mean: Option<f32>,
    /// Mean SM occupancy (GPM, Hopper+), percent.
    pub sm_occupancy_mean: Option<f32>,
    /// Mean tensor-core activity (GPM, Hopper+), percent.
    pub tensor_active_mean: Option<f32>,
    /// Up to [`TIMELINE_POINTS_MAX`] points, evenly thinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
}

/// One reading of the sampler.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Since the job started, ms.
    pub t_ms: u64,
    /// GPU and memory utilisation, percent.
    pub util: Option<(u32, u32)>,
    /// Framebuffer in use, bytes.
    pub fb_used_bytes: Option<u64>,
    /// Board power, milliwatts.
    pub power_mw: Option<u32>,
    /// GPM SM activity, occupancy and tensor activity over the last interval.
    pub gpm: Option<[Option<f64>; 3]>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }

    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

/// Folds samples into a [`Usage`] with a bounded timeline: when the
/// timeline is full every other point is dropped and the stride doubles.
#[derive(Debug, Default)]
pub struct Accumulator {
    samples: u32,
    util: Mean,
    util_max: u32,
    mem_util: Mean,
    fb: Mean,
    fb_max: u64,
    power: Mean,
    power_max_mw: Option<u32>,
    sm_active: Mean,
    sm_occupancy: Mean,
    tensor: Mean,
    timeline: Vec<TimelinePoint>,
    stride: u64,
}

impl Accumulator {
    /// Adds one sample.
    pub fn push(&mut self, s: Sample) {
        let index = u64::from(self.samples);
        self.samples += 1;
        if let Some((u, m)) = s.util {
            self.util.add(f64::from(u));
            self.util_max = self.util_max.max(u);
            self.mem_util.add(f64::from(m));
        }
        if let Some(fb) = s.fb_used_bytes {
            self.fb.add(fb as f64);
            self.fb_max = self.fb_max.max(fb);
        }
        if let Some(p) = s.power_mw {
            self.power.add(f64::from(p));
            self.power_max_mw = Some(self.power_max_mw.unwrap_or(0).max(p));
        }
        if let Some([sm, occ, tensor]) = s.gpm {
            for (value, mean) in [
                (sm, &mut self.sm_active),
                (occ, &mut self.sm_occupancy),
                (tensor, &mut self.tensor),
            ] {
                if let Some(v) = value {
                    mean.add(v);
                }
            }
        }
        let stride = self.stride.max(1);
        if index % stride == 0 {
            let (util, mem_util) = s.util.unwrap_or((0, 0));
            self.timeline.push(TimelinePoint {
                t_ms: s.t_ms,
                util,
                mem_util,
                fb_used_bytes: s.fb_used_bytes.unwrap_or(0),
            });
            if self.timeline.len() >= TIMELINE_POINTS_MAX {
                let mut i = 0;
                self.timeline.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride = stride * 2;
            }
        }
    }

    /// The summary, with `energy_mj` measured outside the sample loop.
    pub fn finish(self, gpu_uuid: &str, energy_mj: Option<u64>) -> Usage {
        let f = |m: Mean| m.get().map(|v| v as f32);
        Usage {
            gpu_uuid: gpu_uuid.to_string(),
            samples: self.samples,
            util_mean: f(self.util).unwrap_or(0.0),
            util_max: self.util_max,
            mem_util_mean: f(self.mem_util).unwrap_or(0.0),
            fb_used_max_bytes: self.fb_max,
            fb_used_mean_bytes: self.fb.get().map_or(0, |v| v as u64),
            power_mean_w: self.power.get().map(|mw| (mw / 1000.0) as f32),
            power_max_w: self.power_max_mw.map(|mw| mw as f32 / 1000.0),
            energy_mj,
            sm_active_mean: f(self.sm_active),
            sm_occupancy_mean: f(self.sm_occupancy),
            tensor_active_mean: f(self.tensor),
            timeline: self.timeline,
        }
    }
}

/// Samples one GPU on its own thread until [`Sampler::finish`].
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Usage>,
}

impl Sampler {
    /// Starts sampling the GPU `uuid`; `None` without NVML or when the
    /// device cannot be opened (the job runs regardless).
    pub fn start(uuid: &str) -> Option<Sampler> {
        let nvml = nvml().ok()?;
        // Fail fast on a bad uuid, on this thread.
        nvml.device_by_uuid(uuid).ok()?;
        let (stop, stopped) = mpsc::channel::<()>();
        let uuid = uuid.to_string();
        let thread = std::thread::Builder::new()
            .name("sluice-gpu-sampler".into())
            .spawn(move || sample_loop(nvml, &uuid, &stopped))
            .ok()?;
        Some(Sampler { stop, thread })
    }

    /// Stops sampling and returns the summary.
    pub fn finish(self) -> Option<Usage> {
        drop(self.stop);
        self.thread.join().ok()
    }
}

fn sample_loop(nvml: &'static Nvml, uuid: &str, stopped: &mpsc::Receiver<()>) -> Usage {
    let mut acc = Accumulator::default();
    let Ok(device) = nvml.device_by_uuid(uuid) else {
        return acc.finish(uuid, None);
    };
    let energy_start = device.total_energy_consumption().ok();
    let gpm_ids = [
        GpmMetricId::SmUtil,
        GpmMetricId::SmOccupancy,
        GpmMetricId::AnyTensorUtil,
    ];
    let mut gpm_prev = if device.gpm_support().unwrap_or(false) {
        device.gpm_sample().ok()
    } else {
        None
    };
    let started = Instant::now();
    loop {
        let gpm = gpm_prev.as_ref().and_then(|prev| {
            let next = device.gpm_sample().ok()?;
            let values = nvml_wrapper::gpm::gpm_metrics_get(nvml, prev, &next, &gpm_ids).ok();
            let values = values.map(|v| {
                let mut out = [None; 3];
                for (slot, r) in out.iter_mut().zip(v) {
                    *slot = r.ok().map(|m| m.value);
                }
                out
            });
            Some((next, values))
        });
        let gpm = match gpm {
            Some((next, values)) => {
                gpm_prev = Some(next);
                values
            }
            None => None,
        };
        acc.push(Sample {
            t_ms: started.elapsed().as_millis() as u64,
            util: device.utilization_rates().ok().map(|u| (u.gpu, u.memory)),
            fb_used_bytes: device.memory_info().ok().map(|m| m.used),
            power_mw: device.power_usage().ok(),
            gpm,
        });
        match stopped.recv_timeout(SAMPLE_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    let energy_end = device.total_energy_consumption().ok();
    let energy = energy_start
        .zip(energy_end)
        .map(|(a, b)| b.saturating_sub(a));
    acc.finish(uuid, energy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(index: u32, free_mib: u64) -> DeviceInfo {
        DeviceInfo {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-{index}"),
            memory_total_bytes: 80 << 30,
            memory_free_bytes: free_mib << 20,
        }
    }

    #[test]
    fn placement_takes_the_gpu_with_most_free_memory_that_fits() {
        let devices = [dev(0, 1000), dev(1, 5000), dev(2, 5000), dev(3, 200)];
        assert_eq!(place(&devices, 1024), Placement::Gpu(dev(1, 5000)));
        assert_eq!(place(&devices, 6000), Placement::NoneFits(devices.to_vec()));
        assert!(matches!(place(&[], 0), Placement::NoGpu(_)));
    }

    #[test]
    fn accumulator_means_maxima_and_a_bounded_timeline() {
        let mut acc = Accumulator::default();
        for i in 0..5000u64 {
            acc.push(Sample {
                t_ms: i * 100,
                util: Some(((i % 2) as u32 * 100, 50)),
                fb_used_bytes: Some(i),
                power_mw: Some(200_000),
                gpm: Some([Some(40.0), None, Some(10.0)]),
            });
        }
        let u = acc.finish("GPU-x", Some(7));
        assert_eq!(u.samples, 5000);
        assert_eq!(u.util_mean, 50.0);
        assert_eq!(u.util_max, 100);
        assert_eq!(u.mem_util_mean, 50.0);
        assert_eq!(u.fb_used_max_bytes, 4999);
        assert_eq!(u.power_max_w, Some(200.0));
        assert_eq!(u.energy_mj, Some(7));
        assert_eq!(u.sm_active_mean, Some(40.0));
        assert_eq!(u.sm_occupancy_mean, None);
        assert_eq!(u.tensor_active_mean, Some(10.0));
        assert!(
            u.timeline.len() <= TIMELINE_POINTS_MAX,
            "{}",
            u.timeline.len()
        );
        assert!(
            u.timeline.len() >= TIMELINE_POINTS_MAX / 4,
            "{}",
            u.timeline.len()
        );
        assert_eq!(u.timeline[0].t_ms, 0);
        assert!(u.timeline.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
    }

    #[test]
    fn a_job_without_samples_summarises_to_zeros_and_nones() {
        let u = Accumulator::default().finish("GPU-x", None);
        assert_eq!((u.samples, u.util_mean, u.fb_used_max_bytes), (0, 0.0, 0));
        assert_eq!((u.power_mean_w, u.sm_active_mean), (None, None));
    }

    #[test]
    fn peak_flops_knows_hopper_and_not_cpus() {
        assert_eq!(peak_flops("NVIDIA H100 80GB HBM3"), Some(989e12));
        assert_eq!(peak_flops("NVIDIA H100 PCIe"), Some(756e12));
        assert_eq!(peak_flops("NVIDIA H200"), Some(989e12));
        assert_eq!(peak_flops("x86_64 (2 threads)"), None);
    }
}
