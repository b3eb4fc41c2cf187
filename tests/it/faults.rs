//! Nothing hangs vigil. A failure injected into each stage and each output kind (`VIGIL_FAULT`, an
//! error and a panic variant), a stalled stage, an output nobody reads, a full disk: every run ends
//! by itself, exits 1, names what failed, leaves whole JSONL lines and playable MP4s, and the
//! outputs that did not depend on the failure finish the run.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{
    asset, decode_count, free_port, heavy, model, output_within, records, vigil, wait_exit,
};

/// Frames of vtest.avi each run decodes, and the frame the fault is injected at.
const FRAMES: u64 = 30;
const AT: u64 = 12;

/// A pipeline on the first `FRAMES` frames of vtest.avi with an MP4 and a JSONL output (plus
/// `extra_outputs`, YAML list items) and `queues` settings.
fn pipeline_file(dir: &Path, queues: &str, extra_outputs: &str) -> PathBuf {
    let y = format!(
        "name: faults\nsources:\n  - id: vtest\n    uri: file:{}\n    max_frames: {FRAMES}\n\
         detector:\n  model: {}\nqueues: {{ {queues} }}\noutputs:\n\
         \x20 - {{ kind: mp4, path: \"out/{{source}}.mp4\" }}\n\
         \x20 - {{ kind: jsonl, path: \"out/{{source}}.jsonl\" }}\n{extra_outputs}",
        asset("vtest.avi").display(),
        model().display()
    );
    let p = dir.join("faults.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

/// `vigil run` with `VIGIL_FAULT=fault`; returns stderr. Fails if the run takes over 15 s or does
/// not exit 1.
fn run_with_fault(dir: &Path, fault: &str, extra_outputs: &str) -> String {
    let p = pipeline_file(dir, "capacity: 4", extra_outputs);
    let (out, took) = output_within(
        vigil().arg("run").arg(&p).env("VIGIL_FAULT", fault),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{fault}: {stderr}");
    assert!(
        took < Duration::from_secs(15),
        "{fault}: took {took:?}: {stderr}"
    );
    stderr
}

/// Frames in the run's MP4 (decoded by vigil's own ingest: the file has its index and plays).
fn mp4_frames(dir: &Path) -> u64 {
    let p = dir.join("out/vtest.mp4");
    if !p.exists() {
        return 0;
    }
    decode_count(&p).0
}

fn jsonl_records(dir: &Path) -> u64 {
    records(&dir.join("out/vtest.jsonl")).len() as u64
}

/// A failing inner stage (or source) ends the run: the error names it, JSONL and MP4 hold exactly
/// the frames that got through before it, whole and playable.
fn inner_stage_fault(stage: &str, names: &str) {
    let _heavy = heavy();
    for kind in ["error", "panic"] {
        let dir = tempfile::tempdir().unwrap();
        let stderr = run_with_fault(dir.path(), &format!("{stage}@{AT}:{kind}"), "");
        assert!(stderr.contains(names), "{stage} {kind}: {stderr}");
        if kind == "panic" {
            assert!(stderr.contains("panicked"), "{stage} {kind}: {stderr}");
        }
        let n = jsonl_records(dir.path());
        assert!(n <= AT, "{stage} {kind}: {n} records, fault at {AT}");
        let m = mp4_frames(dir.path());
        assert_eq!(m, n, "{stage} {kind}: MP4 frames = JSONL records");
    }
}

#[test]
fn failing_ingest_names_its_source_and_keeps_what_decoded() {
    inner_stage_fault("ingest", "source `vtest`");
}

#[test]
fn failing_preprocess_ends_the_run_naming_it() {
    inner_stage_fault("preprocess", "preprocess[vtest] failed");
}

#[test]
fn failing_detector_ends_the_run_naming_it() {
    inner_stage_fault("detect", "detect failed");
}

#[test]
fn failing_tracker_ends_the_run_naming_it() {
    inner_stage_fault("track", "track[vtest] failed");
}

/// A failing output stops alone: it is named, keeps what it wrote before the failure, and the
/// other outputs write every frame.
fn output_fault(kind: &str, extra: &str, check: impl Fn(&Path)) {
    let _heavy = heavy();
    for how in ["error", "panic"] {
        let dir = tempfile::tempdir().unwrap();
        let extra = extra.replace("DIR", &dir.path().display().to_string());
        let stderr = run_with_fault(dir.path(), &format!("{kind}@{AT}:{how}"), &extra);
        assert!(
            stderr.contains(&format!("error: output {kind} ")) && stderr.contains("failed"),
            "{kind} {how}: {stderr}"
        );
        check(dir.path());
    }
}

#[test]
fn failing_jsonl_output_stops_alone() {
    output_fault("jsonl", "", |dir| {
        assert_eq!(jsonl_records(dir), AT, "JSONL up to the failure, whole");
        assert_eq!(mp4_frames(dir), FRAMES, "the MP4 finished the run");
    });
}

#[test]
fn failing_mp4_output_stops_alone_and_stays_playable() {
    output_fault("mp4", "", |dir| {
        assert_eq!(mp4_frames(dir), AT, "MP4 finalized at the failure");
        assert_eq!(jsonl_records(dir), FRAMES, "the JSONL finished the run");
    });
}

#[test]
fn failing_mqtt_output_stops_alone() {
    // No broker: records wait in the outbox; the fault fires on the write.
    let extra = format!(
        "  - {{ kind: mqtt, broker: \"127.0.0.1:{}\", topic: t, outbox: DIR/outbox, drain: 1s }}\n",
        free_port()
    );
    output_fault("mqtt", &extra, |dir| {
        assert_eq!(jsonl_records(dir), FRAMES);
        assert_eq!(mp4_frames(dir), FRAMES);
    });
}

#[test]
fn failing_rtsp_output_stops_alone() {
    let extra = format!("  - {{ kind: rtsp, port: {} }}\n", free_port());
    output_fault("rtsp", &extra, |dir| {
        assert_eq!(jsonl_records(dir), FRAMES);
        assert_eq!(mp4_frames(dir), FRAMES);
    });
}

/// A stage that stops making progress (stuck in a call) is found by the stall watchdog and the
/// run ends: named, exit 1, outputs whole.
#[test]
fn stalled_detector_is_named_and_the_run_ends() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline_file(dir.path(), "capacity: 4, stall_timeout: 2s", "");
    let (out, took) = output_within(
        vigil()
            .arg("run")
            .arg(&p)
            .env("VIGIL_FAULT", format!("detect@{AT}:stall")),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("detect stalled"), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let n = jsonl_records(dir.path());
    assert!(n <= AT, "{n} records");
    assert_eq!(mp4_frames(dir.path()), n);
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success(), "mkfifo {}", path.display());
}

/// A pipeline on all of vtest.avi whose JSONL output is a FIFO nobody reads (`open` blocks for
/// ever), beside an MP4.
fn fifo_pipeline(dir: &Path, stall_timeout: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("out")).unwrap();
    mkfifo(&dir.join("out/vtest.jsonl"));
    let y = format!(
        "name: fifo\nsources:\n  - id: vtest\n    uri: file:{}\n    max_frames: 150\n\
         detector:\n  model: {}\nqueues: {{ capacity: 4, stall_timeout: {stall_timeout} }}\noutputs:\n\
         \x20 - {{ kind: mp4, path: \"out/{{source}}.mp4\" }}\n\
         \x20 - {{ kind: jsonl, path: \"out/{{source}}.jsonl\" }}\n",
        asset("vtest.avi").display(),
        model().display()
    );
    let p = dir.join("fifo.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

/// Start `vigil run`; a thread forwards stderr lines with the time each arrived.
fn spawn_logged(
    p: &Path,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<(Instant, String)>,
) {
    let mut child = vigil()
        .arg("run")
        .arg(p)
        .arg("--drain-timeout")
        .arg("3s")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send((Instant::now(), line));
        }
    });
    (child, rx)
}

