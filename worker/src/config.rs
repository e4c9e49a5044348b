//! Worker settings (flags and environment).

use std::path::PathBuf;
use std::str::FromStr;

use byteedit_models::ServingDefaults;
use clap::Args;

/// `NAME=DIR`: serve the diffusers folder DIR under the name NAME; or
/// `NAME=registry:LINE[:VERSION]`: serve a registered model version (the
/// latest of LINE without a version), downloaded once into `--model-cache`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    /// The folder loaded; for a registry spec, filled in once downloaded.
    pub dir: PathBuf,
    pub registry: Option<RegistryRef>,
    /// The version's serving default, over the worker's `--default-steps`.
    pub default_steps: Option<u32>,
}

/// A registered model version by line and number (`None`: the latest).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryRef {
    pub line: String,
    pub version: Option<i32>,
}

impl FromStr for ModelSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, dir) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not NAME=DIR (e.g. sd15=./models/sd15-inpaint)"))?;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(format!(
                "model name `{name}` must be 1-64 letters, digits, `-`, `_` or `.`"
            ));
        }
        let registry = match dir.strip_prefix("registry:") {
            None => None,
            Some(reference) => {
                let (line, version) = match reference.rsplit_once(':') {
                    Some((line, v)) => (
                        line,
                        Some(v.parse::<i32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                            format!("`{s}`: the version after `{line}:` must be a number from 1, not `{v}`")
                        })?),
                    ),
                    None => (reference, None),
                };
                if line.is_empty() {
                    return Err(format!(
                        "`{s}` names no model line: write NAME=registry:LINE[:VERSION]"
                    ));
                }
                Some(RegistryRef {
                    line: line.to_owned(),
                    version,
                })
            }
        };
        Ok(Self {
            name: name.to_owned(),
            dir: PathBuf::from(dir),
            registry,
            default_steps: None,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// A model to serve, as NAME=DIR (repeatable; env: comma-separated).
    #[arg(
        long = "model",
        env = "BYTEEDIT_MODELS",
        value_delimiter = ',',
        required = true
    )]
    pub models: Vec<ModelSpec>,
    /// Where registered model versions (`NAME=registry:LINE[:VERSION]`) are
    /// downloaded to, one folder per digest, reused across restarts.
    #[arg(
        long,
        env = "BYTEEDIT_MODEL_CACHE",
        default_value = "./data/model-cache"
    )]
    pub model_cache: PathBuf,
    /// Name shown in logs and the workers table (default: host-pid).
    #[arg(long, env = "BYTEEDIT_WORKER_NAME")]
    pub worker_name: Option<String>,
    /// Denoising steps when a request gives none.
    #[arg(long, env = "BYTEEDIT_DEFAULT_STEPS", default_value_t = 20)]
    pub default_steps: u32,
    /// Most steps a request may ask for (also capped by the model's schedule).
    #[arg(long, env = "BYTEEDIT_MAX_STEPS", default_value_t = 100)]
    pub max_steps: u32,
    /// Guidance scale when a request gives none.
    #[arg(long, env = "BYTEEDIT_DEFAULT_GUIDANCE", default_value_t = 7.5)]
    pub default_guidance_scale: f64,
    /// Scheduler when a request gives none: ddim, euler or dpmpp-2m.
    #[arg(long, env = "BYTEEDIT_DEFAULT_SCHEDULER", default_value = "dpmpp-2m")]
    pub default_scheduler: byteedit_models::SchedulerKind,
    /// Seconds between heartbeats (worker liveness, job lease, cancel check).
    #[arg(long, env = "BYTEEDIT_HEARTBEAT_SECS", default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which a running job's worker is
    /// presumed dead and another worker takes the job over.
    #[arg(long, env = "BYTEEDIT_LEASE_SECS", default_value_t = 60)]
    pub lease_secs: u64,
    /// Times a job may be started (a worker lost mid-job counts) before it fails.
    #[arg(long, env = "BYTEEDIT_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Delay before the first retry of a job whose attempt failed for a
    /// transient reason (storage, queue or database trouble), in seconds;
    /// doubled for each further attempt.
    #[arg(long, env = "BYTEEDIT_RETRY_BACKOFF_SECS", default_value_t = 2.0, value_parser = byteedit_jobs::config::parse_seconds)]
    pub retry_backoff_secs: f64,
    /// Longest delay between two attempts of a job, in seconds.
    #[arg(long, env = "BYTEEDIT_RETRY_BACKOFF_MAX_SECS", default_value_t = 60.0, value_parser = byteedit_jobs::config::parse_seconds)]
    pub retry_backoff_max_secs: f64,
    /// Negative prompt for `erase` jobs that give none (steers the fill away
    /// from new objects).
    #[arg(long, env = "BYTEEDIT_ERASE_NEGATIVE_PROMPT", default_value = byteedit_jobs::job::defaults::ERASE_NEGATIVE_PROMPT)]
    pub erase_negative_prompt: String,
    /// Most outputs denoised together in one batch, over all the jobs in it:
    /// queued jobs of one model with the same size, steps, solver and
    /// guidance on/off share each UNet call. Raises images per second where
    /// the device has room (a GPU), at the cost of each job's latency.
    /// Default: 1 on the CPU (all cores already serve one job), 8 on CUDA.
    #[arg(long, env = "BYTEEDIT_MAX_BATCH", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_batch: Option<u32>,
}

