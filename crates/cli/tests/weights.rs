//! `zero2048 weights` against real stored revisions.

use std::process::{Command, Output};

use bytes::Bytes;
use time::OffsetDateTime;
use zero2048_storage::{Config, LatestExtra, StorageAdapter, WeightsData};

fn zero2048(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zero2048"))
        .args(args)
        .env_remove("R2_ACCESS_KEY")
        .env_remove("R2_SECRET_KEY")
        .env_remove("R2_ENDPOINT")
        .output()
        .unwrap()
}

fn publish(dir: &std::path::Path, revisions: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = Config::default();
        config.storage.weights_dir = dir.to_path_buf();
        let adapter = StorageAdapter::from_config(&config).await.unwrap();
        for revision in 1..=revisions {
            let bytes = Bytes::from(vec![revision as u8; 1000 * revision as usize]);
            let deadline = OffsetDateTime::now_utc() + time::Duration::hours(1);
            adapter
                .publish(WeightsData::Bytes(bytes), revision, deadline, &LatestExtra::new())
                .await
                .unwrap();
        }
    });
}

#[test]
fn list_pull_and_verify_local_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("weights");
    publish(&weights, 3);
    let w = weights.to_str().unwrap();

    let listed = zero2048(&["weights", "list", "--weights-dir", w]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(text.lines().filter(|l| l.contains(".safetensors")).count(), 3, "{text}");
    assert!(text.lines().any(|l| l.contains("r000003-") && l.contains("← latest")), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&zero2048(&["weights", "list", "--json", "--weights-dir", w]).stdout).unwrap();
    assert_eq!(json["latest_revision"], 3);
    assert_eq!(json["revisions"][1]["size"], 2000);
    assert_eq!(json["storage"]["backend"], "local");

    let out = dir.path().join("pulled");
    let pulled = zero2048(&["weights", "pull", "2", "--output", out.to_str().unwrap(), "--weights-dir", w]);
    assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));
    let file = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("r000002-"))
        .unwrap();
    assert_eq!(std::fs::read(file).unwrap(), vec![2u8; 2000]);
    let missing = zero2048(&["weights", "pull", "9", "--weights-dir", w]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("revision 9 is not in storage"));

    let verified = zero2048(&["weights", "verify", "--weights-dir", w]);
    assert!(verified.status.success());
    assert!(String::from_utf8_lossy(&verified.stdout).contains("3 stored files verified"));

    // Flip one byte of revision 1: verify names the file and the check, and fails.
    let victim = std::fs::read_dir(&weights)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("r000001-")
                && p.extension().unwrap() == "safetensors"
        })
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[500] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let failed = zero2048(&["weights", "verify", "--weights-dir", w]);
    assert_eq!(failed.status.code(), Some(1));
    let report = String::from_utf8_lossy(&failed.stdout);
    assert!(
        report.contains("FAILED") && report.contains("r000001-") && report.contains("sha256 check failed"),
        "{report}"
    );
    assert!(String::from_utf8_lossy(&failed.stderr).contains("1 of 3 stored files failed verification"));
}

