//! The `kubernetes` executor: each attempt is a `batch/v1` Job whose one
//! container runs `sluice exec-step <submission>` from one generic image,
//! created and followed through the API server with the `kube` client.
//!
//! Invariant: the Job's name is derived from the submission's digest (run
//! id + attempt description, whose cache key it covers, + attempt number),
//! so a restarted coordinator that creates the same attempt again gets
//! `409 AlreadyExists` and re-attaches to the Job it already started
//! (after checking the Job's submission annotation is its own): a step
//! never runs twice for one attempt. A Job only ever answers through the
//! shared store (`exec-step` files the result there), never through its
//! status: the status says when to look, the result says what happened.
//! Retries split as the exit codes say: a pod that filed a result (exit
//! 10 step, 11 limit, 12 engine) fails the Job at once (`FailJob`: the
//! run's own `retries` decide, with a new submission); a pod evicted or
//! preempted is not counted (`Ignore` on `DisruptionTarget`); anything
//! else — a pod that died without a result (exit 13, OOM-killed, node
//! lost) — is retried by the Job up to `backoff_limit`, which is safe
//! because no result was filed.
//! Boundary: the Kubernetes API only (Jobs: create, get, watch, delete;
//! pods: list, logs); results come back through the store like every
//! executor's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use serde::Deserialize;
use serde_json::json;

use super::{Ended, ExecStepCommand, Executor, submit};
use crate::attempt::{Outcome, Request};
use crate::digest::Digest;
use crate::store::Store;

/// Where the pod's engine home lives (an `emptyDir`: a node-local cache in
/// front of the shared store).
pub const POD_HOME: &str = "/var/lib/sluice";
/// The container's name (the pod failure policy names it).
pub const CONTAINER: &str = "step";
/// The annotation naming the submission a Job runs.
pub const SUBMISSION_ANNOTATION: &str = "sluice.dev/submission";
/// Memory a pod reserves beyond the step's own limit (the process, the
/// compiled component, the store's buffers).
const POD_OVERHEAD_MIB: u64 = 512;
/// How long one watch request lasts before it is renewed.
const WATCH_TIMEOUT_S: u32 = 290;
/// How often a follower looks at the cancel flag and the deadline.
const CHECK: Duration = Duration::from_millis(50);
/// API errors in a row (connection lost, watch refused) before giving up
/// on following a Job.
const API_ERRORS_MAX: u32 = 8;
/// Lines of the last pod's log kept for a message.
const LOG_LINES: i64 = 20;
/// Environment variables handed to the pod when set here: where the
/// shared store is (credentials and `SLUICE_STORE_KEY` come from the
/// configured secret, never from this process).
const FORWARDED_ENV: &[&str] = &["AWS_ENDPOINT", "AWS_REGION", "AWS_ALLOW_HTTP"];

/// `[kubernetes]` in the engine config.
///
/// ```toml
/// [kubernetes]
/// image = "registry.example/sluice:0.1.0"  # has `sluice` on its PATH
/// namespace = "sluice"                     # default: the kubeconfig's
/// service_account = "sluice-step"          # default: the namespace's default
/// secret = "sluice-store"                  # env for the pod: store credentials, SLUICE_STORE_KEY
/// config = "/etc/sluice/config.toml"       # an engine config inside the image (gpu workers)
/// ttl_seconds_after_finished = 3600
/// backoff_limit = 2                        # pod retries for deaths without a result
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// The image every step's pod runs.
    pub image: String,
    /// Where Jobs are created.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The pods' service account.
    #[serde(default)]
    pub service_account: Option<String>,
    /// A secret whose keys become the pod's environment.
    #[serde(default)]
    pub secret: Option<String>,
    /// An engine config file inside the image.
    #[serde(default)]
    pub config: Option<String>,
    /// How long a finished Job is kept.
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: i32,
    /// Pod retries for pods that die without a result.
    #[serde(default = "default_backoff")]
    pub backoff_limit: i32,
}

fn default_ttl() -> i32 {
    3600
}

fn default_backoff() -> i32 {
    2
}

/// The keys of `[kubernetes]`.
pub const SETTINGS_KEYS: &[&str] = &[
    "image",
    "namespace",
    "service_account",
    "secret",
    "config",
    "ttl_seconds_after_finished",
    "backoff_limit",
];

/// Makes the API client, inside the executor's runtime (so tests hand in
/// a scripted API server).
pub type Connect = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<kube::Client, String>> + Send>> + Send + Sync,
>;

/// Runs attempts as Kubernetes Jobs.
#[derive(Clone)]
pub struct KubernetesExecutor {
    /// `[kubernetes]`.
    pub settings: KubernetesSettings,
    /// The shared store's URL every pod opens.
    pub store_url: String,
    /// The API client.
    pub connect: Connect,
}

