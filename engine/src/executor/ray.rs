//! The `ray` executor: each attempt is a Ray job, submitted through the
//! Jobs REST API of a Ray cluster's dashboard (`POST /api/jobs/`), whose
//! entrypoint is `sluice exec-step <submission>`.
//!
//! Invariant: the job's submission id is derived from the submission's
//! digest (run id + attempt description + attempt number), so a restarted
//! coordinator that submits the same attempt again is refused by Ray and
//! re-attaches to the job it already started: a step never runs twice for
//! one attempt. CPUs, memory and gpus of the job come from the step's
//! limits and grant; cancelling the run stops the job.
//! Boundary: HTTP to the Ray dashboard only; results come back through the
//! store like every executor's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Ended, ExecStepCommand, Executor, submit};
use crate::attempt::{Outcome, Request};
use crate::digest::Digest;
use crate::store::Store;

/// How long one request to the dashboard may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest wait between two looks at a job's status.
const POLL_MIN: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(250);
/// Memory a job reserves beyond the step's own limit (the process, the
/// compiled component, the store's buffers).
const JOB_OVERHEAD_MIB: u64 = 512;
/// Environment variables handed to the job when set here: where the
/// shared store is and how to reach it (never secrets: a node's
/// credentials come from the node), and the tests' fault switch.
const FORWARDED_ENV: &[&str] = &[
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "SLUICE_COMPILE_CACHE",
    crate::fault::FAULTS_ENV,
];

/// Runs attempts as Ray jobs.
#[derive(Clone, Debug)]
pub struct RayExecutor {
    /// The dashboard's base URL (`http://127.0.0.1:8265`).
    pub address: String,
    /// What each job runs.
    pub command: ExecStepCommand,
}

impl Executor for RayExecutor {
    /// Runs `request` (of run `run`) as a Ray job; see [`submit`].
    fn execute(
        &self,
        run: &str,
        request: &Request,
        store: &Store,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Outcome {
        submit(run, request, store, |digest, limit| {
            self.run_job(digest, request, limit, cancel)
        })
    }
}

impl RayExecutor {
    /// The job's submission id: the same for the same submission, always.
    pub fn submission_id(digest: &Digest) -> String {
        format!("sluice-{}", &digest.hex()[..40])
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into()
    }

    /// One request to the dashboard: status and parsed JSON body.
    fn call(
        &self,
        agent: &ureq::Agent,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value, String), String> {
        let url = format!("{}{path}", self.address.trim_end_matches('/'));
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json");
        let sent = match body {
            Some(b) => agent.run(
                request
                    .body(serde_json::to_vec(b).expect("json serializes"))
                    .map_err(|e| format!("Ray {method} {url}: {e}"))?,
            ),
            None => agent.run(
                request
                    .body(())
                    .map_err(|e| format!("Ray {method} {url}: {e}"))?,
            ),
        };
        let mut response = sent.map_err(|e| format!("Ray {method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| format!("Ray {method} {url}: {e}"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, json, text))
    }

    /// Submits the job (or finds it submitted) and follows it to its end.
    fn run_job(
        &self,
        digest: &Digest,
        request: &Request,
        limit: Duration,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<Ended, String> {
        let agent = Self::agent();
        let id = Self::submission_id(digest);
        let what = format!("Ray job {id}");
        let env: Vec<(String, String)> = FORWARDED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        let body = self.job(digest, request, &env);
        let (status, _, text) = self.call(&agent, "POST", "/api/jobs/", Some(&body))?;
        if !(200..300).contains(&status) {
            // Ray refuses a submission id it has seen (HTTP 500 with a
            // ValueError): the job is ours from an earlier submission —
            // follow it instead of running the attempt again.
            let known = self.call(&agent, "GET", &format!("/api/jobs/{id}"), None)?;
            if known.0 != 200 {
                return Err(format!(
                    "Ray at {} refused {what} (HTTP {status}): {}",
                    self.address,
                    crate::quoting::escape_controls(&text, 512)
                ));
            }
        }
        let deadline = Instant::now() + limit;
        let mut wait = POLL_MIN;
        loop {
            let (code, job, text) = self.call(&agent, "GET", &format!("/api/jobs/{id}"), None)?;
            if code != 200 {
                return Err(format!(
                    "Ray at {}: {what}: HTTP {code}: {}",
                    self.address,
                    crate::quoting::escape_controls(&text, 512)
                ));
            }
            let state = job["status"].as_str().unwrap_or("UNKNOWN").to_string();
            if matches!(state.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED") {
                let message = job["message"].as_str().unwrap_or("");
                let log = self.logs(&agent, &id);
                return Ok(Ended::Exited {
                    what: format!(
                        "{what} ended {state} ({})",
                        crate::quoting::escape_controls(message, 256)
                    ),
                    log,
                });
            }
            if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                self.stop(&agent, &id);
                return Ok(Ended::Cancelled);
            }
            if Instant::now() >= deadline {
                self.stop(&agent, &id);
                return Ok(Ended::TimedOut { what });
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(POLL_MAX);
        }
    }

    /// The job submission for `digest`: entrypoint, resources from the
    /// step's limits and grant, the forwarded environment, and metadata
    /// naming the step, the attempt and the submission.
    fn job(&self, digest: &Digest, request: &Request, env: &[(String, String)]) -> Value {
        let d = &request.description;
        let entrypoint = std::iter::once(self.command.exe.display().to_string())
            .chain(self.command.args(digest))
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        // The built-in `cpu` worker kind needs no device: asking Ray for a
        // gpu would leave the job pending forever on a cluster without one.
        let gpus = match &d.gpu {
            Some(grant) if grant.worker != "cpu" => 1,
            _ => 0,
        };
        let env: serde_json::Map<String, Value> = env
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        json!({
            "entrypoint": entrypoint,
            "submission_id": Self::submission_id(digest),
            "entrypoint_num_cpus": 1,
            "entrypoint_num_gpus": gpus,
            "entrypoint_memory": (d.limits.memory_mib + JOB_OVERHEAD_MIB) << 20,
            "runtime_env": { "env_vars": env },
            "metadata": {
                "sluice_step": d.step,
                "sluice_attempt": request.attempt.to_string(),
                "sluice_submission": digest.to_string(),
            },
        })
    }

    fn logs(&self, agent: &ureq::Agent, id: &str) -> Vec<u8> {
        match self.call(agent, "GET", &format!("/api/jobs/{id}/logs"), None) {
            Ok((200, v, _)) => v["logs"].as_str().unwrap_or("").as_bytes().to_vec(),
            _ => Vec::new(),
        }
    }

    fn stop(&self, agent: &ureq::Agent, id: &str) {
        if let Err(e) = self.call(agent, "POST", &format!("/api/jobs/{id}/stop"), None) {
            tracing::warn!(job = id, error = %e, "cannot stop the Ray job");
        }
    }
}

/// `arg` as one word for a POSIX shell (Ray runs entrypoints with one).
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b))
    {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_every_argument_one_word() {
        assert_eq!(shell_quote("sha256:ab12"), "sha256:ab12");
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf ~)"), "'$(rm -rf ~)'");
    }

