//! The `ray` executor against a real local Ray head (`ray[default]` 2.60.0
//! from PyPI; `.ci/run` installs it into `target/ray`, the harness installs
//! the same pinned version there if it is missing). One test owns the head
//! (`ray stop` ends every Ray process of the user), on loopback ports it
//! chose, in a temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::{Sandbox, component, repo, step, toml_path};

const RAY: &str = "ray[default]==2.60.0";

fn venv() -> PathBuf {
    crate::harness::pinned_venv("ray", RAY, "ray")
}

/// A Ray head on loopback; stopped (with every Ray process) on drop.
struct RayHead {
    venv: PathBuf,
    _dir: tempfile::TempDir,
    dashboard: String,
}

impl RayHead {
    fn start() -> RayHead {
        let venv = venv();
        // Short: Ray's socket paths must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ray")
            .tempdir_in("/tmp")
            .unwrap();
        let ports: Vec<u16> = {
            let socks: Vec<_> = (0..9)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
                .collect();
            socks
                .iter()
                .map(|s| s.local_addr().unwrap().port())
                .collect()
        };
        let out = Command::new(venv.join("bin").join("ray"))
            .args(["start", "--head", "--node-ip-address=127.0.0.1"])
            .args(["--dashboard-host=127.0.0.1", "--include-dashboard=true"])
            .args(["--num-cpus=2", "--disable-usage-stats"])
            .arg(format!("--port={}", ports[0]))
            .arg(format!("--dashboard-port={}", ports[1]))
            .arg(format!("--node-manager-port={}", ports[2]))
            .arg(format!("--object-manager-port={}", ports[3]))
            .arg(format!("--ray-client-server-port={}", ports[4]))
            .arg(format!("--dashboard-agent-listen-port={}", ports[5]))
            .arg(format!("--dashboard-agent-grpc-port={}", ports[6]))
            .arg(format!("--runtime-env-agent-port={}", ports[7]))
            .arg(format!("--metrics-export-port={}", ports[8]))
            .arg(format!("--temp-dir={}", dir.path().display()))
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .output()
            .unwrap();
        let head = RayHead {
            venv,
            _dir: dir,
            dashboard: format!("http://127.0.0.1:{}", ports[1]),
        };
        assert!(
            out.status.success(),
            "ray start: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        head
    }

    fn run(&self, sb: &Sandbox, spec: &Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
        let home = sb.home();
        let mut args = vec!["run", spec.to_str().unwrap(), "--json"];
        args.extend(extra);
        args.extend(["--home", home.to_str().unwrap()]);
        let mut env = env.to_vec();
        env.push(("RAY_ADDRESS", &self.dashboard));
        let r = sb.sluice_env(&args, &env);
        assert_eq!(r.code, 0, "{}", r.failure());
        r.json()
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        let _ = Command::new(self.venv.join("bin").join("ray"))
            .args(["stop", "--force"])
            .output();
    }
}

#[test]
fn steps_run_as_ray_jobs_identically_a_killed_job_is_retried_and_a_resume_reattaches() {
    let ray = RayHead::start();

    // Parity: the example on Ray is byte for byte the local run.
    let sb = Sandbox::new();
    let spec = repo().join("examples/pipelines/tabular.toml");
    let local = ray.run(&sb, &spec, &["--executor", "local"], &[]);
    let remote = ray.run(&sb, &spec, &["--executor", "ray", "--no-cache"], &[]);
    for l in local["steps"].as_array().unwrap() {
        let name = l["name"].as_str().unwrap();
        let r = step(&remote, name);
        assert_eq!(r["status"], "succeeded", "{name}: {r:#}");
        assert_eq!(r["executor"], "ray", "{name}");
        for field in ["cache_key", "outputs", "metrics", "fuel_used"] {
            assert_eq!(r[field], l[field], "{name}.{field}");
        }
    }
    let id = remote["run_id"].as_str().unwrap();
    let replay = sb.sluice(&["replay", id, "--json"]);
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert_eq!(replay.json()["verdict"], "identical");
    assert_eq!(sb.sluice(&["verify", id]).code, 0);
    // Every attempt was one Ray job, named by its submission.
    let jobs: Value = serde_json::from_str(
        &ureq::get(format!("{}/api/jobs/", ray.dashboard))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let ours: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["metadata"]["sluice_step"].is_string())
        .collect();
    assert_eq!(ours.len(), 8, "{jobs:#}");
    for job in &ours {
        assert_eq!(job["status"], "SUCCEEDED", "{job:#}");
        let submission = job["metadata"]["sluice_submission"].as_str().unwrap();
        let hex = submission.strip_prefix("sha256:").unwrap();
        assert_eq!(job["submission_id"], format!("sluice-{}", &hex[..40]));
        let entrypoint = job["entrypoint"].as_str().unwrap();
        assert!(
            entrypoint.contains(&format!(" exec-step --home {} ", sb.home().display()))
                && entrypoint.ends_with(&format!(" {submission}")),
            "{job:#}"
        );
    }

    // A step with a gpu grant: its gpu jobs run next to it, in the Ray
    // job (the built-in cpu worker kind asks Ray for no device).
    let gpu = repo().join("examples/pipelines/tabular-gpu.toml");
    let no_nvml = [("SLUICE_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")];
    let local = ray.run(&sb, &gpu, &["--executor", "local"], &no_nvml);
    let remote = ray.run(&sb, &gpu, &["--executor", "ray", "--no-cache"], &no_nvml);
    let mut gpu_steps = 0;
    for l in local["steps"].as_array().unwrap() {
        let name = l["name"].as_str().unwrap();
        let r = step(&remote, name);
        assert_eq!(r["status"], l["status"], "{name}: {r:#}");
        for field in ["cache_key", "outputs"] {
            assert_eq!(r[field], l[field], "{name}.{field}");
        }
        if l["status"] == "succeeded" {
            assert_eq!(r["executor"], "ray", "{name}");
        }
        if let Some(jobs) = r["gpu"]["jobs"].as_array() {
            gpu_steps += 1;
            assert_eq!(
                jobs.len(),
                l["gpu"]["jobs"].as_array().unwrap().len(),
                "{name}"
            );
        }
    }
    assert_eq!(gpu_steps, 1, "{remote:#}");

    // A job that dies after running (before filing its result) is retried
    // by the run as a new attempt; the output is the local one.
    let sb = Sandbox::new();
    sb.write("in.txt", "in\n");
    let spec = sb.write(
        "k.toml",
        &format!(
            "name = \"k\"\n[sources]\nt = \"in.txt\"\n[steps.a]\ncomponent = {}\n\
             inputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"x\" }}\noutputs = [\"out\"]\nretries = 1\n",
            toml_path(&component("append"))
        ),
    );
    let killed = ray.run(
        &sb,
        &spec,
        &["--executor", "ray"],
        &[("SLUICE_FAULTS", "exec.result:1@1=crash")],
    );
    let a = step(&killed, "a");
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(a["attempts"], 2, "{a:#}");
    let plain = ray.run(&sb, &spec, &["--executor", "local", "--no-cache"], &[]);
    assert_eq!(a["outputs"], step(&plain, "a")["outputs"]);
    let id = killed["run_id"].as_str().unwrap();
    let record =
        std::fs::read_to_string(sb.home().join("runs").join(id).join("record.jsonl")).unwrap();
    let failed: Vec<Value> = record
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "attempt-failed")
        .collect();
    assert_eq!(failed.len(), 1, "{record}");
    let message = failed[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("step `a`: Ray job sluice-")
            && message.contains(" ended FAILED (")
            && message.contains("without a result"),
        "{message}"
    );
    let results = std::fs::read_dir(sb.home().join("store/docs/results"))
        .unwrap()
        .count();
    assert_eq!(results, 1, "attempt 2's; the killed attempt filed none");

