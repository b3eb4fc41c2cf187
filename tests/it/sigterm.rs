//! SIGTERM halfway through a file: vigil stops at the source, drains every stage and finalizes
//! its outputs, then exits 0.

use std::time::{Duration, Instant};

use super::common::{asset, decode_count, pipeline, records, vigil};

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn sigterm_mid_run_exits_0_with_playable_mp4_and_whole_jsonl_lines() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &[("vtest", &asset("vtest.avi"))], "");
    let mut child = vigil()
        .arg("run")
        .arg(&p)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let jsonl = dir.path().join("out/vtest.jsonl");
    let deadline = Instant::now() + Duration::from_secs(900);
    while lines(&jsonl) < 400 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "vigil ended before the signal"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(stderr.contains("stopped by signal"), "{stderr}");

    let recs = records(&jsonl);
    assert!(
        recs.len() >= 400 && recs.len() < 795,
        "{} records",
        recs.len()
    );
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64, "records in order, none missing");
    }
    // Every frame that reached the JSONL also reached the MP4, and the MP4 has its index.
    let (frames, _, _) = decode_count(&dir.path().join("out/vtest.mp4"));
    assert!(
        frames.abs_diff(recs.len() as u64) <= 1,
        "{frames} MP4 frames vs {} records",
        recs.len()
    );
}
