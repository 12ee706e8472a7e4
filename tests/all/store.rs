//! Store integrity (HOSTILE.md group 11).

use crate::harness::{Sandbox, component, step, toml_path};

#[test]
fn corrupted_blob_is_never_served_and_a_rerun_heals_it() {
    let sb = Sandbox::new();
    sb.write("in.txt", "payload\n");
    let spec = sb.write(
        "p.toml",
        &format!(
            "name = \"c\"\n[sources]\nt = \"in.txt\"\n[steps.a]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"tail\" }}\noutputs = [\"out\"]\n",
            toml_path(&component("append"))
        ),
    );
    let (_, json) = sb.run_json(&spec, &[]);
    let digest = step(&json, "a")["outputs"]["out"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = sb
        .home()
        .join("store/sha256")
        .join(&hex[..2])
        .join(&hex[2..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();

    let cat = sb.sluice(&["artifact", "cat", &digest]);
    assert_eq!(cat.code, 2);
    assert_eq!(cat.stdout, "", "corrupted bytes were served");
    assert!(
        cat.stderr
            .contains(&format!("artifact {digest} is corrupted in the store")),
        "{}",
        cat.stderr
    );

    // The cache entry now points at a missing blob: the step re-executes
    // and rewrites the same bytes.
    let (_, again) = sb.run_json(&spec, &[]);
    assert_eq!(step(&again, "a")["status"], "succeeded");
    assert_eq!(
        step(&again, "a")["outputs"]["out"]["digest"],
        digest.as_str()
    );
    let cat = sb.sluice(&["artifact", "cat", &digest]);
    assert_eq!(cat.code, 0, "{}", cat.stderr);
    assert_eq!(cat.stdout, "payload\ntail\n");
}

#[test]
fn unknown_and_malformed_digests_are_named() {
    let sb = Sandbox::new();
    let missing = format!("sha256:{}", "ab".repeat(32));
    let run = sb.sluice(&["artifact", "cat", &missing]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(&format!("artifact {missing} is not in the store")),
        "{}",
        run.stderr
    );
    let run = sb.sluice(&["artifact", "cat", "sha256:../../etc/passwd"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("invalid digest"), "{}", run.stderr);
}

/// A blob corrupted on disk between runs is caught by the next run that
/// reads it, even though that run never rewrites it: re-importing an
/// unchanged source finds the blob already present, and the importing
/// process's verified-on-write index must not vouch for a file it did not
/// write. The step fails naming its input, as the store's error, records no
/// output, and the blob is quarantined; the run after that heals it.
#[test]
fn a_corrupted_source_blob_fails_the_step_that_reads_it_and_is_healed_next_run() {
    use sha2::Digest as _;
    let sb = Sandbox::new();
    sb.write("in.txt", "payload\n");
    let spec = |tail: &str| {
        sb.write(
            "p.toml",
            &format!(
                "name = \"c\"\n[sources]\nt = \"in.txt\"\n\
                 [steps.a]\ncomponent = {}\ninputs = {{ in = \"sources.t\" }}\nparams = {{ line = \"{tail}\" }}\noutputs = [\"out\"]\n",
                toml_path(&component("append"))
            ),
        )
    };
    let (_, json) = sb.run_json(&spec("a"), &[]);
    assert_eq!(step(&json, "a")["status"], "succeeded", "{json:#}");
    let hex = hex::encode(sha2::Sha256::digest(b"payload\n"));
    let digest = format!("sha256:{hex}");
    let blob = sb
        .home()
        .join("store/sha256")
        .join(&hex[..2])
        .join(&hex[2..]);
    assert_eq!(std::fs::read(&blob).unwrap(), b"payload\n");
    std::fs::write(&blob, "pAyload\n").unwrap();

    // A new param: `a` runs, and reads the source's (corrupted) blob.
    let (run, json) = sb.run_json(&spec("b"), &[]);
    assert_eq!(run.code, 1, "{json:#}");
    let a = step(&json, "a");
    assert_eq!(a["status"], "failed", "{json:#}");
    assert_eq!(a["error"]["class"], "engine", "{a:#}");
    let message = a["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "input `in`: artifact {digest} is corrupted in the store"
        )),
        "{message}"
    );
    assert!(
        a["outputs"].as_object().is_none_or(|o| o.is_empty()),
        "{a:#}"
    );
    assert!(!blob.exists(), "the corrupted blob is quarantined");

    // The next run imports the source again, and succeeds.
    let (run, json) = sb.run_json(&spec("b"), &[]);
    assert_eq!(run.code, 0, "{json:#}");
    assert_eq!(std::fs::read(&blob).unwrap(), b"payload\n");
}