impl std::fmt::Debug for KubernetesExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesExecutor")
            .field("settings", &self.settings)
            .field("store_url", &self.store_url)
            .finish_non_exhaustive()
    }
}

impl Executor for KubernetesExecutor {
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

/// How following a Job ended.
enum Followed {
    /// The Job has a terminal condition: `state` says which and why.
    Finished {
        state: String,
        failed: bool,
    },
    /// The Job is gone (deleted by someone, or collected).
    Gone,
    Cancelled,
    TimedOut,
}

impl KubernetesExecutor {
    /// The executor for a run: `[kubernetes]` must be configured and the
    /// run must have a shared store (a pod cannot read this machine's
    /// home). The client is the kubeconfig's (or the in-cluster one).
    pub fn new(
        settings: Option<&KubernetesSettings>,
        store_url: Option<&str>,
    ) -> Result<KubernetesExecutor, String> {
        let settings = settings.ok_or(
            "the kubernetes executor needs `[kubernetes] image = \"...\"` in the engine config (--config)",
        )?;
        let store_url = match store_url {
            Some(url) if !url.starts_with("memory:") => url.to_string(),
            _ => {
                return Err(
                    "the kubernetes executor needs a shared store (--store s3://bucket/prefix or `[store] url`): a pod cannot read this machine's home"
                        .into(),
                );
            }
        };
        Ok(KubernetesExecutor {
            settings: settings.clone(),
            store_url,
            connect: Arc::new(|| {
                Box::pin(async {
                    kube::Client::try_default().await.map_err(|e| {
                        format!(
                            "cannot reach the Kubernetes API (kubeconfig or in-cluster config): {e}"
                        )
                    })
                })
            }),
        })
    }

    /// The Job's name: the same for the same submission, always (a DNS
    /// label: 47 characters).
    pub fn job_name(digest: &Digest) -> String {
        format!("sluice-{}", &digest.hex()[..40])
    }

    /// What the pod runs.
    fn command(&self) -> ExecStepCommand {
        ExecStepCommand {
            exe: "sluice".into(),
            home: POD_HOME.into(),
            compile_cache: None,
            config: self.settings.config.as_ref().map(Into::into),
            store: Some(self.store_url.clone()),
        }
    }