    // A coordinator that dies after its job filed the result re-attaches
    // on resume: the same attempt is the same submission, answered from its
    // result; no second job is submitted.
    let sb = Sandbox::new();
    sb.write("in.txt", "in\n");
    let spec = sb.write(
        "once.toml",
        &format!(
            "name = \"once\"\n[executor]\nkind = \"ray\"\n[sources]\nt = \"in.txt\"\n[steps.a]\ncomponent = {}\n\
             inputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"once\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append"))
        ),
    );
    let home = sb.home();
    let crashed = sb.sluice_env(
        &[
            "run",
            spec.to_str().unwrap(),
            "--home",
            home.to_str().unwrap(),
        ],
        &[
            ("SLUICE_FAULTS", "record@3=crash"),
            ("RAY_ADDRESS", &ray.dashboard),
        ],
    );
    assert_ne!(crashed.code, 0, "{}", crashed.stderr);
    let id = std::fs::read_dir(home.join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let jobs_of_once = || -> Vec<Value> {
        let all: Value = serde_json::from_str(
            &ureq::get(format!("{}/api/jobs/", ray.dashboard))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap(),
        )
        .unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .filter(|j| {
                j["entrypoint"]
                    .as_str()
                    .unwrap_or("")
                    .contains(home.to_str().unwrap())
            })
            .cloned()
            .collect()
    };
    assert_eq!(jobs_of_once().len(), 1);
    let resumed = sb.sluice_env(
        &["resume", &id, "--json", "--home", home.to_str().unwrap()],
        &[("RAY_ADDRESS", &ray.dashboard)],
    );
    assert_eq!(resumed.code, 0, "{}", resumed.failure());
    let a = step(&resumed.json(), "a").clone();
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(a["executor"], "ray", "{a:#}");
    assert_eq!(a["attempts"], 1, "{a:#}");
    assert_eq!(jobs_of_once().len(), 1, "resume submitted a second job");
}