/// An output nobody reads (JSONL into a FIFO) is reported stalled within `stall_timeout` + 5 s,
/// and the MP4 beside it still gets every frame.
#[test]
fn output_into_a_fifo_nobody_reads_is_reported_stalled() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = fifo_pipeline(dir.path(), "3s");
    let started = Instant::now();
    let (mut child, lines) = spawn_logged(&p);
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let log: Vec<(Instant, String)> = lines.try_iter().collect();
    let text: Vec<&str> = log.iter().map(|(_, l)| l.as_str()).collect();
    let stalled = log
        .iter()
        .find(|(_, l)| l.contains("output jsonl") && l.contains("stalled"))
        .unwrap_or_else(|| panic!("no stall reported:\n{}", text.join("\n")));
    let after = stalled.0.duration_since(started);
    assert!(
        after < Duration::from_secs(3 + 5),
        "reported after {after:?}"
    );
    assert_eq!(status.code(), Some(1), "{}", text.join("\n"));
    assert_eq!(mp4_frames(dir.path()), 150, "the MP4 got every frame");
}

/// SIGTERM while an output is stuck: vigil drains for at most `--drain-timeout` (3 s), finalizes
/// the MP4 and exits 1 naming what did not drain, within the deadline + 2 s.
#[test]
fn sigterm_with_a_stalled_output_exits_within_the_drain_deadline() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = fifo_pipeline(dir.path(), "10m");
    let (mut child, lines) = spawn_logged(&p);
    let mp4 = dir.path().join("out/vtest.mp4");
    let until = Instant::now() + Duration::from_secs(60);
    // running: the MP4 encoder has started
    while !lines
        .try_iter()
        .any(|(_, l)| l.contains("mp4 encoder started"))
    {
        assert!(Instant::now() < until, "never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let term = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let took = term.elapsed();
    let text: Vec<String> = lines.try_iter().map(|(_, l)| l).collect();
    assert!(
        took < Duration::from_secs(3 + 2),
        "exit {took:?} after SIGTERM"
    );
    assert_eq!(status.code(), Some(1), "{}", text.join("\n"));
    assert!(
        text.iter()
            .any(|l| l.contains("did not drain") && l.contains("output jsonl")),
        "{}",
        text.join("\n")
    );
    assert!(decode_count(&mp4).0 > 0, "the MP4 was finalized");
}

/// JSONL into `/dev/full`: the write error names the output; the MP4 finishes every frame.
#[test]
fn disk_full_jsonl_names_the_output_and_the_mp4_finishes() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let y = format!(
        "name: full\nsources:\n  - id: vtest\n    uri: file:{}\n    max_frames: {FRAMES}\n\
         detector:\n  model: {}\noutputs:\n\
         \x20 - {{ kind: mp4, path: \"out/{{source}}.mp4\" }}\n\
         \x20 - {{ kind: jsonl, path: /dev/full }}\n",
        asset("vtest.avi").display(),
        model().display()
    );
    let p = dir.path().join("full.yaml");
    std::fs::write(&p, y).unwrap();
    let (out, _) = output_within(vigil().arg("run").arg(&p), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("output jsonl /dev/full failed") && stderr.contains("No space left"),
        "{stderr}"
    );
    assert_eq!(mp4_frames(dir.path()), FRAMES);
}

