//! Live sources against a real RTSP server on 127.0.0.1 (gst-rtsp-server, in process): vigil
//! reconnects every time the server goes away, and a source that never connects fails on its own
//! without touching the others.

use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use super::common::{model, vigil};

/// An RTSP server serving a 320x240 10 fps H.264 test pattern at `/cam`, on its own main loop.
struct Server {
    port: u16,
    main_loop: glib::MainLoop,
    server: rtsp::RTSPServer,
    ctx: glib::MainContext,
    source: Option<glib::SourceId>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(port: u16) -> Server {
        Self::start_sized(port, 320, 240)
    }

    fn start_sized(port: u16, width: u32, height: u32) -> Server {
        gst::init().unwrap();
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(
            &format!(
                "( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=10/1 \
                 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 )"
            ),
        );
        factory.set_shared(true);
        server.mount_points().unwrap().add_factory("/cam", factory);
        let ctx = glib::MainContext::new();
        let source = server.attach(Some(&ctx)).unwrap();
        let port = server.bound_port() as u16;
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let ml = main_loop.clone();
        let loop_ctx = ctx.clone();
        let thread = std::thread::spawn(move || {
            loop_ctx.with_thread_default(|| ml.run()).unwrap();
        });
        Server {
            port,
            main_loop,
            server,
            ctx,
            source: Some(source),
            thread: Some(thread),
        }
    }

    /// Stop serving and drop every client session (what a camera reboot looks like).
    fn stop(mut self) {
        self.server
            .client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        // The listening socket's source lives in our own context: destroy it there.
        if let Some(src) = self
            .source
            .take()
            .and_then(|id| self.ctx.find_source_by_id(&id))
        {
            src.destroy();
        }
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Records captured after `t` (so not a backlog from before a restart).
fn captured_after(path: &Path, t: std::time::SystemTime) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<vigil::output::record::Record>(l).ok())
        .filter_map(|r| {
            r.captured_at
                .and_then(|c| humantime::parse_rfc3339(&c).ok())
        })
        .filter(|c| *c > t)
        .count()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server is stopped and restarted 10 times: each time frames resume within the backoff cap
/// (1 s) + 2 s (+ stream start-up), and vigil never exits.
#[test]
fn rtsp_camera_restarted_ten_times_is_reconnected_every_time() {
    let _heavy = super::common::heavy();
    let mut server = Server::start(0);
    let port = server.port;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cam.yaml");
    std::fs::write(
        &p,
        format!(
            "name: cam\nsources:\n  - id: cam\n    uri: rtsp://127.0.0.1:{port}/cam\n    transport: tcp\n    stall: 2s\n\
             \x20   reconnect: {{ initial: 200ms, max: 1s }}\ndetector:\n  model: {}\n\
             outputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            model().display()
        ),
    )
    .unwrap();
    let mut child = vigil()
        .arg("run")
        .arg(&p)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let jsonl = dir.path().join("out/cam.jsonl");
    wait_for("first frames", Duration::from_secs(30), || {
        lines(&jsonl) >= 5
    });
    for round in 0..10 {
        server.stop();
        std::thread::sleep(Duration::from_millis(700));
        server = Server::start(port);
        let restarted = std::time::SystemTime::now();
        let started = Instant::now();
        wait_for(
            &format!("frames after restart {round}"),
            Duration::from_secs(8),
            || captured_after(&jsonl, restarted) >= 3,
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "vigil exited during restart {round}"
        );
        eprintln!(
            "restart {round}: frames again after {:?}",
            started.elapsed()
        );
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.matches("reconnecting").count() >= 10, "{stderr}");
    server.stop();
}

/// A camera that never answers fails after its retry budget, while a test-pattern source in the
/// same pipeline keeps delivering frames.
#[test]
fn camera_that_never_connects_fails_alone() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("two.yaml");
    // port 9 (discard) on loopback: connection refused at once
    std::fs::write(
        &p,
        format!(
            "name: two\nsources:\n  - id: dead\n    uri: rtsp://127.0.0.1:9/none\n    reconnect: {{ initial: 100ms, max: 200ms, retries: 3 }}\n\
             \x20 - id: pattern\n    uri: test:ball?width=160&height=120&fps=10\n\
             detector:\n  model: {}\noutputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            model().display()
        ),
    )
    .unwrap();
    let child = vigil()
        .arg("run")
        .arg(&p)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pattern = dir.path().join("out/pattern.jsonl");
    wait_for("pattern frames", Duration::from_secs(30), || {
        lines(&pattern) >= 20
    });
    let at_20 = Instant::now();
    wait_for("more pattern frames", Duration::from_secs(30), || {
        lines(&pattern) >= 40
    });
    assert!(at_20.elapsed() < Duration::from_secs(20));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the dead camera is an error: {stderr}"
    );
    assert!(
        stderr.contains("error: source `dead`: failed after 4 attempts"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("source `pattern`") || !stderr.contains("error: source `pattern`"),
        "{stderr}"
    );
}

