//! GPU jobs end to end (HOSTILE.md groups 6 and 15): the real `sluice`
//! binary, sandboxed steps submitting jobs through the WIT `gpu` interface,
//! the real CPU worker (`sluice worker cpu`) and hostile workers written as
//! bash scripts in each test's temp dir, started from a temp engine config.
//! No test needs a GPU; NVML is pointed at a library that does not exist so
//! telemetry is "unavailable" on every machine.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Run, Sandbox, component, repo, step, toml_path};

/// NVML loaded from here fails like a machine without a driver.
const NO_NVML: (&str, &str) = ("SLUICE_NVML_LIB", "/nonexistent/libnvidia-ml.so.1");

/// A worker that speaks protocol v1 in bash. `MODE` says how it misbehaves
/// on the first job any of its processes sees (a marker file in `$STATE`
/// remembers); every later job succeeds, so a respawned worker is healthy.
/// Each start appends its pid to `$STATE/spawns`. With `MODE=cuda` its
/// hello claims a CUDA device.
const FAKE_WORKER: &str = r#"#!/usr/bin/env bash
set -u
echo "$$" >> "$STATE/spawns"
kind=cpu
if [ "$MODE" = cuda ]; then kind=cuda; fi
echo "{\"type\":\"hello\",\"protocol\":1,\"worker\":\"fake\",\"ops\":[\"train-mlp\"],\"versions\":{\"fake\":\"1.0\"},\"device\":{\"kind\":\"$kind\",\"name\":\"bash\",\"uuid\":null}}"
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$2"; }
succeed() {
  printf '{"kind":"fake","weights":[1,2,3]}' > "$2/model.json"
  local digest size
  digest=$(sha256sum "$2/model.json" | cut -d' ' -f1)
  size=$(wc -c < "$2/model.json")
  echo "{\"type\":\"result\",\"id\":\"$1\",\"status\":\"succeeded\",\"outputs\":{\"model\":{\"file\":\"model.json\",\"digest\":\"sha256:$digest\",\"size\":$size,\"media_type\":\"application/json\"}},\"metrics\":{\"final_loss\":0.25},\"message\":null}"
}
while IFS= read -r line; do
  case "$line" in
    *'"type":"run"'*)
      id=$(field id "$line")
      dir=$(field output_dir "$line")
      echo "{\"type\":\"progress\",\"id\":\"$id\",\"message\":\"started\"}"
      if [ -e "$STATE/misbehaved" ]; then succeed "$id" "$dir"; continue; fi
      touch "$STATE/misbehaved"
      case "$MODE" in
        good) succeed "$id" "$dir" ;;
        crash) echo "dying now" >&2; exit 3 ;;
        hang) ;;
        malformed) echo 'this is not json' ;;
        wrong-id) echo '{"type":"result","id":"j999","status":"succeeded"}' ;;
        mismatch)
          printf 'real bytes' > "$dir/model.json"
          other=$(printf 'other bytes' | sha256sum | cut -d' ' -f1)
          echo "{\"type\":\"result\",\"id\":\"$id\",\"status\":\"succeeded\",\"outputs\":{\"model\":{\"file\":\"model.json\",\"digest\":\"sha256:$other\"}}}" ;;
        cancel) ;;
      esac ;;
    *'"type":"cancel"'*)
      id=$(field id "$line")
      echo "cancel received for $id" >&2
      echo "{\"type\":\"result\",\"id\":\"$id\",\"status\":\"cancelled\",\"message\":\"stopped on request\"}" ;;
    *'"type":"shutdown"'*) exit 0 ;;
  esac
done
"#;

/// A temp home with an engine config naming one fake worker kind.
struct Gpu {
    sb: Sandbox,
    config: PathBuf,
    state: PathBuf,
}

impl Gpu {
    /// A sandbox whose config starts `FAKE_WORKER` as worker kind `kind`,
    /// misbehaving as `mode` on its first job.
    fn new(kind: &str, mode: &str) -> Gpu {
        let sb = Sandbox::new();
        let script = sb.write("worker.sh", FAKE_WORKER);
        let mut perms = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap();
        let state = sb.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let config = sb.write(
            "sluice-config.toml",
            &format!(
                "[workers.{kind}]\ncommand = {}\nenv = {{ STATE = {}, MODE = \"{mode}\" }}\nhello_timeout_s = 30\n",
                toml_path(&script),
                toml_path(&state)
            ),
        );
        sb.write("data.txt", "some training data\n");
        Gpu { sb, config, state }
    }

