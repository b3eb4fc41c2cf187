//! vigil as a service, with real parts: a real mosquitto broker on 127.0.0.1 (stopped for 60 s
//! mid-run), `vigil serve` reloading on SIGHUP and on file changes, `/metrics` parsed by a
//! Prometheus text parser, the RTSP restream played with `rtspsrc`, and the systemd unit checked by
//! `systemd-analyze`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::{asset, free_port, model, root, vigil};

pub(super) fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed if the test panics before it ends it.
pub(super) struct Reaped(pub(super) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `vigil run PIPELINE` with its stderr in `log`.
pub(super) fn run_logged(pipeline: &Path, log: &Path) -> Reaped {
    Reaped(
        vigil()
            .arg("run")
            .arg(pipeline)
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

pub(super) fn sigterm(child: &Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// A real mosquitto on 127.0.0.1:`port`, persisting sessions in `dir` (so a subscriber's queued
/// QoS-1 messages survive the broker's restart).
pub(super) struct Mosquitto {
    child: Child,
}

impl Mosquitto {
    pub(super) fn start(port: u16, dir: &Path) -> Self {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                // `user root`: when the tests run as root, stay root so the temporary folder is
                // writable (mosquitto ignores it when not started as root)
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 100000\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (scripts/install-deps installs it)");
        wait_for("mosquitto to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child }
    }

    /// Stop it cleanly (it saves its persistence file on the way out).
    pub(super) fn stop(mut self) {
        sigterm(&self.child);
        self.child.wait().unwrap();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A QoS-1 subscriber with a persistent session that reconnects by itself; collects each
/// message's `(seq, dup)` in arrival order (`dup`: the broker is redelivering it to us).
pub(super) type Received = Arc<Mutex<Vec<(u64, bool)>>>;

pub(super) fn subscriber(port: u16, topic: &str) -> (Received, Arc<AtomicBool>) {
    let got: Received = Arc::default();
    let subscribed: Arc<AtomicBool> = Arc::default();
    let (g, sub) = (got.clone(), subscribed.clone());
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let mut opts = rumqttc::MqttOptions::new("it-subscriber", "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut conn) = rumqttc::Client::new(opts, 100);
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    client
                        .try_subscribe(topic.as_str(), rumqttc::QoS::AtLeastOnce)
                        .unwrap();
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    sub.store(true, Ordering::Relaxed);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    g.lock().unwrap().push((v["seq"].as_u64().unwrap(), p.dup));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    (got, subscribed)
}

#[test]
fn mqtt_records_survive_a_60_s_broker_outage_in_order() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Mosquitto::start(port, dir.path());
    let (got, subscribed) = subscriber(port, "vigil/outage/vtest");
    wait_for("the subscription", Duration::from_secs(10), || {
        subscribed.load(Ordering::Relaxed)
    });
    let p = dir.path().join("outage.yaml");
    std::fs::write(
        &p,
        format!(
            "name: outage\nsources:\n  - id: vtest\n    uri: file:{}\ndetector:\n  model: {}\n\
             outputs:\n  - kind: mqtt\n    broker: 127.0.0.1:{port}\n    outbox: outbox/{{source}}\n    drain: 3m\n",
            asset("vtest.avi").display(),
            model().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("vigil.log");
    let mut child = run_logged(&p, &log);
    wait_for("100 records", Duration::from_secs(300), || {
        got.lock().unwrap().len() >= 100
    });
    broker.stop();
    let down_at = got.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(60));
    let outbox_during = std::fs::read_dir(dir.path().join("outbox/vtest"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum::<u64>();
    let _broker = Mosquitto::start(port, dir.path());
    let deadline = Instant::now() + Duration::from_secs(400);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "vigil did not finish");
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    wait_for("all 795 records", Duration::from_secs(30), || {
        got.lock()
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect::<HashSet<_>>()
            .len()
            >= 795
    });
    let received = got.lock().unwrap().clone();
    // the broker's own redeliveries to us (its session with the subscriber broke too)
    let broker_dups = received.iter().filter(|r| r.1).count();
    let got: Vec<u64> = received.iter().map(|r| r.0).collect();
    let distinct: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct, (0..795).collect::<HashSet<u64>>(), "lost records");
    // in order: the first arrival of each record comes after the first arrival of its predecessor
    let mut seen = HashSet::new();
    let firsts: Vec<u64> = got.iter().copied().filter(|s| seen.insert(*s)).collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "records out of order"
    );
    let duplicates = got.len() - 795;
    let redelivered: usize = text
        .lines()
        .filter(|l| l.contains("mqtt output finished"))
        .find_map(|l| {
            l.split("redelivered=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("vigil reports its mqtt counters");
    eprintln!(
        "broker down after {down_at} records for 60 s; outbox held {outbox_during} bytes then; \
         received {} messages, {duplicates} duplicates; vigil republished {redelivered}, \
         the broker redelivered {broker_dups} to the subscriber",
        got.len()
    );
    assert!(outbox_during > 0, "records should have waited on disk");
    assert!(
        duplicates <= redelivered + broker_dups,
        "{duplicates} duplicates but only {redelivered} + {broker_dups} QoS-1 redeliveries"
    );
}

/// `vigil serve` on `dir` with HTTP on `http`; stderr to `log`.
pub(super) fn serve(
    dir: &Path,
    http: u16,
    poll: &str,
    log: &Path,
    envs: &[(&str, String)],
) -> Reaped {
    let child = vigil()
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["serve", "--config-dir"])
        .arg(dir)
        .args(["--http", &format!("127.0.0.1:{http}"), "--poll", poll])
        .args(state_args(dir, http))
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_for("/readyz", Duration::from_secs(60), || {
        get(http, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    Reaped(child)
}

/// Admin tokens of the `vigil serve`s the tests started, by HTTP port ([`get`] sends them).
fn tokens() -> &'static Mutex<std::collections::HashMap<u16, String>> {
    static TOKENS: std::sync::OnceLock<Mutex<std::collections::HashMap<u16, String>>> =
        std::sync::OnceLock::new();
    TOKENS.get_or_init(Mutex::default)
}

/// The admin token of the `vigil serve` on `port` (see [`state_args`]).
pub(super) fn token_of(port: u16) -> String {
    tokens().lock().unwrap()[&port].clone()
}

/// `--state-dir` for a `vigil serve` of config folder `dir` on `port` (a hidden folder inside
/// `dir`, which the service does not read as a pipeline), with an admin token that [`get`] sends.
pub(super) fn state_args(dir: &Path, port: u16) -> [String; 2] {
    let state = dir.join(".state");
    register_token(&state, port);
    ["--state-dir".into(), state.display().to_string()]
}

/// Create an admin token in `state` for the service that will answer on `port` ([`get`] sends it).
pub(super) fn register_token(state: &Path, port: u16) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let token = vigil::service::auth::create_token(
        state,
        &format!("tests-{port}-{n}"),
        vigil::service::auth::Role::Admin,
    )
    .unwrap();
    tokens().lock().unwrap().insert(port, token);
}

/// A plain HTTP GET, with the admin token of the service on `port`: `(status, body)`.
pub(super) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let auth = tokens()
        .lock()
        .unwrap()
        .get(&port)
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

pub(super) fn pipelines(port: u16) -> Vec<serde_json::Value> {
    let (code, body) = get(port, "/pipelines").expect("/pipelines");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub(super) fn by_name<'a>(ps: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    ps.iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pipeline {name} in {ps:?}"))
}

pub(super) fn frames_in(p: &serde_json::Value) -> u64 {
    p["sources"][0]["frames_processed"].as_u64().unwrap()
}

/// A small live pipeline on a test pattern.
pub(super) fn pattern_pipeline(dir: &Path, name: &str, confidence: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nsources:\n  - id: pattern\n    uri: test:ball?width=160&height=120&fps=5\n\
             detector:\n  model: {}\n  confidence: {confidence}\n\
             outputs:\n  - kind: jsonl\n    path: ../out/{{pipeline}}.jsonl\n",
            model().display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn sighup_with_a_broken_file_keeps_the_old_config_running() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    pattern_pipeline(&conf, "lobby", "0.25");
    let yard = pattern_pipeline(&conf, "yard", "0.25");
    let http = free_port();
    let log = dir.path().join("serve.log");
    // no polling: only SIGHUP reloads in this test
    let mut child = serve(&conf, http, "1h", &log, &[]);
    wait_for("frames in both", Duration::from_secs(60), || {
        let ps = pipelines(http);
        ps.len() == 2 && ps.iter().all(|p| frames_in(p) > 3)
    });
    let before = pipelines(http);
    let yard_sha = by_name(&before, "yard")["config_sha256"].clone();

    // break yard.yaml: a typo'd key on line 7 and a confidence out of range on line 8
    std::fs::write(
        &yard,
        format!(
            "name: yard\nsources:\n  - id: pattern\n    uri: test:ball?width=160&height=120&fps=5\n\
             detector:\n  model: {}\n  confidense: 0.5\n  batch: 0\noutputs: []\n",
            model().display()
        ),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    wait_for("the rejection in the log", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).unwrap().contains("rejected")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let yard_path = yard.display().to_string();
    assert!(
        text.contains(&format!("{yard_path}:7:3:")),
        "no file:line:col for the typo in:\n{text}"
    );
    assert!(
        text.contains(&format!("{yard_path}:8:")),
        "every problem should be named:\n{text}"
    );
    let t0 = pipelines(http);
    std::thread::sleep(Duration::from_secs(4));
    let t1 = pipelines(http);
    for name in ["lobby", "yard"] {
        assert!(
            frames_in(by_name(&t1, name)) > frames_in(by_name(&t0, name)),
            "{name} stopped making progress after the bad reload"
        );
        assert_eq!(by_name(&t1, name)["state"], "running");
        assert_eq!(by_name(&t1, name)["starts"], 1);
    }
    let y = by_name(&t1, "yard");
    assert_eq!(y["config_sha256"], yard_sha, "the old config keeps running");
    assert!(y["reload_error"].as_str().unwrap().contains(":7:3:"), "{y}");
    assert_eq!(get(http, "/healthz").unwrap().0, 200);

    // a good change restarts only that pipeline (and its output is continued, not overwritten)
    let yard_out = dir.path().join("out/yard.jsonl");
    let yard_lines = std::fs::read_to_string(&yard_out).unwrap().lines().count();
    assert!(yard_lines > 0);
    pattern_pipeline(&conf, "yard", "0.4");
    let lobby_before = frames_in(by_name(&pipelines(http), "lobby"));
    Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    wait_for("yard restarted", Duration::from_secs(30), || {
        pipelines(http)
            .iter()
            .any(|p| p["name"] == "yard" && p["starts"] == 2)
    });
    let after = pipelines(http);
    assert_ne!(by_name(&after, "yard")["config_sha256"], yard_sha);
    assert!(by_name(&after, "yard")["reload_error"].is_null());
    assert_eq!(by_name(&after, "lobby")["starts"], 1);
    assert!(frames_in(by_name(&after, "lobby")) >= lobby_before);

    sigterm(&child.0);
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        std::fs::read_to_string(&yard_out).unwrap().lines().count() >= yard_lines,
        "the restart truncated the output"
    );
    // outputs finalized: whole lines only
    for name in ["lobby", "yard"] {
        let t = std::fs::read_to_string(dir.path().join(format!("out/{name}.jsonl"))).unwrap();
        assert!(t.ends_with('\n'));
        for l in t.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }
}

pub(super) fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    label: (&str, &str),
) -> Option<&'a prometheus_parse::Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
}

pub(super) fn counter(scrape: &prometheus_parse::Scrape, metric: &str, label: (&str, &str)) -> f64 {
    match sample(scrape, metric, label).map(|s| &s.value) {
        Some(prometheus_parse::Value::Counter(v)) | Some(prometheus_parse::Value::Untyped(v)) => *v,
        other => panic!("{metric}{label:?}: {other:?}"),
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_and_new_files_start() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    pattern_pipeline(&conf, "lobby", "0.25");
    let http = free_port();
    let log = dir.path().join("serve.log");
    // systemd's side of sd_notify: a datagram socket collecting what vigil says
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    let said: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = said.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let mut child = serve(
        &conf,
        http,
        "500ms",
        &log,
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", "900000".to_string()),
        ],
    );
    let scrape = || {
        let (code, body) = get(http, "/metrics").expect("/metrics");
        assert_eq!(code, 200);
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text format")
    };
    wait_for("frames", Duration::from_secs(60), || {
        counter(
            &scrape(),
            "vigil_source_frames_processed_total",
            ("source", "pattern"),
        ) > 2.0
    });
    let a = scrape();
    std::thread::sleep(Duration::from_secs(3));
    let b = scrape();
    for m in [
        "vigil_source_frames_in_total",
        "vigil_source_frames_processed_total",
    ] {
        assert!(
            counter(&b, m, ("source", "pattern")) > counter(&a, m, ("source", "pattern")),
            "{m} did not move"
        );
    }
    assert!(
        counter(&b, "vigil_stage_frames_total", ("stage", "detect"))
            > counter(&a, "vigil_stage_frames_total", ("stage", "detect"))
    );
    // histograms: detector per-frame time and capture→output latency
    for (m, label) in [
        ("vigil_detector_seconds", ("pipeline", "lobby")),
        ("vigil_capture_to_output_seconds", ("source", "pattern")),
    ] {
        let Some(prometheus_parse::Value::Histogram(h)) = sample(&b, m, label).map(|s| &s.value)
        else {
            panic!("{m} is not a histogram");
        };
        let counts: Vec<f64> = h.iter().map(|c| c.count).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{m}: {counts:?}");
        assert!(*counts.last().unwrap() > 0.0, "{m} is empty");
    }
    let state = b
        .samples
        .iter()
        .find(|s| {
            s.metric == "vigil_source_state"
                && s.labels.get("state") == Some("running")
                && s.labels.get("source") == Some("pattern")
        })
        .expect("state gauge");
    assert!(matches!(state.value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    assert!(b.samples.iter().any(
        |s| s.metric == "vigil_edge_depth" && s.labels.get("edge") == Some("preprocess→detect")
    ));

    // a new file in the folder starts without a signal (file-change polling)
    pattern_pipeline(&conf, "dock", "0.3");
    wait_for("dock to run", Duration::from_secs(60), || {
        pipelines(http)
            .iter()
            .any(|p| p["name"] == "dock" && frames_in(p) > 0)
    });
    // and a removed one stops
    std::fs::remove_file(conf.join("lobby.yaml")).unwrap();
    wait_for("lobby to go", Duration::from_secs(30), || {
        !pipelines(http).iter().any(|p| p["name"] == "lobby")
    });
    assert_eq!(get(http, "/nope").unwrap().0, 404);
    sigterm(&child.0);
    assert!(child.0.wait().unwrap().success());
    let said = said.lock().unwrap().clone();
    assert!(said.iter().any(|m| m.contains("READY=1")), "{said:?}");
    let fed = said.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(fed >= 5, "watchdog fed {fed} times: {said:?}");
    assert!(
        said.last().is_some_and(|m| m.contains("STOPPING=1")),
        "{said:?}"
    );
}

/// Share of strongly coloured pixels (max − min channel > 120): the overlay's boxes and labels are
/// saturated colours, vtest.avi's indoor scene is not.
fn saturated_share(bgr: &[u8]) -> f64 {
    let n = bgr.len() / 3;
    let sat = bgr
        .chunks_exact(3)
        .filter(|p| {
            let (mx, mn) = (p.iter().max().unwrap(), p.iter().min().unwrap());
            mx - mn > 120
        })
        .count();
    sat as f64 / n as f64
}

/// Pull `n` BGR frames from a GStreamer `launch` line ending in `appsink name=sink`.
pub(super) fn pull_frames(launch: &str, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init().unwrap();
    let pipeline = gst::parse::launch(launch)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + timeout;
    let mut frames = Vec::new();
    while frames.len() < n && Instant::now() < deadline {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(500)) {
            let b = s.buffer().unwrap().map_readable().unwrap();
            frames.push(b.as_slice().to_vec());
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    frames
}

#[test]
fn rtsp_output_serves_annotated_frames() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = dir.path().join("restream.yaml");
    std::fs::write(
        &p,
        format!(
            "name: restream\nsources:\n  - id: vtest\n    uri: file:{}\n    pace: realtime\n\
             detector:\n  model: {}\noutputs:\n  - kind: rtsp\n    port: {port}\n",
            asset("vtest.avi").display(),
            model().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("vigil.log");
    let mut child = run_logged(&p, &log);
    wait_for("the RTSP server", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let url = format!("rtsp://127.0.0.1:{port}/restream/vtest");
    let frames = pull_frames(
        &format!(
            "rtspsrc location={url} latency=200 ! decodebin ! videoconvert ! video/x-raw,format=BGR \
             ! appsink name=sink sync=false"
        ),
        20,
        Duration::from_secs(60),
    );
    sigterm(&child.0);
    let status = child.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(frames.len() >= 20, "got {} frames from {url}", frames.len());
    for f in &frames {
        assert_eq!(f.len(), 768 * 576 * 3, "frames are the source's size");
    }
    // the control: the same video without vigil has (almost) no saturated pixels
    let raw = pull_frames(
        &format!(
            "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=BGR ! appsink name=sink sync=false",
            asset("vtest.avi").display()
        ),
        20,
        Duration::from_secs(30),
    );
    let raw_share = raw.iter().map(|f| saturated_share(f)).fold(0.0, f64::max);
    let annotated = frames
        .iter()
        .filter(|f| saturated_share(f) > 10.0 * raw_share.max(1e-4))
        .count();
    eprintln!(
        "raw saturated share ≤ {raw_share:.5}; annotated frames: {annotated}/{}",
        frames.len()
    );
    assert!(
        annotated >= frames.len() * 3 / 4,
        "boxes should be drawn on the restream ({annotated}/{} frames)",
        frames.len()
    );
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze missing: scripts/install-deps installs systemd");
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    // verify needs the binaries the unit names to exist: point it at this build
    let unit = std::fs::read_to_string(root().join("systemd/vigil.service"))
        .unwrap()
        .replace("/usr/local/bin/vigil", env!("CARGO_BIN_EXE_vigil"));
    let path = dir.path().join("vigil.service");
    std::fs::write(&path, unit).unwrap();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&v.stderr).to_string() + &String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success() && msg.trim().is_empty(), "{msg}");
    let s = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for vigil.service:").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
}

/// Regression: an RTSP server whose last output finished kept its port bound for the life of the
/// process (a reloaded pipeline that moved ports leaked the old one).
#[test]
fn rtsp_server_closes_its_port_when_its_last_output_finishes() {
    use vigil::output::Output;
    use vigil::output::rtsp::{RtspSettings, RtspWriter};
    gstreamer::init().unwrap();
    let port = free_port();
    let settings = |path: &str| RtspSettings {
        bind: "127.0.0.1".into(),
        port,
        path: path.into(),
        overlay: false,
        bitrate_kbps: 256,
    };
    let a = RtspWriter::serve(settings("/a"), vec![]).unwrap();
    let b = RtspWriter::serve(settings("/b"), vec![]).unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    a.finish(None).unwrap();
    // still serving /b
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    b.finish(None).unwrap();
    wait_for("the port to close", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    // and it can be served again
    let c = RtspWriter::serve(settings("/c"), vec![]).unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    c.finish(None).unwrap();
}