fn records(path: &Path) -> Vec<vigil::output::record::Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn captured(r: &vigil::output::record::Record) -> std::time::SystemTime {
    humantime::parse_rfc3339(r.captured_at.as_deref().unwrap()).unwrap()
}

/// The camera comes back at another resolution: boxes are in the new frame's pixels, and the MP4
/// output finishes the first file and continues in `cam-1.mp4` at the new size (both playable).
#[test]
fn camera_back_at_new_resolution_continues_in_a_new_file() {
    let _heavy = super::common::heavy();
    let server = Server::start_sized(0, 320, 240);
    let port = server.port;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cam.yaml");
    std::fs::write(
        &p,
        format!(
            "name: cam\nsources:\n  - id: cam\n    uri: rtsp://127.0.0.1:{port}/cam\n    stall: 2s\n    reconnect: {{ initial: 200ms, max: 1s }}\n\
             detector:\n  model: {}\n  confidence: 0.05\noutputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n  - kind: mp4\n    path: out/{{source}}.mp4\n",
            model().display()
        ),
    )
    .unwrap();
    let child = vigil()
        .arg("run")
        .arg(&p)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let jsonl = dir.path().join("out/cam.jsonl");
    wait_for("first frames", Duration::from_secs(30), || {
        lines(&jsonl) >= 10
    });
    server.stop();
    std::thread::sleep(Duration::from_millis(500));
    let server = Server::start_sized(port, 480, 360);
    let restarted = std::time::SystemTime::now();
    wait_for("frames at the new size", Duration::from_secs(15), || {
        captured_after(&jsonl, restarted) >= 10
    });
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
    for r in records(&jsonl) {
        let (w, h) = if captured(&r) > restarted {
            (480.0, 360.0)
        } else {
            (320.0, 240.0)
        };
        for d in &r.detections {
            assert!(
                d.bbox[2] <= w && d.bbox[3] <= h,
                "frame {}: box {:?} outside {w}x{h}",
                r.seq,
                d.bbox
            );
        }
    }
    let (n1, w1, h1) = super::common::decode_count(&dir.path().join("out/cam.mp4"));
    let (n2, w2, h2) = super::common::decode_count(&dir.path().join("out/cam-1.mp4"));
    assert_eq!((w1, h1, w2, h2), (320, 240, 480, 360));
    assert!(n1 >= 10 && n2 >= 10, "{n1} + {n2} frames");
}