/// A small tmpfs for the MP4 and the MQTT outbox (as root; skipped with a message otherwise): each
/// full-disk error names its output, the JSONL elsewhere holds every frame, whole.
#[test]
fn disk_full_mp4_and_outbox_on_a_small_tmpfs() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED disk_full_mp4_and_outbox_on_a_small_tmpfs: cannot mount a tmpfs (needs root)"
        );
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let y = format!(
        "name: small\nsources:\n  - id: vtest\n    uri: file:{}\n    max_frames: 120\n\
         detector:\n  model: {}\noutputs:\n\
         \x20 - {{ kind: mp4, path: \"{}/{{source}}.mp4\", bitrate_kbps: 8000 }}\n\
         \x20 - {{ kind: jsonl, path: \"out/{{source}}.jsonl\" }}\n\
         \x20 - {{ kind: mqtt, broker: \"127.0.0.1:{}\", topic: t, outbox: {}/outbox, outbox_max: 1MiB, drain: 1s }}\n",
        asset("vtest.avi").display(),
        model().display(),
        small.display(),
        free_port(),
        small.display()
    );
    let p = dir.path().join("small.yaml");
    std::fs::write(&p, y).unwrap();
    let (out, _) = output_within(vigil().arg("run").arg(&p), Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: output mp4 "), "{stderr}");
    assert!(stderr.contains("error: output mqtt "), "{stderr}");
    assert_eq!(
        jsonl_records(dir.path()),
        120,
        "JSONL elsewhere: every frame"
    );
}
