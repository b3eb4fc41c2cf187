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
        gst::init().unwrap();
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(
            "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 )",
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