/// Two cameras and a file in one pipeline: killing one camera does not slow the other (its frame
/// rate after the kill is at least 80% of before) and the file is still processed to its end.
#[test]
fn killing_one_camera_leaves_the_others_alone() {
    let _heavy = super::common::heavy();
    let a = Server::start(0);
    let b = Server::start(0);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("multi.yaml");
    std::fs::write(
        &p,
        format!(
            "name: multi\nsources:\n  - id: a\n    uri: rtsp://127.0.0.1:{}/cam\n    reconnect: {{ initial: 200ms, max: 1s }}\n\
             \x20 - id: b\n    uri: rtsp://127.0.0.1:{}/cam\n  - id: file\n    uri: file:{}\n    max_frames: 120\n\
             detector:\n  model: {}\noutputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            a.port,
            b.port,
            super::common::asset("bikes.mp4").display(),
            model().display()
        ),
    )
    .unwrap();
    let child = vigil()
        .arg("run")
        .arg(&p)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (ja, jb, jf) = (
        dir.path().join("out/a.jsonl"),
        dir.path().join("out/b.jsonl"),
        dir.path().join("out/file.jsonl"),
    );
    wait_for("all three running", Duration::from_secs(60), || {
        lines(&ja) >= 5 && lines(&jb) >= 5 && lines(&jf) >= 5
    });
    std::thread::sleep(Duration::from_secs(6));
    let killed = std::time::SystemTime::now();
    a.stop();
    std::thread::sleep(Duration::from_secs(6));
    wait_for("the file to finish", Duration::from_secs(120), || {
        lines(&jf) >= 120
    });
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    b.stop();
    // b's processed frames per second in the 5 s before and the 5 s after the kill
    let rb = records(&jb);
    let window = |from: std::time::SystemTime, to: std::time::SystemTime| {
        rb.iter()
            .filter(|r| captured(r) > from && captured(r) <= to)
            .count()
    };
    let five = Duration::from_secs(5);
    let before = window(killed - five, killed);
    let after = window(
        killed + Duration::from_millis(500),
        killed + Duration::from_millis(500) + five,
    );
    assert!(
        before >= 5,
        "b was not running before the kill ({before} frames)"
    );
    assert!(
        after * 10 >= before * 8,
        "b slowed down after a was killed: {before} → {after} frames in 5 s"
    );
    assert_eq!(records(&jf).len(), 120, "the file lost frames");
    assert!(
        stderr.contains("source=a") && stderr.contains("reconnecting"),
        "{stderr}"
    );
}

/// A 30 fps camera on a detector that manages ~10 fps for a minute: the first edge drops the
/// oldest frames (counted), so latency stays bounded instead of growing. Asserted as the design
/// guarantees it, not in wall-clock terms that a loaded machine breaks: every decoded frame is
/// either processed or counted as dropped, and a frame's capture→metadata latency is at most the
/// frames that can be ahead of it (two queues of `capacity`, one frame in each stage) times the
/// detector's own time per frame measured in the same run.
#[test]
fn latency_stays_bounded_when_the_detector_is_slower_than_the_camera() {
    const CAPACITY: u64 = 2;
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fast.yaml");
    std::fs::write(
        &p,
        format!(
            "name: fast\nsources:\n  - id: fast\n    uri: test:ball?width=640&height=480&fps=30\n\
             detector:\n  model: {}\nqueues:\n  capacity: {CAPACITY}\noutputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            model().display()
        ),
    )
    .unwrap();
    let child = vigil()
        .arg("run")
        .arg(&p)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(60));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let recs = records(&dir.path().join("out/fast.jsonl"));
    assert!(recs.len() > 100, "only {} frames processed", recs.len());
    // every decoded frame is accounted for: processed or dropped (counted) on the first edge
    let number = |prefix: &str, after: &str| -> u64 {
        let line = stderr
            .lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {stderr}"));
        let rest = &line[line.find(after).map_or(0, |i| i + after.len())..];
        rest.split(|c: char| !c.is_ascii_digit() && c != '.')
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no number after `{after}` in {line}")) as u64
    };
    let decoded = number("stage ingest[fast]:", "stage ingest[fast]:");
    let dropped = number("edge ingest→preprocess[fast]:", "sent, ");
    assert!(dropped > 0, "no frames were dropped: {stderr}");
    assert_eq!(
        decoded,
        dropped + recs.len() as u64,
        "decoded = dropped + processed: {stderr}"
    );
    // latency in detector times: at most 2 queues + 1 frame per stage ahead of any frame
    let detect_line = stderr
        .lines()
        .find(|l| l.contains("stage detect:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let detect_ms: f32 = detect_line
        .split("frames, ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{detect_line}"));
    let ahead = (2 * CAPACITY + 4) as f32;
    let mut lat: Vec<f32> = recs.iter().filter_map(|r| r.latency_ms).collect();
    lat.sort_by(f32::total_cmp);
    let p99 = lat[((lat.len() as f32 * 0.99) as usize).min(lat.len() - 1)];
    assert!(
        p99 <= ahead * detect_ms * 1.5,
        "p99 latency {p99} ms > {ahead} frames × {detect_ms} ms (detector) × 1.5"
    );
    assert!(
        stderr.contains("latency fast: capture→metadata p50"),
        "{stderr}"
    );
}
