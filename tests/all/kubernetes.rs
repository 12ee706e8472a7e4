//! The `kubernetes` executor end to end (issue 14) against a fake cluster
//! on loopback: an HTTP server speaking the part of the Kubernetes API the
//! executor uses (Jobs: create, get, watch, delete; pods: list, logs),
//! reached through a real kubeconfig, whose "kubelet" runs each Job's
//! container command — the real `sluice exec-step` — as a process with an
//! empty home of its own, and applies the Job's own pod failure policy and
//! backoff limit to its exit code. The shared store is a `file://`
//! directory. No cluster can run here; this is the closest thing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::harness::{Sandbox, repo, step};

const NS: &str = "sluice-test";
const TOKEN: &str = "fake-cluster-token";

/// One Job as the fake API server keeps it.
struct FakeJob {
    manifest: Value,
    status: Value,
    /// Pods started, in order: name, exit code (None while running), log.
    pods: Vec<(String, Option<i32>, PathBuf)>,
    /// The running pod's process id.
    running: Option<u32>,
    deleted: bool,
}

struct Cluster {
    dir: PathBuf,
    jobs: Mutex<BTreeMap<String, FakeJob>>,
    /// The collection's resource version; bumped on every change.
    version: tokio::sync::watch::Sender<u64>,
    /// Environment the first pod of every Job gets from its "node" (a
    /// bad node: the fault switch).
    first_pod_env: Vec<(String, String)>,
    /// Every request, `METHOD path`.
    requests: Mutex<Vec<String>>,
}

/// The fake cluster: its API server runs until dropped.
struct FakeCluster {
    cluster: Arc<Cluster>,
    kubeconfig: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl FakeCluster {
    fn start(dir: &Path, first_pod_env: &[(&str, &str)]) -> FakeCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = Arc::new(Cluster {
            dir: dir.to_path_buf(),
            jobs: Mutex::default(),
            version: tokio::sync::watch::channel(1).0,
            first_pod_env: first_pod_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            requests: Mutex::default(),
        });
        let jobs = format!("/apis/batch/v1/namespaces/{NS}/jobs");
        let pods = format!("/api/v1/namespaces/{NS}/pods");
        let app = Router::new()
            .route(&jobs, get(watch_jobs).post(create_job))
            .route(&format!("{jobs}/{{name}}"), get(get_job).delete(delete_job))
            .route(&pods, get(list_pods))
            .route(&format!("{pods}/{{name}}/log"), get(pod_log))
            .layer(axum::middleware::from_fn_with_state(
                cluster.clone(),
                authenticate,
            ))
            .with_state(cluster.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move { axum::serve(listener, app).await });
        std::fs::create_dir_all(dir).unwrap();
        let kubeconfig = dir.join("kubeconfig.yaml");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {NS}\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {TOKEN}\n"
            ),
        )
        .unwrap();
        FakeCluster {
            cluster,
            kubeconfig,
            _runtime: runtime,
        }
    }

    /// Every Job created: name → (manifest, final status, pods' exit codes).
    fn jobs(&self) -> BTreeMap<String, (Value, Value, Vec<Option<i32>>)> {
        self.cluster
            .jobs
            .lock()
            .unwrap()
            .iter()
            .map(|(name, j)| {
                (
                    name.clone(),
                    (
                        j.manifest.clone(),
                        j.status.clone(),
                        j.pods.iter().map(|p| p.1).collect(),
                    ),
                )
            })
            .collect()
    }

    fn creates(&self) -> usize {
        self.cluster
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("POST "))
            .count()
    }
}

async fn authenticate(
    State(cluster): State<Arc<Cluster>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    cluster
        .requests
        .lock()
        .unwrap()
        .push(format!("{} {}", request.method(), request.uri().path()));
    let ok = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !ok {
        return api_status(StatusCode::UNAUTHORIZED, "Unauthorized", "no token");
    }
    next.run(request).await
}