    fn request(gpu: Option<&str>) -> Request {
        crate::executor::test_request(gpu, 2)
    }

    #[test]
    fn a_job_asks_for_what_the_step_may_use_and_names_its_submission() {
        let ray = RayExecutor {
            address: "http://127.0.0.1:8265".into(),
            command: ExecStepCommand {
                exe: "/opt/sluice dir/sluice".into(),
                home: "/var/sluice".into(),
                compile_cache: None,
                config: None,
                store: Some("s3://b/p".into()),
            },
        };
        let digest = Digest::of(b"submission");
        let env = vec![("AWS_REGION".to_string(), "eu-west-1".to_string())];
        let plain = ray.job(&digest, &request(None), &env);
        assert_eq!(
            plain["entrypoint"],
            format!(
                "'/opt/sluice dir/sluice' exec-step --home /var/sluice --store s3://b/p {digest}"
            )
        );
        assert_eq!(plain["submission_id"], RayExecutor::submission_id(&digest));
        assert_eq!(plain["entrypoint_num_cpus"], 1);
        assert_eq!(plain["entrypoint_num_gpus"], 0);
        assert_eq!(plain["entrypoint_memory"], (300u64 + 512) << 20);
        assert_eq!(plain["runtime_env"]["env_vars"]["AWS_REGION"], "eu-west-1");
        assert_eq!(plain["metadata"]["sluice_step"], "train");
        assert_eq!(plain["metadata"]["sluice_attempt"], "2");
        assert_eq!(plain["metadata"]["sluice_submission"], digest.to_string());
        // A device only for a worker kind that needs one.
        assert_eq!(
            ray.job(&digest, &request(Some("torch")), &[])["entrypoint_num_gpus"],
            1
        );
        assert_eq!(
            ray.job(&digest, &request(Some("cpu")), &[])["entrypoint_num_gpus"],
            0
        );
    }

    #[test]
    fn the_submission_id_is_a_function_of_the_submission() {
        let d = Digest::of(b"submission");
        assert_eq!(
            RayExecutor::submission_id(&d),
            RayExecutor::submission_id(&d)
        );
        assert_ne!(
            RayExecutor::submission_id(&d),
            RayExecutor::submission_id(&Digest::of(b"other"))
        );
        assert!(RayExecutor::submission_id(&d).starts_with("sluice-"));
    }
}