impl WorkerArgs {
    /// Defaults for one model folder (used by tests and `serve`).
    pub fn for_models(models: Vec<ModelSpec>) -> Self {
        let serving = ServingDefaults::default();
        Self {
            models,
            model_cache: PathBuf::from("./data/model-cache"),
            worker_name: None,
            default_steps: serving.default_steps,
            max_steps: serving.max_steps,
            default_guidance_scale: serving.default_guidance_scale,
            default_scheduler: serving.default_scheduler,
            heartbeat_secs: 5,
            lease_secs: 60,
            max_attempts: 3,
            retry_backoff_secs: 2.0,
            retry_backoff_max_secs: 60.0,
            erase_negative_prompt: serving.erase_negative_prompt,
            max_batch: None,
        }
    }

    /// The defaults every model of this worker is served with.
    pub fn serving_defaults(&self) -> ServingDefaults {
        ServingDefaults {
            default_steps: self.default_steps,
            max_steps: self.max_steps,
            default_guidance_scale: self.default_guidance_scale,
            default_scheduler: self.default_scheduler,
            erase_negative_prompt: self.erase_negative_prompt.clone(),
        }
    }

    pub fn name(&self) -> String {
        self.worker_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_specs_parse() {
        let spec: ModelSpec = "ft=registry:byteedit-inpaint:3".parse().unwrap();
        assert_eq!(
            spec.registry,
            Some(RegistryRef {
                line: "byteedit-inpaint".into(),
                version: Some(3)
            })
        );
        let spec: ModelSpec = "ft=registry:byteedit-inpaint".parse().unwrap();
        assert_eq!(spec.registry.unwrap().version, None);
        let err = "ft=registry:line:x".parse::<ModelSpec>().unwrap_err();
        assert!(err.contains("must be a number from 1, not `x`"), "{err}");
        assert!(
            "ft=registry:"
                .parse::<ModelSpec>()
                .unwrap_err()
                .contains("names no model line")
        );
    }

    #[test]
    fn model_specs_parse_and_bad_ones_say_why() {
        let spec: ModelSpec = "sd15=./m/sd15".parse().unwrap();
        assert_eq!(spec.name, "sd15");
        assert_eq!(spec.dir, PathBuf::from("./m/sd15"));
        assert!(
            "nodir"
                .parse::<ModelSpec>()
                .unwrap_err()
                .contains("NAME=DIR")
        );
        assert!(
            "a b=x"
                .parse::<ModelSpec>()
                .unwrap_err()
                .contains("letters")
        );
    }
}