fn api_status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        axum::Json(
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "code": code.as_u16(), "reason": reason, "message": message }),
        ),
    )
        .into_response()
}

fn job_json(cluster: &Cluster, job: &FakeJob) -> Value {
    let mut v = job.manifest.clone();
    v["metadata"]["resourceVersion"] = json!(cluster.version.borrow().to_string());
    v["status"] = job.status.clone();
    v
}

async fn create_job(State(cluster): State<Arc<Cluster>>, body: axum::body::Bytes) -> Response {
    let manifest: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return api_status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
    let mut jobs = cluster.jobs.lock().unwrap();
    if jobs.contains_key(&name) {
        return api_status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("jobs.batch \"{name}\" already exists"),
        );
    }
    let job = FakeJob {
        manifest,
        status: json!({ "active": 1 }),
        pods: Vec::new(),
        running: None,
        deleted: false,
    };
    let reply = job_json(&cluster, &job);
    jobs.insert(name.clone(), job);
    drop(jobs);
    let c = cluster.clone();
    std::thread::spawn(move || kubelet(&c, &name));
    (StatusCode::CREATED, axum::Json(reply)).into_response()
}

/// Runs the Job's pods one after another until its policy ends it.
fn kubelet(cluster: &Cluster, name: &str) {
    let manifest = cluster.jobs.lock().unwrap()[name].manifest.clone();
    let spec = &manifest["spec"];
    let container = &spec["template"]["spec"]["containers"][0];
    let fail_job: Vec<i64> = spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let backoff = spec["backoffLimit"].as_i64().unwrap();
    let mut failed = 0;
    loop {
        let pod = format!("{name}-{failed}");
        // An emptyDir for the home, as the manifest mounts it.
        let home = cluster.dir.join("pods").join(&pod);
        std::fs::create_dir_all(&home).unwrap();
        let mut args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let at = args.iter().position(|a| a == "--home").unwrap();
        args[at + 1] = home.join("home").display().to_string();
        assert_eq!(container["command"], json!(["sluice"]));
        let log = home.join("log");
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for e in container["env"].as_array().into_iter().flatten() {
            command.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
        }
        if failed == 0 {
            command.envs(cluster.first_pod_env.iter().cloned());
        }
        let mut child = command.spawn().unwrap();
        {
            let mut jobs = cluster.jobs.lock().unwrap();
            let job = jobs.get_mut(name).unwrap();
            if job.deleted {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            job.running = Some(child.id());
            job.pods.push((pod.clone(), None, log));
        }
        let status = child.wait().unwrap();
        let code = status.code();
        let mut jobs = cluster.jobs.lock().unwrap();
        let job = jobs.get_mut(name).unwrap();
        job.running = None;
        job.pods.last_mut().unwrap().1 = code;
        if job.deleted {
            return;
        }
        let condition = |kind: &str, reason: &str, message: String| json!([{ "type": kind, "status": "True", "reason": reason, "message": message }]);
        let done = match code {
            Some(0) => Some(json!({ "succeeded": 1, "failed": failed,
                "conditions": condition("Complete", "", String::new()) })),
            Some(c) if fail_job.contains(&i64::from(c)) => Some(json!({ "failed": failed + 1,
                "conditions": condition("Failed", "PodFailurePolicy",
                    format!("Container step for pod {NS}/{pod} failed with exit code {c} matching FailJob rule at index 0")) })),
            _ => {
                failed += 1;
                (failed > backoff).then(|| {
                    json!({ "failed": failed,
                    "conditions": condition("Failed", "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit".into()) })
                })
            }
        };
        let over = done.is_some();
        job.status = done.unwrap_or_else(|| json!({ "active": 1, "failed": failed }));
        drop(jobs);
        cluster.version.send_modify(|v| *v += 1);
        if over {
            return;
        }
    }
}

async fn get_job(State(cluster): State<Arc<Cluster>>, UrlPath(name): UrlPath<String>) -> Response {
    let jobs = cluster.jobs.lock().unwrap();
    match jobs.get(&name) {
        Some(job) if !job.deleted => axum::Json(job_json(&cluster, job)).into_response(),
        _ => api_status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("jobs.batch \"{name}\" not found"),
        ),
    }
}

