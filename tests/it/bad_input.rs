//! Broken inputs get a clear error naming their source; nothing panics, and what did decode is
//! still written.

use super::common::{asset, pipeline, records, vigil};

/// A truncated AVI and a file that is not video, in one pipeline: each error names its source, the
/// frames before the cut are finalized, and the process exits 1 without a panic.
#[test]
fn truncated_and_non_video_sources_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(asset("vtest.avi")).unwrap();
    let truncated = dir.path().join("cut.avi");
    std::fs::write(&truncated, &full[..400_000]).unwrap();
    let notvideo = dir.path().join("notes.mp4");
    std::fs::write(&notvideo, "shopping list: milk, eggs\n").unwrap();
    let p = pipeline(dir.path(), &[("cut", &truncated), ("notes", &notvideo)], "");

    let out = vigil().arg("run").arg(&p).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("error: source `cut`:") && stderr.contains("truncated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: source `notes`:")
            && stderr.contains("Could not determine type of stream"),
        "{stderr}"
    );

    let recs = records(&dir.path().join("out/cut.jsonl"));
    assert!(
        !recs.is_empty() && recs.len() < 795,
        "{} records before the cut",
        recs.len()
    );
    assert!(dir.path().join("out/cut.mp4").is_file());
    assert!(
        !dir.path().join("out/notes.mp4").exists(),
        "no empty MP4 for a source that never produced a frame"
    );
}

/// A missing source file is a config error with its place, before anything starts.
#[test]
fn missing_source_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &[("gone", &dir.path().join("nope.avi"))], "");
    let out = vigil().arg("run").arg(&p).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("pipeline.yaml:4:10: source `gone`: no such file"),
        "{stderr}"
    );
}

/// A live source that never sends a frame trips the stall watchdog (`stall: 1s`) and is reported
/// stalled, naming the source, instead of hanging the pipeline.
#[test]
fn silent_live_source_is_reported_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stall.yaml");
    std::fs::write(
        &p,
        format!(
            "name: stall\nsources:\n  - id: quiet\n    uri: udp://127.0.0.1:59998\n    stall: 1s\n    reconnect: {{ retries: 0 }}\ndetector:\n  model: {}\noutputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            super::common::model().display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = vigil().arg("run").arg(&p).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("source `quiet`") && stderr.contains("stalled"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}