    /// The Job for submission `digest`: resources from the step's limits
    /// and grant, the failure policy above, a deadline of the attempt's
    /// time limit plus `grace`, a locked-down pod that cannot reach the
    /// API server.
    pub fn manifest(
        &self,
        namespace: &str,
        digest: &Digest,
        request: &Request,
        grace: Duration,
        env: &[(String, String)],
    ) -> Job {
        let d = &request.description;
        let s = &self.settings;
        let memory = format!("{}Mi", d.limits.memory_mib + POD_OVERHEAD_MIB);
        let mut limits = json!({ "cpu": "1", "memory": memory });
        // The built-in `cpu` worker kind needs no device: asking for one
        // would leave the pod pending forever on a cluster without gpus.
        if matches!(&d.gpu, Some(grant) if grant.worker != "cpu") {
            limits["nvidia.com/gpu"] = json!("1");
        }
        let command = self.command();
        let mut pod = json!({
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": CONTAINER,
                "image": s.image,
                "command": [command.exe.display().to_string()],
                "args": command.args(digest),
                "env": env.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect::<Vec<_>>(),
                "resources": { "requests": { "cpu": "1", "memory": memory }, "limits": limits },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
                "volumeMounts": [
                    { "name": "home", "mountPath": POD_HOME },
                    { "name": "tmp", "mountPath": "/tmp" },
                ],
            }],
            "volumes": [
                { "name": "home", "emptyDir": {} },
                { "name": "tmp", "emptyDir": {} },
            ],
        });
        if let Some(secret) = &s.secret {
            pod["containers"][0]["envFrom"] = json!([{ "secretRef": { "name": secret } }]);
        }
        if let Some(account) = &s.service_account {
            pod["serviceAccountName"] = json!(account);
        }
        let labels = json!({
            "app.kubernetes.io/name": "sluice-step",
            "app.kubernetes.io/managed-by": "sluice",
        });
        let job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": Self::job_name(digest),
                "namespace": namespace,
                "labels": labels,
                "annotations": {
                    SUBMISSION_ANNOTATION: digest.to_string(),
                    "sluice.dev/step": d.step,
                    "sluice.dev/attempt": request.attempt.to_string(),
                    "sluice.dev/cache-key": d.key().to_string(),
                },
            },
            "spec": {
                "backoffLimit": s.backoff_limit,
                "activeDeadlineSeconds": request.timeout_s + grace.as_secs(),
                "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
                "podFailurePolicy": {
                    "rules": [
                        {
                            "action": "FailJob",
                            "onExitCodes": {
                                "containerName": CONTAINER,
                                "operator": "In",
                                "values": [super::EXIT_STEP, super::EXIT_LIMIT, super::EXIT_ENGINE],
                            },
                        },
                        {
                            "action": "Ignore",
                            "onPodConditions": [{ "type": "DisruptionTarget", "status": "True" }],
                        },
                    ],
                },
                "template": { "metadata": { "labels": labels }, "spec": pod },
            },
        });
        serde_json::from_value(job).expect("the Job manifest fits batch/v1")
    }

    /// Creates the Job (or finds it created) and follows it to its end,
    /// on a runtime of its own.
    fn run_job(
        &self,
        digest: &Digest,
        request: &Request,
        limit: Duration,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<Ended, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Kubernetes client's runtime: {e}"))?;
        runtime.block_on(self.run_job_async(digest, request, limit, cancel))
    }

    async fn run_job_async(
        &self,
        digest: &Digest,
        request: &Request,
        limit: Duration,
        cancel: Option<&Arc<AtomicBool>>,
    ) -> Result<Ended, String> {
        let client = (self.connect)().await?;
        let namespace = self
            .settings
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
        let name = Self::job_name(digest);
        let what = format!("Kubernetes Job {namespace}/{name}");
        let env: Vec<(String, String)> = FORWARDED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        let grace = limit.saturating_sub(Duration::from_secs(request.timeout_s));
        let manifest = self.manifest(&namespace, digest, request, grace, &env);
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Ok(Ended::Cancelled);
        }
        match jobs.create(&PostParams::default(), &manifest).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Created before (a restarted coordinator): follow it, if
                // it is really this submission's.
                let existing = jobs
                    .get(&name)
                    .await
                    .map_err(|e| format!("{what} exists but cannot be read: {e}"))?;
                let theirs = existing
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SUBMISSION_ANNOTATION))
                    .cloned()
                    .unwrap_or_else(|| "none".into());
                if theirs != digest.to_string() {
                    return Err(format!(
                        "{what} exists for another submission ({}), not {digest}; refusing to follow it",
                        crate::quoting::escape_controls(&theirs, 80)
                    ));
                }
            }
            Err(e) => return Err(format!("cannot create {what}: {e}")),
        }
        let deadline = tokio::time::Instant::now() + limit;
        match follow(&jobs, &name, &what, deadline, cancel).await? {
            Followed::Finished { state, failed } => {
                let log = if failed {
                    last_pod_log(&client, &namespace, &name).await
                } else {
                    Vec::new()
                };
                Ok(Ended::Exited {
                    what: format!("{what} {state}"),
                    log,
                })
            }
            Followed::Gone => Ok(Ended::Exited {
                what: format!("{what} was deleted"),
                log: Vec::new(),
            }),
            Followed::Cancelled => {
                delete(&jobs, &name).await;
                Ok(Ended::Cancelled)
            }
            Followed::TimedOut => {
                delete(&jobs, &name).await;
                Ok(Ended::TimedOut { what })
            }
        }
    }
}

/// Follows Job `name` until it has a terminal condition, is deleted, the
/// run is cancelled or `deadline` passes: a GET for the current state and
/// its resource version, then a watch from there, renewed when it ends.
async fn follow(
    jobs: &Api<Job>,
    name: &str,
    what: &str,
    deadline: tokio::time::Instant,
    cancel: Option<&Arc<AtomicBool>>,
) -> Result<Followed, String> {
    let mut errors = 0u32;
    let mut last_error = String::new();
    let stop = || {
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            Some(Followed::Cancelled)
        } else if tokio::time::Instant::now() >= deadline {
            Some(Followed::TimedOut)
        } else {
            None
        }
    };
    loop {
        if errors > 0 {
            if errors >= API_ERRORS_MAX {
                return Err(format!(
                    "lost {what}: {errors} API errors in a row, the last: {last_error}"
                ));
            }
            tokio::time::sleep(CHECK * errors).await;
        }
        let job = match or_stop(jobs.get_opt(name), &stop).await {
            Err(s) => return Ok(s),
            Ok(Ok(Some(job))) => job,
            Ok(Ok(None)) => return Ok(Followed::Gone),
            Ok(Err(e)) => {
                errors += 1;
                last_error = e.to_string();
                continue;
            }
        };
        if let Some(end) = terminal(&job) {
            return Ok(end);
        }
        let version = job
            .metadata
            .resource_version
            .clone()
            .unwrap_or_else(|| "0".into());
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(WATCH_TIMEOUT_S);
        let events = match or_stop(jobs.watch(&params, &version), &stop).await {
            Err(s) => return Ok(s),
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                errors += 1;
                last_error = e.to_string();
                continue;
            }
        };
        let mut events = Box::pin(events);
        let mut tick = tokio::time::interval(CHECK);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    // Only this Job's events count, whatever a server or a
                    // proxy sends (the field selector asks for no other).
                    Some(Ok(WatchEvent::Added(job) | WatchEvent::Modified(job)))
                        if job.metadata.name.as_deref() == Some(name) =>
                    {
                        errors = 0;
                        if let Some(end) = terminal(&job) {
                            return Ok(end);
                        }
                    }
                    Some(Ok(WatchEvent::Deleted(job))) if job.metadata.name.as_deref() == Some(name) => {
                        return Ok(Followed::Gone);
                    }
                    Some(Ok(
                        WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_),
                    )) => {}
                    Some(Ok(WatchEvent::Bookmark(_))) => {}
                    // 410 Gone: the version is too old; look again.
                    Some(Ok(WatchEvent::Error(status))) => {
                        if status.code != 410 {
                            errors += 1;
                            last_error = format!("watch: {} ({})", status.message, status.code);
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        errors += 1;
                        last_error = e.to_string();
                        break;
                    }
                    // The watch timed out: look again, watch again.
                    None => break,
                },
                _ = tick.tick() => {
                    if let Some(s) = stop() {
                        return Ok(s);
                    }
                }
            }
        }
    }
}