#[test]
fn r2_flags_reach_the_adapter_and_fall_back_loudly_without_printing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "flag-secret-value-987654";
    let output = zero2048(&[
        "weights",
        "list",
        "--weights-dir",
        dir.path().to_str().unwrap(),
        "--use-r2",
        "--r2-bucket=runs",
        "--r2-access-key=AKIAFLAGKEY",
        &format!("--r2-secret-key={secret}"),
        "--r2-endpoint=http://127.0.0.1:1",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unreachable") && stderr.contains("degraded"), "{stderr}");
    let everything = format!("{stderr}{}", String::from_utf8_lossy(&output.stdout));
    assert!(!everything.contains(secret) && !everything.contains("AKIAFLAGKEY"), "{everything}");

    // Missing settings are the user's to fix, not an outage to ride out: exit 2, naming each one.
    let incomplete =
        zero2048(&["weights", "list", "--weights-dir", dir.path().to_str().unwrap(), "--use-r2"]);
    let stderr = String::from_utf8_lossy(&incomplete.stderr);
    assert_eq!(incomplete.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing r2_bucket") && stderr.contains("r2_secret_key"), "{stderr}");
    let train = zero2048(&[
        "train",
        "--weights-dir",
        dir.path().join("w").to_str().unwrap(),
        "--db",
        dir.path().join("run.db").to_str().unwrap(),
        "--use-r2",
        "--r2-bucket=runs",
        "--games",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&train.stderr);
    assert_eq!(train.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing r2_access_key"), "{stderr}");
    assert!(!dir.path().join("run.db").exists(), "a refused start wrote the run database");
}

#[test]
fn a_bad_config_file_is_one_line_naming_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "storage:\n  weights_dir: w\n  use_r2: perhaps\n").unwrap();
    let output = zero2048(&["weights", "list", "--config", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.yaml:3:") && stderr.contains("storage.use_r2"), "{stderr}");
}

/// Publishes three small n-tuple networks (every weight of revision r is r) as revisions 1–3.
fn publish_networks(dir: &std::path::Path) {
    use zero2048_model::{NTupleConfig, NTupleNetwork, weights_file};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = Config::default();
        config.storage.weights_dir = dir.to_path_buf();
        let adapter = StorageAdapter::from_config(&config).await.unwrap();
        let files = tempfile::tempdir().unwrap();
        for revision in 1..=3u64 {
            let network = NTupleNetwork::zeroed(NTupleConfig::small_4x4()).unwrap();
            for table in network.tables() {
                table.fill(revision as f32);
            }
            let path = files.path().join(format!("{revision}.safetensors"));
            weights_file::save(&network, &path, revision, &Default::default()).unwrap();
            let deadline = OffsetDateTime::now_utc() + time::Duration::hours(1);
            adapter.publish(WeightsData::File(path), revision, deadline, &LatestExtra::new()).await.unwrap();
        }
    });
}

#[test]
fn average_writes_the_mean_of_the_newest_revisions_or_of_named_files() {
    use zero2048_model::weights_file;
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("weights");
    publish_networks(&weights);
    let w = weights.to_str().unwrap();
    let out = dir.path().join("average.safetensors");

    let last_two =
        ["weights", "average", "--last", "2", "--weights-dir", w, "--output", out.to_str().unwrap()];
    let averaged = zero2048(&last_two);
    assert!(averaged.status.success(), "{}", String::from_utf8_lossy(&averaged.stderr));
    assert!(String::from_utf8_lossy(&averaged.stdout).contains("revisions 2,3"));
    let (mean, info) = weights_file::load(&out, None).unwrap();
    assert_eq!((info.revision, info.extra[weights_file::AVERAGED_REVISIONS].as_str()), (3, "2,3"));
    assert!(mean.tables().iter().all(|t| t.iter().all(|v| v == 2.5)));

    // Named files need no storage.
    let stored: Vec<String> = std::fs::read_dir(&weights)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".safetensors"))
        .collect();
    let mut args = vec!["weights", "average", "--output", out.to_str().unwrap()];
    args.extend(stored.iter().map(String::as_str));
    let named = zero2048(&args);
    assert!(named.status.success(), "{}", String::from_utf8_lossy(&named.stderr));
    let (mean, _) = weights_file::load(&out, None).unwrap();
    assert!(mean.tables().iter().all(|t| t.iter().all(|v| v == 2.0)));

    // More revisions than stored: a usage error naming the count.
    let too_many =
        zero2048(&["weights", "average", "--last", "5", "--weights-dir", w, "--output", "x.safetensors"]);
    assert_eq!(too_many.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_many.stderr).contains("holds 3 revisions"));

    // A stored revision that no longer matches its hash is refused by name, and the output
    // keeps what it held.
    let victim = stored.iter().find(|p| p.contains("r000003-")).unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(victim, bytes).unwrap();
    let refused = zero2048(&last_two);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("r000003-"), "{message}");
    let (kept, _) = weights_file::load(&out, None).unwrap();
    assert!(kept.tables().iter().all(|t| t.iter().all(|v| v == 2.0)));
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".partial"))
            .count(),
        0
    );
}