    /// How many worker processes were started.
    fn spawns(&self) -> usize {
        std::fs::read_to_string(self.state.join("spawns"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// `sluice ARGS --home HOME` without NVML.
    fn sluice(&self, args: &[&str]) -> Run {
        let home = self.sb.home();
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--home", home.to_str().unwrap()]);
        self.sb.sluice_env(&full, &[NO_NVML])
    }

    /// `sluice ARGS --config CONFIG --home HOME` (commands that run steps).
    fn sluice_with_workers(&self, args: &[&str]) -> Run {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--config", self.config.to_str().unwrap()]);
        self.sluice(&full)
    }

    /// `sluice run SPEC --json`.
    fn run(&self, spec: &Path) -> (Run, Value) {
        let run = self.sluice_with_workers(&["run", spec.to_str().unwrap(), "--json"]);
        let json = run.json();
        (run, json)
    }

    /// A stored artifact's bytes as text.
    fn cat(&self, digest: &Value) -> String {
        let run = self.sluice(&["artifact", "cat", digest.as_str().unwrap()]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
    }

    /// A pipeline: step `train` (gpu-abuse with `params`, optional grant)
    /// reading `sources.data` as `train`, then `after` (append) consuming
    /// its `out`, to show the rest of the run is unaffected.
    fn pipeline(&self, params: &str, grant: Option<&str>, outputs: &str) -> PathBuf {
        let grant = grant.map_or(String::new(), |g| format!("gpu = {g}\n"));
        self.sb.write(
            "p.toml",
            &format!(
                r#"name = "gpu"
[sources]
data = "data.txt"
[steps.train]
component = {}
inputs = {{ train = "sources.data" }}
params = {params}
outputs = {outputs}
{grant}
[steps.after]
component = {}
inputs = {{ in = "train.out" }}
params = {{ line = "the run goes on" }}
outputs = ["out"]
"#,
                toml_path(&component("gpu-abuse")),
                toml_path(&component("append")),
            ),
        )
    }
}

fn jobs(step: &Value) -> &Vec<Value> {
    step["gpu"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no gpu jobs in {step:#}"))
}

fn message(v: &Value) -> &str {
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {v:#}"))
}

/// Runs a two-job step whose worker misbehaves on the first job; checks
/// that job's state and that the second job succeeded — on a respawned
/// worker, the misbehaving one having been killed — and the run went on. Returns the
/// first job's report and the sandbox.
fn first_job_misbehaves(kind: &str, mode: &str, state: &str, extra: &str) -> (Value, Gpu) {
    let g = Gpu::new(kind, mode);
    let spec = g.pipeline(
        &format!(r#"{{ mode = "submit", worker = "{kind}", jobs = "2"{extra} }}"#),
        Some(&format!(r#"{{ worker = "{kind}", max_jobs = 2 }}"#)),
        r#"["out"]"#,
    );
    let (run, json) = g.run(&spec);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let train = step(&json, "train");
    let jobs = jobs(train);
    assert_eq!(jobs.len(), 2, "{train:#}");
    assert_eq!(jobs[0]["id"], "j1");
    assert_eq!(jobs[0]["state"], state, "{:#}", jobs[0]);
    assert_eq!(jobs[1]["state"], "succeeded", "{:#}", jobs[1]);
    assert_eq!(jobs[1]["outputs"]["model"]["size"], 33);
    // The misbehaving worker was killed; a fresh one ran the second job.
    assert_ne!(jobs[0]["worker_instance"], jobs[1]["worker_instance"]);
    assert_eq!(g.spawns(), 2);
    assert_eq!(step(&json, "after")["status"], "succeeded");
    (jobs[0].clone(), g)
}

#[test]
fn cpu_worker_trains_the_example_pipeline_reproducibly_and_evaluate_scores_it() {
    let sb = Sandbox::new();
    let spec = repo().join("examples/pipelines/tabular-gpu.toml");
    let run = |args: &[&str]| {
        let home = sb.home();
        let mut full = vec!["run", spec.to_str().unwrap(), "--json", "--no-cache"];
        full.extend(args);
        full.extend(["--home", home.to_str().unwrap()]);
        let r = sb.sluice_env(&full, &[NO_NVML]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        r.json()
    };
    let first = run(&[]);
    let second = run(&[]);
    let model = |j: &Value| step(j, "train")["outputs"]["model"]["digest"].clone();
    assert!(model(&first).as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        model(&first),
        model(&second),
        "the CPU worker is deterministic"
    );
    let train = step(&first, "train");
    let gpu = &train["gpu"];
    assert_eq!(gpu["available"], false);
    assert!(
        gpu["reason"].as_str().unwrap().starts_with(
            "gpu telemetry unavailable: NVML (/nonexistent/libnvidia-ml.so.1) could not be loaded"
        ),
        "{gpu:#}"
    );
    let job = &jobs(train)[0];
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(
        (&job["worker"], &job["op"]),
        (&"cpu".into(), &"train-mlp".into())
    );
    assert!(
        job["device"].as_str().unwrap().starts_with("cpu: "),
        "{job:#}"
    );
    assert_eq!(job["hello"]["versions"]["sluice-cpu-worker"], "0.1.0");
    // The step published the worker's output: same blob, no copy.
    assert_eq!(job["outputs"]["model"]["digest"], model(&first));
    assert!(job["dispatch_us"].as_u64().unwrap() > 0);
    assert!(
        job.get("usage").is_none() && job.get("mfu").is_none(),
        "{job:#}"
    );
    assert!(job["spec_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        train["metrics"]["train_accuracy"].as_f64().map(|a| a > 0.9),
        Some(true)
    );
    let evaluate = step(&first, "evaluate");
    assert_eq!(evaluate["status"], "succeeded");
    assert!(
        evaluate["metrics"]["accuracy"].as_f64().unwrap() >= 0.9,
        "{evaluate:#}"
    );
    assert_eq!(step(&first, "push")["metrics"]["pushed"], 1.0);
}

#[test]
fn without_nvml_the_table_shows_gpu_columns_as_unavailable_and_the_run_succeeds() {
    let g = Gpu::new("fake", "good");
    let spec = g.pipeline(
        r#"{ mode = "submit", worker = "fake" }"#,
        Some(r#"{ worker = "fake" }"#),
        r#"["out"]"#,
    );
    let run = g.sluice_with_workers(&["run", spec.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let header = run.stdout.lines().find(|l| l.starts_with("STEP")).unwrap();
    assert!(
        header.ends_with("   GPU UTIL  MEM UTIL  FB MAX  SM ACT"),
        "{header}"
    );
    // The last four cells of a row are the gpu columns.
    let gpu_cells = |prefix: &str| -> Vec<String> {
        let line = run.stdout.lines().find(|l| l.starts_with(prefix)).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        words[words.len() - 4..]
            .iter()
            .map(|w| w.to_string())
            .collect()
    };
    assert_eq!(gpu_cells("train "), ["unavailable", "-", "-", "-"]);
    assert_eq!(gpu_cells("after "), ["-", "-", "-", "-"]);
    assert!(
        run.stdout
            .contains("  train: gpu job j1 train-mlp on cpu: bash succeeded in "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  train: gpu telemetry unavailable: NVML (/nonexistent/libnvidia-ml.so.1) could not be loaded"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_step_without_a_gpu_grant_is_denied() {
    let g = Gpu::new("fake", "good");
    let spec = g.pipeline(
        r#"{ mode = "submit", worker = "fake" }"#,
        None,
        r#"["out"]"#,
    );
    let (run, json) = g.run(&spec);
    assert_eq!(run.code, 1);
    let train = step(&json, "train");
    assert_eq!(train["error"]["class"], "step");
    assert!(
        message(&train["error"]).contains(
            "step `train` has no gpu grant; add `gpu = { worker = \"fake\" }` to [steps.train] to submit `train-mlp` jobs"
        ),
        "{train:#}"
    );
    assert!(train.get("gpu").is_none());
    assert_eq!(g.spawns(), 0);
}

#[test]
fn submits_beyond_max_jobs_hit_the_quota_and_other_workers_are_denied() {
    let g = Gpu::new("fake", "good");
    let spec = g.pipeline(
        r#"{ mode = "burst", worker = "fake", jobs = "2" }"#,
        Some(r#"{ worker = "fake", max_jobs = 1 }"#),
        r#"["out"]"#,
    );
    let (run, json) = g.run(&spec);
    assert_eq!(run.code, 1);
    let train = step(&json, "train");
    assert!(
        message(&train["error"]).contains(
            "step `train` already submitted 1 gpu job; its grant allows max_jobs = 1 per attempt"
        ),
        "{train:#}"
    );
    assert_eq!(jobs(train).len(), 1);

    let spec = g.pipeline(
        r#"{ mode = "submit", worker = "cpu" }"#,
        Some(r#"{ worker = "fake" }"#),
        r#"["out"]"#,
    );
    let (_, json) = g.run(&spec);
    let train = step(&json, "train");
    assert!(
        message(&train["error"]).contains("step `train` is granted gpu worker `fake`, not `cpu`"),
        "{train:#}"
    );
    assert_eq!(jobs(train).len(), 0);
}

#[test]
fn a_worker_crash_fails_its_job_and_a_respawned_worker_runs_the_next() {
    let (j1, g) = first_job_misbehaves("flaky", "crash", "failed", "");
    assert_eq!(
        message(&j1),
        "worker `flaky` exited (status 3) during job j1; its stderr ends: dying now"
    );
    // The job log (stderr, capped) is in the store.
    assert_eq!(g.cat(&j1["log"]), "dying now\n");
}

#[test]
fn a_hung_worker_is_killed_at_the_job_deadline() {
    let (j1, _) = first_job_misbehaves("slow", "hang", "timed-out", r#", timeout_ms = "300""#);
    assert_eq!(
        message(&j1),
        "job j1 ran past its deadline of 300 ms; worker `slow` was killed and is respawned for the next job"
    );
    assert!(j1["wall_ms"].as_u64().unwrap() >= 300, "{j1:#}");
    assert_eq!(j1["spec"]["timeout_ms"], 300);
}

#[test]
fn a_malformed_protocol_line_fails_the_job_and_the_engine_carries_on() {
    let (j1, _) = first_job_misbehaves("garbled", "malformed", "failed", "");
    let m = message(&j1);
    assert!(
        m.starts_with("worker `garbled` sent a malformed line during job j1: not a JSON line ("),
        "{m}"
    );
    assert!(
        m.ends_with(
            "): \"this is not json\"; the worker was killed and is respawned for the next job"
        ),
        "{m}"
    );
    let (j1, _) = first_job_misbehaves("confused", "wrong-id", "failed", "");
    assert_eq!(
        message(&j1),
        "worker `confused` sent a malformed line during job j1: a result line for job \"j999\", not j1; the worker was killed and is respawned for the next job"
    );
}

#[test]
fn an_output_whose_bytes_do_not_match_the_reported_digest_is_rejected() {
    // A worker that claims outputs it did not write is not trusted again.
    let (j1, g) = first_job_misbehaves("liar", "mismatch", "failed", "");
    let reported = sluice_engine::digest::Digest::of(b"other bytes");
    let actual = sluice_engine::digest::Digest::of(b"real bytes");
    assert_eq!(
        message(&j1),
        format!(
            "job j1: output `model`: worker reported {reported} but the file hashes to {actual}; outputs rejected; worker `liar` was killed and is respawned for the next job"
        )
    );
    assert_eq!(j1["outputs"], serde_json::json!({}));
    // Rejected bytes never enter the store.
    let hex = actual.hex();
    assert!(
        !g.sb
            .home()
            .join("store/sha256")
            .join(&hex[..2])
            .join(&hex[2..])
            .exists()
    );
}

#[test]
fn dropping_a_running_job_handle_cancels_the_job() {
    let g = Gpu::new("patient", "cancel");
    let spec = g.pipeline(
        r#"{ mode = "drop", worker = "patient" }"#,
        Some(r#"{ worker = "patient" }"#),
        r#"["out"]"#,
    );
    let (run, json) = g.run(&spec);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let train = step(&json, "train");
    let j1 = &jobs(train)[0];
    assert_eq!(j1["state"], "cancelled", "{j1:#}");
    assert_eq!(message(j1), "job j1 was cancelled: stopped on request");
    assert_eq!(g.cat(&j1["log"]), "cancel received for j1\n");
    assert_eq!(
        g.cat(&train["outputs"]["out"]["digest"]),
        "j1 running dropped\n"
    );
}

#[test]
fn a_job_asking_for_a_gpu_fails_clearly_on_a_cuda_worker_when_none_is_visible() {
    let g = Gpu::new("cudaonly", "cuda");
    let spec = g.pipeline(
        r#"{ mode = "submit", worker = "cudaonly", gpus = "1" }"#,
        Some(r#"{ worker = "cudaonly" }"#),
        r#"["out"]"#,
    );
    let (run, json) = g.run(&spec);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let j1 = &jobs(step(&json, "train"))[0];
    assert_eq!(j1["state"], "failed");
    let m = message(j1);
    assert!(
        m.starts_with("job j1 asks for 1 GPU but none is visible (NVML (/nonexistent/libnvidia-ml.so.1) could not be loaded: "),
        "{m}"
    );
    assert!(m.ends_with("); worker `cudaonly` computes on CUDA"), "{m}");
    assert_eq!(j1["device"], "cuda: bash");
    assert!(
        j1.get("dispatch_us").is_none(),
        "no run line was sent: {j1:#}"
    );
}

#[test]
fn publishing_an_artifact_that_no_gpu_job_produced_is_denied() {
    let g = Gpu::new("fake", "good");
    let spec = g.pipeline(
        r#"{ mode = "forge" }"#,
        Some(r#"{ worker = "fake" }"#),
        r#"["out", "model"]"#,
    );
    let (_, json) = g.run(&spec);
    let train = step(&json, "train");
    let m = message(&train["error"]);
    assert!(
        m.contains("step `train` cannot publish \"train\" (sha256:")
            && m.contains(") as output `model`: it is not an output of a gpu job of this attempt that succeeded"),
        "{m}"
    );
}

#[test]
fn replay_answers_gpu_jobs_from_the_record_and_rerun_gpu_compares_bitwise() {
    let g = Gpu::new("fake", "good");
    let spec = g.pipeline(
        r#"{ mode = "submit", worker = "fake", publish = "true" }"#,
        Some(r#"{ worker = "fake" }"#),
        r#"["out", "model"]"#,
    );
    let (run, json) = g.run(&spec);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let run_id = json["run_id"].as_str().unwrap().to_string();
    let job = &jobs(step(&json, "train"))[0];
    assert_eq!(
        step(&json, "train")["outputs"]["model"]["digest"],
        job["outputs"]["model"]["digest"]
    );
    assert_eq!(g.spawns(), 1);

    // The record holds the job: spec digest, result digests, hello, usage.
    let record =
        std::fs::read_to_string(g.sb.home().join("runs").join(&run_id).join("record.jsonl"))
            .unwrap();
    let event: Value = record
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "gpu-job")
        .expect("a gpu-job event");
    assert_eq!(event["step"], "train");
    assert_eq!(event["job"]["spec_digest"], job["spec_digest"]);
    assert_eq!(event["job"]["outputs"], job["outputs"]);
    assert_eq!(event["job"]["hello"]["versions"]["fake"], "1.0");
    assert_eq!(event["job"]["fingerprint"], job["fingerprint"]);
    let verify = g.sluice(&["verify", &run_id]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);

    let replay = g.sluice_with_workers(&["replay", &run_id, "--json"]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);
    let report = replay.json();
    assert_eq!(report["verdict"], "identical");
    assert_eq!(report["gpu_mode"], "recorded");
    assert_eq!(report["workers_started"], 0);
    let train = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "train")
        .unwrap();
    assert_eq!(train["gpu"][0]["from_record"], true);
    assert_eq!(train["gpu"][0]["job"], "j1");
    assert_eq!(g.spawns(), 1, "a replay from the record starts no worker");

    // A cached rerun executes nothing but still records the jobs that made
    // its outputs, so it replays from its own record too.
    let (_, cached) = g.run(&spec);
    assert_eq!(step(&cached, "train")["status"], "cached");
    let cached_id = cached["run_id"].as_str().unwrap();
    let replay = g.sluice_with_workers(&["replay", cached_id, "--json"]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);
    assert_eq!(replay.json()["verdict"], "identical");
    assert_eq!(g.spawns(), 1);

    let rerun = g.sluice_with_workers(&["replay", &run_id, "--json", "--rerun-gpu"]);
    assert_eq!(rerun.code, 0, "{}\n{}", rerun.stdout, rerun.stderr);
    let report = rerun.json();
    assert_eq!(report["verdict"], "identical");
    assert_eq!(report["gpu_mode"], "rerun");
    assert_eq!(report["workers_started"], 1);
    let train = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "train")
        .unwrap();
    let comparison = &train["gpu"][0]["comparison"];
    assert_eq!(comparison["method"], "bitwise");
    assert_eq!(comparison["matched"], true);
    assert_eq!(g.spawns(), 2);
}

#[test]
fn gpu_grants_are_validated_with_positions_and_interpolated_from_params() {
    let g = Gpu::new("fake", "good");
    let bad = g.sb.write(
        "bad.toml",
        &format!(
            r#"name = "p"
[params]
worker = "cpu"
[steps.a]
component = {c}
gpu = {{ worker = "${{params.worker}}", max_jobs = "4", gpus = 2 }}
[steps.b]
component = {c}
gpu = {{ max_jobs = 0 }}
[steps.c]
component = {c}
gpu = "cpu"
"#,
            c = toml_path(&component("gpu-abuse"))
        ),
    );
    let run =
        g.sb.sluice_raw(&["validate", bad.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 2);
    let errors: Vec<String> = run.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}: {}",
                e["line"],
                e["column"],
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            "6:49: step `a` gpu `max_jobs` must be an integer, found string",
            "6:54: unknown field `gpus` in step `a` gpu; expected one of: worker, max_jobs, min_free_memory_mib",
            "9:7: step `b` gpu: missing required field `worker`",
            "9:20: step `b` gpu `max_jobs` must be at least 1",
            "12:7: step `c` gpu must be a table, found string",
        ]
    );
    let good = g.sb.write(
        "good.toml",
        &format!(
            "name = \"p\"\n[params]\nworker = \"cpu\"\n[steps.a]\ncomponent = {}\ngpu = {{ worker = \"${{params.worker}}\" }}\n",
            toml_path(&component("gpu-abuse"))
        ),
    );
    let ok =
        g.sb.sluice_raw(&["validate", good.to_str().unwrap(), "--param", "worker=../x"]);
    assert_eq!(ok.code, 2);
    assert!(
        ok.stderr
            .contains("step `a` gpu `worker`: \"../x\" is not a worker kind"),
        "{}",
        ok.stderr
    );
}

#[test]
fn a_bad_worker_config_is_refused_before_anything_runs() {
    let g = Gpu::new("fake", "good");
    let spec = g.pipeline(
        r#"{ mode = "submit", worker = "fake" }"#,
        Some(r#"{ worker = "fake" }"#),
        r#"["out"]"#,
    );
    let config = g.sb.write(
        "bad-config.toml",
        "[workers.fake]\ncommand = \"/bin/true\"\nargz = [\"-v\"]\n",
    );
    let run = g.sluice(&[
        "run",
        spec.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "error: {}:3:1: unknown key `argz` in [workers.fake]; expected one of: command, args, env, hello_timeout_s",
            config.display()
        )
    );
    assert!(!g.sb.home().join("runs").exists());
}

#[test]
fn a_well_behaved_worker_stays_warm_between_jobs() {
    let g = Gpu::new("steady", "good");
    let spec = g.pipeline(
        r#"{ mode = "submit", worker = "steady", jobs = "2" }"#,
        Some(r#"{ worker = "steady", max_jobs = 2 }"#),
        r#"["out"]"#,
    );
    let (run, json) = g.run(&spec);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let jobs = jobs(step(&json, "train"));
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:#?}");
    assert_eq!(jobs[0]["warm"], false);
    assert_eq!(jobs[1]["warm"], true);
    assert_eq!(jobs[0]["worker_instance"], jobs[1]["worker_instance"]);
    assert_eq!(g.spawns(), 1);
}