/// Awaits `call` (a request to the API server, which may hang) while
/// looking at `stop` every [`CHECK`].
async fn or_stop<T>(
    call: impl Future<Output = T>,
    stop: &impl Fn() -> Option<Followed>,
) -> Result<T, Followed> {
    let mut call = std::pin::pin!(call);
    let mut tick = tokio::time::interval(CHECK);
    loop {
        tokio::select! {
            done = &mut call => return Ok(done),
            _ = tick.tick() => {
                if let Some(s) = stop() {
                    return Err(s);
                }
            }
        }
    }
}

/// A Job's terminal condition, if it has one (`Complete` or `Failed`;
/// `FailureTarget` and `SuccessCriteriaMet` come before them).
fn terminal(job: &Job) -> Option<Followed> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(Followed::Finished {
                state: "completed".into(),
                failed: false,
            }),
            "Failed" => Some(Followed::Finished {
                state: format!(
                    "failed ({}: {})",
                    crate::quoting::escape_controls(c.reason.as_deref().unwrap_or("no reason"), 64),
                    crate::quoting::escape_controls(c.message.as_deref().unwrap_or(""), 256)
                ),
                failed: true,
            }),
            _ => None,
        })
}

/// The tail of the newest pod's log (for a message when no result was
/// filed); empty when it cannot be read.
async fn last_pod_log(client: &kube::Client, namespace: &str, job: &str) -> Vec<u8> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
        return Vec::new();
    };
    let newest = list
        .items
        .iter()
        .filter_map(|p| {
            let name = p.metadata.name.clone()?;
            Some((p.metadata.creation_timestamp.clone(), name))
        })
        .max();
    let Some((_, pod)) = newest else {
        return Vec::new();
    };
    let params = LogParams {
        container: Some(CONTAINER.into()),
        tail_lines: Some(LOG_LINES),
        limit_bytes: Some(64 << 10),
        ..Default::default()
    };
    pods.logs(&pod, &params)
        .await
        .map(String::into_bytes)
        .unwrap_or_default()
}

/// Deletes the Job and its pods (best effort: the Job's deadline and TTL
/// end it anyway).
async fn delete(jobs: &Api<Job>, name: &str) {
    if let Err(e) = jobs.delete(name, &DeleteParams::background()).await {
        tracing::warn!(job = name, error = %e, "cannot delete the Kubernetes Job");
    }
}

#[cfg(test)]
mod tests {
    //! The executor against a scripted API server (`tower-test`): each
    //! script plays the cluster — it answers the requests the `kube` client
    //! makes and, where a pod would, files the attempt's result in the
    //! store with the real `write_result`.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use http::{Request as HttpRequest, Response};
    use kube::client::Body;
    use serde_json::Value;

    use super::*;
    use crate::executor::{AttemptResult, write_result};
    use crate::failure::{Failure, FailureClass};