/// A watch of one Job (`fieldSelector=metadata.name=...`): waits for a
/// change after `resourceVersion`, answers it as one event and ends (the
/// client watches again), or ends empty after a while.
async fn watch_jobs(
    State(cluster): State<Arc<Cluster>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    assert_eq!(q.get("watch").map(String::as_str), Some("true"), "{q:?}");
    let name = q["fieldSelector"]
        .strip_prefix("metadata.name=")
        .unwrap()
        .to_string();
    let since: u64 = q["resourceVersion"].parse().unwrap();
    let mut rx = cluster.version.subscribe();
    let changed = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v > since)).await;
    let mut body = String::new();
    if changed.is_ok() {
        let jobs = cluster.jobs.lock().unwrap();
        let job = &jobs[&name];
        let kind = if job.deleted { "DELETED" } else { "MODIFIED" };
        body = json!({ "type": kind, "object": job_json(&cluster, job) }).to_string() + "\n";
    }
    body.into_response()
}

async fn delete_job(
    State(cluster): State<Arc<Cluster>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let mut jobs = cluster.jobs.lock().unwrap();
    let Some(job) = jobs.get_mut(&name) else {
        return api_status(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    job.deleted = true;
    if let Some(pid) = job.running {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    drop(jobs);
    cluster.version.send_modify(|v| *v += 1);
    axum::Json(json!({ "kind": "Status", "apiVersion": "v1", "status": "Success" })).into_response()
}

async fn list_pods(
    State(cluster): State<Arc<Cluster>>,
    Query(q): Query<BTreeMap<String, String>>,
    _: HeaderMap,
) -> Response {
    let job = q["labelSelector"]
        .strip_prefix("batch.kubernetes.io/job-name=")
        .unwrap()
        .to_string();
    let jobs = cluster.jobs.lock().unwrap();
    let items: Vec<Value> = jobs[&job]
        .pods
        .iter()
        .enumerate()
        .map(|(i, (pod, _, _))| {
            json!({ "metadata": { "name": pod,
                "creationTimestamp": format!("2026-12-03T10:00:{i:02}Z") } })
        })
        .collect();
    axum::Json(json!({ "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items }))
        .into_response()
}

async fn pod_log(State(cluster): State<Arc<Cluster>>, UrlPath(pod): UrlPath<String>) -> Response {
    let jobs = cluster.jobs.lock().unwrap();
    let log = jobs
        .values()
        .flat_map(|j| j.pods.iter())
        .find(|p| p.0 == pod)
        .map(|p| std::fs::read_to_string(&p.2).unwrap_or_default());
    match log {
        Some(text) => text.into_response(),
        None => api_status(StatusCode::NOT_FOUND, "NotFound", "no such pod"),
    }
}

/// The engine config of a run on the fake cluster.
fn config(sb: &Sandbox) -> PathBuf {
    sb.write(
        "kubernetes.toml",
        "[kubernetes]\nimage = \"sluice:test\"\nbackoff_limit = 1\n",
    )
}

fn run(sb: &Sandbox, cluster: &FakeCluster, home: &str, store: &str, extra: &[&str]) -> Value {
    let spec = repo().join("examples/pipelines/tabular.toml");
    let home = sb.path().join(home);
    let config = config(sb);
    let mut args = vec![
        "run",
        spec.to_str().unwrap(),
        "--json",
        "--home",
        home.to_str().unwrap(),
        "--store",
        store,
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend(extra);
    let r = sb.sluice_env(
        &args,
        &[("KUBECONFIG", cluster.kubeconfig.to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{}", r.failure());
    r.json()
}

#[test]
fn the_example_runs_as_jobs_with_pods_of_empty_homes_identically_to_local() {
    let sb = Sandbox::new();
    let shared = sb.path().join("bucket");
    std::fs::create_dir_all(&shared).unwrap();
    let store = format!("file://{}", shared.display());
    // A pod that dies before filing its result (the first of every Job of
    // attempt 1) is retried by the Job itself, within its backoff limit.
    let cluster = FakeCluster::start(
        &sb.path().join("cluster"),
        &[("SLUICE_FAULTS", "exec.result:1@1=crash")],
    );
    let local = run(&sb, &cluster, "local", &store, &["--executor", "local"]);
    let jobs = run(
        &sb,
        &cluster,
        "coordinator",
        &store,
        &["--executor", "kubernetes", "--no-cache"],
    );
    let created = cluster.jobs();
    let mut executed = 0;
    for l in local["steps"].as_array().unwrap() {
        let name = l["name"].as_str().unwrap();
        let k = step(&jobs, name);
        assert_eq!(k["status"], l["status"], "{name}: {k:#}");
        for field in ["cache_key", "outputs", "tags", "metrics", "fuel_used"] {
            assert_eq!(k[field], l[field], "{name}.{field}");
        }
        if l["status"] == "succeeded" {
            executed += 1;
            assert_eq!(k["executor"], "kubernetes", "{name}");
            assert_eq!(k["attempts"], 1, "{name}");
        }
    }
    assert_eq!(executed, 8, "{local:#}");
    // One Job per step, each named by its submission, each with a pod
    // that crashed without a result and a second one that completed.
    assert_eq!(created.len(), 8, "{:?}", created.keys());
    assert_eq!(cluster.creates(), 8);
    for (name, (manifest, status, pods)) in &created {
        let submission = manifest["metadata"]["annotations"]["sluice.dev/submission"]
            .as_str()
            .unwrap();
        assert_eq!(name, &format!("sluice-{}", &submission[7..47]));
        assert_eq!(
            status["conditions"][0]["type"], "Complete",
            "{name}: {status}"
        );
        assert_eq!(pods.len(), 2, "{name}: {pods:?}");
        assert_ne!(pods[0], Some(0), "{name}");
        assert_eq!(pods[1], Some(0), "{name}");
    }
    // The coordinator's record verifies and replays like a local run's.
    let id = jobs["run_id"].as_str().unwrap();
    let home = sb.path().join("coordinator");
    let home = home.to_str().unwrap();
    let verify = sb.sluice_raw(&["verify", id, "--home", home]);
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
    let replay = sb.sluice_raw(&["replay", id, "--json", "--store", &store, "--home", home]);
    assert_eq!(replay.code, 0, "{}", replay.failure());
    assert_eq!(replay.json()["verdict"], "identical");
}

#[test]
fn without_its_settings_or_a_shared_store_the_kubernetes_executor_fails_the_step_saying_why() {
    let sb = Sandbox::new();
    let spec = repo().join("examples/pipelines/tabular.toml");
    let spec = spec.to_str().unwrap();
    let no_settings = sb.sluice(&["run", spec, "--json", "--executor", "kubernetes"]);
    assert_eq!(no_settings.code, 1, "{}", no_settings.stderr);
    let ingest = step(&no_settings.json(), "ingest").clone();
    assert_eq!(ingest["status"], "failed");
    assert_eq!(
        ingest["error"]["message"],
        "step `ingest`: the kubernetes executor needs `[kubernetes] image = \"...\"` in the engine config (--config)"
    );
    let config = config(&sb);
    let no_store = sb.sluice(&[
        "run",
        spec,
        "--json",
        "--executor",
        "kubernetes",
        "--config",
        config.to_str().unwrap(),
    ]);
    let ingest = step(&no_store.json(), "ingest").clone();
    assert!(
        ingest["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the kubernetes executor needs a shared store (--store s3://bucket/prefix or `[store] url`)"),
        "{ingest:#}"
    );
}