    /// One request the scripted API server saw.
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        query: String,
        body: Vec<u8>,
    }

    /// What a request is, in the cluster's terms.
    #[derive(Clone, Debug, PartialEq)]
    enum Route {
        Create,
        Get,
        Watch { version: String },
        ListPods { selector: String },
        Logs { pod: String },
        Delete,
    }

    const NS: &str = "jobs-ns";

    fn route(s: &Seen) -> Route {
        let query: BTreeMap<String, String> = s
            .query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2F", "/")))
            .collect();
        let jobs = format!("/apis/batch/v1/namespaces/{NS}/jobs");
        let pods = format!("/api/v1/namespaces/{NS}/pods");
        match (s.method.as_str(), s.path.as_str()) {
            ("POST", p) if p == jobs => Route::Create,
            ("GET", p) if p == jobs && query.get("watch").map(String::as_str) == Some("true") => {
                Route::Watch {
                    version: query.get("resourceVersion").cloned().unwrap_or_default(),
                }
            }
            ("GET", p) if p.starts_with(&format!("{jobs}/")) => Route::Get,
            ("DELETE", p) if p.starts_with(&format!("{jobs}/")) => Route::Delete,
            ("GET", p) if p == pods => Route::ListPods {
                selector: query.get("labelSelector").cloned().unwrap_or_default(),
            },
            ("GET", p) if p.starts_with(&format!("{pods}/")) && p.ends_with("/log") => {
                Route::Logs {
                    pod: p[pods.len() + 1..p.len() - 4].to_string(),
                }
            }
            _ => panic!("unexpected request {} {}?{}", s.method, s.path, s.query),
        }
    }

    type Script = Box<dyn FnMut(&Seen, &Route) -> Option<Response<Body>> + Send>;

    /// The scripted cluster: every request is recorded and answered by the
    /// script (`None`: never answered, like a watch with nothing to say).
    struct Cluster {
        seen: Arc<Mutex<Vec<Seen>>>,
        script: Arc<tokio::sync::Mutex<Script>>,
    }

    impl Cluster {
        fn new(
            script: impl FnMut(&Seen, &Route) -> Option<Response<Body>> + Send + 'static,
        ) -> Cluster {
            Cluster {
                seen: Arc::default(),
                script: Arc::new(tokio::sync::Mutex::new(Box::new(script))),
            }
        }

        fn executor(&self) -> KubernetesExecutor {
            let seen = self.seen.clone();
            let script = self.script.clone();
            KubernetesExecutor {
                settings: settings(),
                store_url: "s3://bucket/runs".into(),
                connect: Arc::new(move || {
                    let (service, mut handle) =
                        tower_test::mock::pair::<HttpRequest<Body>, Response<Body>>();
                    let seen = seen.clone();
                    let script = script.clone();
                    tokio::spawn(async move {
                        let mut held = Vec::new();
                        while let Some((request, send)) = handle.next_request().await {
                            let (parts, body) = request.into_parts();
                            let s = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().unwrap_or("").to_string(),
                                body: body.collect_bytes().await.unwrap().to_vec(),
                            };
                            seen.lock().unwrap().push(s.clone());
                            let r = route(&s);
                            match (script.lock().await)(&s, &r) {
                                Some(response) => send.send_response(response),
                                None => held.push(send),
                            }
                        }
                    });
                    Box::pin(async move { Ok(kube::Client::new(service, NS)) })
                }),
            }
        }

        fn routes(&self) -> Vec<Route> {
            self.seen.lock().unwrap().iter().map(route).collect()
        }

        fn created(&self) -> Job {
            let seen = self.seen.lock().unwrap();
            let create = seen
                .iter()
                .find(|s| route(s) == Route::Create)
                .expect("a Job was created");
            serde_json::from_slice(&create.body).unwrap()
        }
    }

    fn settings() -> KubernetesSettings {
        KubernetesSettings {
            image: "registry.example/sluice:0.1.0".into(),
            namespace: Some(NS.into()),
            service_account: Some("sluice-step".into()),
            secret: Some("sluice-store".into()),
            config: None,
            ttl_seconds_after_finished: 3600,
            backoff_limit: 2,
        }
    }

    fn request(gpu: Option<&str>) -> Request {
        crate::executor::test_request(gpu, 1)
    }

    fn reply(status: u16, body: Value) -> Option<Response<Body>> {
        Some(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        )
    }

    /// A watch response: one event per line.
    fn events(events: &[(&str, Value)]) -> Option<Response<Body>> {
        let mut text = String::new();
        for (kind, object) in events {
            text += &json!({ "type": kind, "object": object }).to_string();
            text.push('\n');
        }
        Some(
            Response::builder()
                .status(200)
                .body(Body::from(text.into_bytes()))
                .unwrap(),
        )
    }

    /// The Job `created` as the API server reports it: `version`, `status`.
    fn job(created: &Value, version: &str, status: Value) -> Value {
        let mut job = created.clone();
        job["metadata"]["resourceVersion"] = json!(version);
        job["status"] = status;
        job
    }

    /// `job` as another Job's.
    fn renamed(mut job: Value) -> Value {
        job["metadata"]["name"] = json!("sluice-someone-else");
        job
    }

    fn complete() -> Value {
        json!({ "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] })
    }

    fn failed(reason: &str, message: &str) -> Value {
        json!({ "failed": 1, "conditions": [
            { "type": "FailureTarget", "status": "True", "reason": reason },
            { "type": "Failed", "status": "True", "reason": reason, "message": message },
        ]})
    }

    fn status(code: u16, reason: &str, message: &str) -> Value {
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "code": code, "reason": reason, "message": message })
    }

    /// The submission a created Job runs (its annotation).
    fn submission_of(body: &[u8]) -> Digest {
        let job: Value = serde_json::from_slice(body).unwrap();
        job["metadata"]["annotations"][SUBMISSION_ANNOTATION]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Files `outcome` as the pod of submission `digest` would.
    fn file(store: &Store, digest: Digest, outcome: Outcome) {
        write_result(
            store,
            &AttemptResult {
                request: digest,
                executor: "kubernetes".into(),
                outcome,
            },
        )
        .unwrap();
    }

    fn home() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        (dir, store)
    }

    /// A success with one output already in the store.
    fn success(store: &Store) -> Outcome {
        let (digest, size) = store.put_bytes(b"the model").unwrap();
        store.sync().unwrap();
        let mut outcome = Outcome::default();
        outcome.outputs.insert(
            "model".into(),
            crate::artifact::OutputRef {
                digest,
                size,
                media_type: "application/octet-stream".into(),
            },
        );
        outcome.metrics.insert("loss".into(), 0.25);
        outcome
    }

    #[test]
    fn a_job_that_completes_answers_with_the_result_its_pod_filed() {
        let (_dir, store) = home();
        let expected = success(&store);
        let pod_store = store.clone();
        let pod_outcome = expected.clone();
        let mut created = Value::Null;
        let cluster = Cluster::new(move |s, r| match r {
            Route::Create => {
                created = serde_json::from_slice(&s.body).unwrap();
                file(&pod_store, submission_of(&s.body), pod_outcome.clone());
                reply(201, job(&created, "1", json!({})))
            }
            Route::Get => reply(200, job(&created, "2", json!({ "active": 1 }))),
            Route::Watch { .. } => events(&[
                (
                    "MODIFIED",
                    job(&created, "3", json!({ "active": 1, "ready": 1 })),
                ),
                ("MODIFIED", job(&created, "4", complete())),
            ]),
            other => panic!("unexpected {other:?}"),
        });
        let outcome = cluster
            .executor()
            .execute("run-1", &request(None), &store, None);
        assert_eq!(outcome, expected);
        assert_eq!(
            cluster.routes(),
            [
                Route::Create,
                Route::Get,
                Route::Watch {
                    version: "2".into()
                }
            ]
        );
        // The Job is named by the submission the coordinator stored, and
        // its pod runs exactly that submission.
        let job = cluster.created();
        let digest: Digest = job.metadata.annotations.as_ref().unwrap()[SUBMISSION_ANNOTATION]
            .parse()
            .unwrap();
        assert!(store.contains(&digest));
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(KubernetesExecutor::job_name(&digest).as_str())
        );
        let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(
            container.args.as_ref().unwrap().last(),
            Some(&digest.to_string())
        );
    }

    #[test]
    fn a_job_failed_by_its_policy_answers_with_the_step_failure_its_pod_filed() {
        let (_dir, store) = home();
        let pod_store = store.clone();
        let mut created = Value::Null;
        let cluster = Cluster::new(move |s, r| match r {
            Route::Create => {
                created = serde_json::from_slice(&s.body).unwrap();
                file(
                    &pod_store,
                    submission_of(&s.body),
                    Outcome::failed(Failure::step("the label column is missing")),
                );
                reply(201, job(&created, "1", json!({})))
            }
            // Already over when first looked at.
            Route::Get => reply(
                200,
                job(
                    &created,
                    "2",
                    failed(
                        "PodFailurePolicy",
                        "Container step for pod x failed with exit code 10 matching FailJob rule at index 0",
                    ),
                ),
            ),
            Route::ListPods { .. } => reply(
                200,
                json!({ "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [] }),
            ),
            other => panic!("unexpected {other:?}"),
        });
        let outcome = cluster
            .executor()
            .execute("run-1", &request(None), &store, None);
        let failure = outcome.failure.expect("a failure");
        assert_eq!(failure.class, FailureClass::Step);
        assert_eq!(failure.message, "the label column is missing");
        // Nothing watched: the first look saw the end.
        assert!(
            !cluster
                .routes()
                .iter()
                .any(|r| matches!(r, Route::Watch { .. }))
        );
    }

    #[test]
    fn a_pod_that_dies_without_a_result_is_an_engine_failure_naming_the_job_and_its_log() {
        let (_dir, store) = home();
        let mut created = Value::Null;
        let cluster = Cluster::new(move |s, r| match r {
            Route::Create => {
                created = serde_json::from_slice(&s.body).unwrap();
                reply(201, job(&created, "1", json!({})))
            }
            Route::Get => reply(200, job(&created, "2", json!({ "active": 1 }))),
            Route::Watch { .. } => events(&[(
                "MODIFIED",
                job(
                    &created,
                    "7",
                    failed(
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                ),
            )]),
            Route::ListPods { selector } => {
                let name = created["metadata"]["name"].as_str().unwrap();
                assert_eq!(selector, &format!("batch.kubernetes.io/job-name={name}"));
                let pod = |n: &str, at: &str| json!({ "metadata": { "name": n, "creationTimestamp": at } });
                reply(
                    200,
                    json!({ "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
                        pod("first-try", "2026-12-03T10:00:00Z"),
                        pod("third-try", "2026-12-03T10:02:00Z"),
                        pod("second-try", "2026-12-03T10:01:00Z"),
                    ]}),
                )
            }
            Route::Logs { pod } => {
                assert_eq!(pod, "third-try", "the newest pod's log");
                assert!(s.query.contains("container=step"), "{}", s.query);
                Some(
                    Response::builder()
                        .status(200)
                        .body(Body::from(
                            b"loading component\nfatal: out of memory\n".to_vec(),
                        ))
                        .unwrap(),
                )
            }
            other => panic!("unexpected {other:?}"),
        });
        let outcome = cluster
            .executor()
            .execute("run-1", &request(None), &store, None);
        let failure = outcome.failure.expect("a failure");
        assert_eq!(failure.class, FailureClass::Engine);
        let name = cluster.created().metadata.name.unwrap();
        assert_eq!(
            failure.message,
            format!(
                "step `train`: Kubernetes Job {NS}/{name} failed (BackoffLimitExceeded: Job has reached the specified backoff limit) without a result: loading component | fatal: out of memory"
            )
        );
    }

    #[test]
    fn an_evicted_pod_is_replaced_and_the_job_is_followed_across_watches() {
        let (_dir, store) = home();
        let expected = success(&store);
        let pod_store = store.clone();
        let mut created = Value::Null;
        let mut gets = 0;
        let cluster = Cluster::new(move |s, r| match r {
            Route::Create => {
                created = serde_json::from_slice(&s.body).unwrap();
                reply(201, job(&created, "1", json!({})))
            }
            Route::Get => {
                gets += 1;
                if gets == 2 {
                    // The replacement pod ran the attempt and filed it.
                    file(
                        &pod_store,
                        submission_of(&serde_json::to_vec(&created).unwrap()),
                        expected.clone(),
                    );
                }
                reply(
                    200,
                    job(&created, &format!("{}", gets * 10), json!({ "active": 1 })),
                )
            }
            // The first watch: the pod is evicted (a failed pod, no
            // terminal condition: the policy ignores disruptions), a new
            // one starts, then the watch times out.
            Route::Watch { version } if version == "10" => events(&[
                // Another Job's end, and its deletion, are not this one's.
                ("MODIFIED", renamed(job(&created, "11", complete()))),
                ("DELETED", renamed(job(&created, "11", complete()))),
                (
                    "MODIFIED",
                    job(&created, "11", json!({ "failed": 1, "active": 0 })),
                ),
                (
                    "MODIFIED",
                    job(&created, "12", json!({ "failed": 1, "active": 1 })),
                ),
            ]),
            Route::Watch { version } if version == "20" => {
                events(&[("MODIFIED", job(&created, "21", complete()))])
            }
            other => panic!("unexpected {other:?}"),
        });
        let outcome = cluster
            .executor()
            .execute("run-1", &request(None), &store, None);
        assert_eq!(outcome.failure, None, "{outcome:?}");
        assert_eq!(outcome.metrics["loss"], 0.25);
        assert_eq!(
            cluster.routes(),
            [
                Route::Create,
                Route::Get,
                Route::Watch {
                    version: "10".into()
                },
                Route::Get,
                Route::Watch {
                    version: "20".into()
                },
            ]
        );
    }

    #[test]
    fn a_restarted_coordinator_reattaches_to_its_job_instead_of_creating_another() {
        let (_dir, store) = home();
        let expected = success(&store);
        let pod_store = store.clone();
        let mut existing = Value::Null;
        let cluster = Cluster::new(move |s, r| match r {
            // The Job this attempt's first coordinator created.
            Route::Create => {
                existing = job(
                    &serde_json::from_slice(&s.body).unwrap(),
                    "40",
                    json!({ "active": 1 }),
                );
                reply(
                    409,
                    status(
                        409,
                        "AlreadyExists",
                        "jobs.batch \"sluice-...\" already exists",
                    ),
                )
            }
            Route::Get => reply(200, existing.clone()),
            Route::Watch { .. } => {
                file(
                    &pod_store,
                    submission_of(&serde_json::to_vec(&existing).unwrap()),
                    expected.clone(),
                );
                events(&[("MODIFIED", job(&existing, "41", complete()))])
            }
            other => panic!("unexpected {other:?}"),
        });
        let outcome = cluster
            .executor()
            .execute("run-1", &request(None), &store, None);
        assert_eq!(outcome.failure, None, "{outcome:?}");
        let routes = cluster.routes();
        assert_eq!(routes.iter().filter(|r| **r == Route::Create).count(), 1);
        assert_eq!(routes.len(), 4, "{routes:?}");
    }

    #[test]
    fn a_job_of_the_same_name_for_another_submission_is_never_followed() {
        let (_dir, store) = home();
        let cluster = Cluster::new(move |s, r| match r {
            Route::Create => reply(409, status(409, "AlreadyExists", "exists")),
            Route::Get => {
                let mut other: Value = serde_json::from_slice(&s.body).unwrap_or(json!({}));
                other["metadata"]["annotations"] =
                    json!({ SUBMISSION_ANNOTATION: Digest::of(b"another").to_string() });
                reply(200, other)
            }
            other => panic!("unexpected {other:?}"),
        });
        let outcome = cluster
            .executor()
            .execute("run-1", &request(None), &store, None);
        let failure = outcome.failure.expect("a failure");
        assert_eq!(failure.class, FailureClass::Engine);
        assert!(
            failure.message.contains(&format!(
                "exists for another submission ({}), not sha256:",
                Digest::of(b"another")
            )),
            "{}",
            failure.message
        );
        assert_eq!(cluster.routes(), [Route::Create, Route::Get]);
    }

    #[test]
    fn cancelling_the_run_deletes_the_job_and_its_pods() {
        let (_dir, store) = home();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let mut created = Value::Null;
        let cluster = Cluster::new(move |s, r| match r {
            Route::Create => {
                created = serde_json::from_slice(&s.body).unwrap();
                reply(201, job(&created, "1", json!({})))
            }
            Route::Get => reply(200, job(&created, "2", json!({ "active": 1 }))),
            // Nothing happens to the Job; the run is cancelled meanwhile.
            Route::Watch { .. } => {
                flag.store(true, Ordering::SeqCst);
                None
            }
            Route::Delete => {
                let body: Value = serde_json::from_slice(&s.body).unwrap();
                assert_eq!(body["propagationPolicy"], "Background");
                reply(200, status(200, "", ""))
            }
            other => panic!("unexpected {other:?}"),
        });
        let outcome = cluster
            .executor()
            .execute("run-1", &request(None), &store, Some(&cancel));
        let failure = outcome.failure.expect("a failure");
        assert_eq!(failure.message, crate::sandbox::CANCELLED_MESSAGE);
        assert_eq!(cluster.routes().last(), Some(&Route::Delete));
    }

    #[test]
    fn a_refused_create_is_an_engine_failure_naming_the_job_and_the_reason() {
        let (_dir, store) = home();
        let cluster = Cluster::new(move |_, r| match r {
            Route::Create => reply(
                403,
                status(
                    403,
                    "Forbidden",
                    "jobs.batch is forbidden: User \"x\" cannot create resource \"jobs\"",
                ),
            ),
            other => panic!("unexpected {other:?}"),
        });
        let outcome = cluster
            .executor()
            .execute("run-1", &request(None), &store, None);
        let failure = outcome.failure.expect("a failure");
        assert_eq!(failure.class, FailureClass::Engine);
        assert!(
            failure.message.starts_with(&format!(
                "step `train`: cannot create Kubernetes Job {NS}/sluice-"
            )),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("cannot create resource"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn job_manifests_match_the_golden_files() {
        let executor =
            KubernetesExecutor::new(Some(&settings()), Some("s3://bucket/runs")).unwrap();
        let digest = Digest::of(b"submission");
        let env = vec![("AWS_REGION".to_string(), "eu-west-1".to_string())];
        let grace = crate::executor::PROCESS_GRACE;
        let show = |job: &Job| serde_json::to_string_pretty(job).unwrap() + "\n";
        expect_test::expect_file!["../../../tests/all/golden/kubernetes-job-cpu.json"].assert_eq(
            &show(&executor.manifest(NS, &digest, &request(None), grace, &env)),
        );
        let mut gpu = executor.clone();
        gpu.settings.secret = None;
        gpu.settings.service_account = None;
        gpu.settings.config = Some("/etc/sluice/config.toml".into());
        expect_test::expect_file!["../../../tests/all/golden/kubernetes-job-gpu.json"].assert_eq(
            &show(&gpu.manifest(NS, &digest, &request(Some("torch")), grace, &[])),
        );
        // The built-in cpu worker kind asks for no device.
        let cpu_grant = executor.manifest(NS, &digest, &request(Some("cpu")), grace, &[]);
        let limits = cpu_grant.spec.unwrap().template.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .limits
            .unwrap();
        assert!(!limits.contains_key("nvidia.com/gpu"));
        // A DNS label, whatever the digest.
        let name = KubernetesExecutor::job_name(&digest);
        assert!(
            name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }

    #[test]
    fn the_executor_needs_an_image_and_a_shared_store() {
        let no_settings = KubernetesExecutor::new(None, Some("s3://b/p")).unwrap_err();
        assert!(no_settings.contains("`[kubernetes] image"), "{no_settings}");
        for store in [None, Some("memory://")] {
            let e = KubernetesExecutor::new(Some(&settings()), store).unwrap_err();
            assert!(e.contains("needs a shared store"), "{e}");
        }
    }
}
