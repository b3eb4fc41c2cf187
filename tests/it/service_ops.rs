//! `vigil serve` as an operator finds it (issue 14): an MQTT pipeline checked again after a run,
//! names that collide across files, sizes bounded, reload errors that clear, readiness that tells
//! the truth, frames lost at ingest counted, RTSP's UDP ports on the bind address, and the shipped
//! unit restarted with the broker down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::common::free_port;
use super::common::{model, records, vigil};
use super::service::{
    Reaped, by_name, frames_in, get, pattern_pipeline, pipelines, sigterm, wait_for,
};

/// `vigil check ARGS…`, bounded in time.
fn check(args: &[&str], dir: &Path) -> Output {
    let out = vigil()
        .arg("check")
        .args(args)
        .arg("--config-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A pipeline file `file` (in `dir`) named `name` on a small test pattern, writing JSONL.
fn named_pattern(dir: &Path, file: &str, name: &str, sources: usize) -> PathBuf {
    let mut y = format!("name: {name}\nsources:\n");
    for i in 0..sources {
        y.push_str(&format!(
            "  - id: p{i}\n    uri: test:ball?width=160&height=120&fps=5\n"
        ));
    }
    y.push_str(&format!(
        "detector:\n  model: {}\noutputs:\n  - kind: jsonl\n    path: ../out/{{pipeline}}-{{source}}.jsonl\n",
        model().display()
    ));
    let p = dir.join(file);
    std::fs::write(&p, y).unwrap();
    p
}

/// `vigil serve` on `dir` with `extra` arguments, once its HTTP answers (ready or not).
fn serve_answering(dir: &Path, http: u16, log: &Path, extra: &[&str]) -> Reaped {
    let child = vigil()
        .args(["serve", "--config-dir"])
        .arg(dir)
        .args(["--http", &format!("127.0.0.1:{http}"), "--poll", "500ms"])
        .args(super::service::state_args(dir, http))
        .args(extra)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_for("HTTP", Duration::from_secs(60), || {
        get(http, "/readyz").is_some()
    });
    Reaped(child)
}

fn stop(mut child: Reaped, log: &Path) {
    sigterm(&child.0);
    let status = super::common::wait_exit(&mut child.0, Duration::from_secs(60));
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(log).unwrap()
    );
}

/// Regression: the MQTT outbox is a folder vigil creates and keeps; `check` called it "cannot be
/// created: it is a folder" after the first run, so the unit's ExecStartPre failed and every edit
/// of a running MQTT pipeline was rejected. A file in its place is still refused.
#[test]
fn mqtt_pipeline_checks_again_after_its_outbox_exists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        format!(
            "name: m\nsources:\n  - id: cam\n    uri: test:ball\ndetector:\n  model: {}\n\
             outputs:\n  - kind: mqtt\n    outbox: box/{{source}}\n",
            model().display()
        ),
    )
    .unwrap();
    assert!(check(&[], dir.path()).status.success());
    // what a run leaves: the folder with a segment and a cursor in it
    let outbox = dir.path().join("box/cam");
    std::fs::create_dir_all(&outbox).unwrap();
    std::fs::write(outbox.join("00000000.seg"), "{\"seq\":0}\n").unwrap();
    let o = check(&[], dir.path());
    assert!(o.status.success(), "{}", stdout(&o));
    std::fs::remove_dir_all(&outbox).unwrap();
    std::fs::write(&outbox, "not a folder").unwrap();
    let o = check(&[], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("m.yaml:8:5: mqtt outbox") && stdout(&o).contains("it is a file"),
        "{}",
        stdout(&o)
    );
}

/// Regression: two files with one pipeline `name` both ran (one JSONL interleaved, every /metrics
/// series twice). `check --config-dir` names the later file; `serve` runs the first, rejects the
/// other (log, /pipelines, /readyz 503) and starts it once the name is free. The total of sources
/// across files is bounded the same way (`--max-sources`).
#[test]
fn a_name_used_by_two_files_runs_once_and_sources_are_bounded_in_total() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let a = named_pattern(&conf, "a.yaml", "cam", 1);
    let b = named_pattern(&conf, "b.yaml", "cam", 1);
    let c = named_pattern(&conf, "c.yaml", "yard", 2);
    let o = check(&["--max-sources", "2"], &conf);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{}:1:7: pipeline name `cam` is already used by {}",
            b.display(),
            a.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: its 2 sources", c.display()))
            && text.contains("--max-sources 2"),
        "{text}"
    );

    let http = free_port();
    let log = dir.path().join("serve.log");
    let child = serve_answering(&conf, http, &log, &["--max-sources", "2"]);
    wait_for("cam to run", Duration::from_secs(60), || {
        let ps = pipelines(http);
        ps.len() == 3 && frames_in(by_name(&ps, "cam")) > 2
    });
    let ps = pipelines(http);
    let of = |f: &Path| {
        ps.iter()
            .find(|p| p["file"] == f.display().to_string())
            .unwrap()
            .clone()
    };
    assert_eq!(of(&a)["state"], "running");
    assert_eq!(of(&b)["state"], "rejected");
    assert!(
        of(&b)["error"]
            .as_str()
            .unwrap()
            .contains("pipeline name `cam` is already used by"),
        "{ps:?}"
    );
    assert_eq!(of(&c)["state"], "rejected");
    assert!(
        of(&c)["error"]
            .as_str()
            .unwrap()
            .contains("--max-sources 2"),
        "{ps:?}"
    );
    let (code, body) = get(http, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("b.yaml") && body.contains("c.yaml"), "{body}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("is already used by"), "{logged}");
    // one series per source: a valid exposition
    let (_, metrics) = get(http, "/metrics").unwrap();
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("vigil_source_frames_in_total{"))
        .count();
    assert_eq!(series, 1, "{metrics}");

    // the name is free again: b starts without being touched; c still does not fit beside it
    std::fs::remove_file(&a).unwrap();
    wait_for("b to take the name", Duration::from_secs(60), || {
        pipelines(http)
            .iter()
            .any(|p| p["file"] == b.display().to_string() && p["state"] == "running")
    });
    std::fs::remove_file(&c).unwrap();
    wait_for("/readyz 200", Duration::from_secs(30), || {
        get(http, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    stop(child, &log);
}

/// Regression: a reload error stayed after the file was put back to the running content (on file
/// change and on SIGHUP), because an unchanged hash was skipped without clearing it.
#[test]
fn reload_error_clears_when_the_file_is_back_to_its_running_content() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let file = pattern_pipeline(&conf, "lobby", "0.25");
    let good = std::fs::read_to_string(&file).unwrap();
    let http = free_port();
    let log = dir.path().join("serve.log");
    let child = serve_answering(&conf, http, &log, &[]);
    let reload_error = || by_name(&pipelines(http), "lobby")["reload_error"].clone();
    for via_sighup in [false, true] {
        std::fs::write(&file, good.replace("0.25", "7")).unwrap();
        if via_sighup {
            Command::new("kill")
                .args(["-HUP", &child.0.id().to_string()])
                .status()
                .unwrap();
        }
        wait_for("the reload error", Duration::from_secs(20), || {
            reload_error().is_string()
        });
        std::fs::write(&file, &good).unwrap();
        if via_sighup {
            Command::new("kill")
                .args(["-HUP", &child.0.id().to_string()])
                .status()
                .unwrap();
        }
        wait_for("the reload error to clear", Duration::from_secs(20), || {
            reload_error().is_null()
        });
        let p = by_name(&pipelines(http), "lobby").clone();
        assert_eq!(p["state"], "running");
        assert_eq!(p["starts"], 1, "reverting must not restart: {p}");
    }
    stop(child, &log);
}

/// Sum of `N dropped` over the `edge …: S sent, N dropped` lines `vigil run` prints at the end.
fn edge_drops(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.trim_start().starts_with("edge "))
        .filter_map(|l| {
            l.rsplit_once(", ")?
                .1
                .strip_suffix(" dropped")?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A 30 fps test pattern behind a detector slower than that, for `secs`; returns the JSONL's
/// records, the frames the source produced by its pts span, and the drops `vigil run` counted.
fn slow_chain(when_full: &str, secs: u64) -> (u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("slow.yaml");
    std::fs::write(
        &p,
        format!(
            "name: slow\nsources:\n  - id: ball\n    uri: test:ball?width=320&height=240&fps=30\n\
             detector:\n  model: {}\nqueues:\n  capacity: 2\n  when_full: {when_full}\n\
             outputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            model().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let mut child = super::service::run_logged(&p, &log);
    std::thread::sleep(Duration::from_secs(secs));
    sigterm(&child.0);
    let status = super::common::wait_exit(&mut child.0, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    let recs = records(&dir.path().join("out/ball.jsonl"));
    let pts: Vec<u64> = recs.iter().filter_map(|r| r.pts_ns).collect();
    let (first, last) = (pts[0], *pts.last().unwrap());
    let produced = ((last - first) as f64 * 30.0 / 1e9).round() as u64 + 1;
    (recs.len() as u64, produced, edge_drops(&text))
}

/// Regression: a `test:` source with `when_full: block` lost about half its frames in its appsink
/// (leaky), uncounted. Now `block` loses none, and `drop_oldest` counts every frame it loses,
/// including those dropped before the first edge.
#[test]
fn every_frame_a_test_source_produces_is_processed_or_counted() {
    let _heavy = super::common::heavy();
    let (got, produced, dropped) = slow_chain("block", 8);
    eprintln!("block: {got} records, {dropped} dropped, {produced} produced by pts");
    assert!(produced > 60, "only {produced} frames produced");
    assert_eq!(dropped, 0);
    assert!(
        got.abs_diff(produced) <= 2,
        "block: {got} records of {produced} produced"
    );
    let (got, produced, dropped) = slow_chain("drop_oldest", 8);
    eprintln!("drop_oldest: {got} records, {dropped} dropped, {produced} produced by pts");
    assert!(
        dropped > 0,
        "the chain is slower than 30 fps: some must drop"
    );
    assert!(
        (got + dropped).abs_diff(produced) <= 2,
        "drop_oldest: {got} records + {dropped} dropped of {produced} produced"
    );
}

/// The local addresses of the UDP sockets process `pid` holds (`ss -ulpn`).
fn udp_sockets_of(pid: u32) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-ulpnH"])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
        .collect()
}

/// Regression: during a UDP session the restream's RTP/RTCP sockets were bound to 0.0.0.0 (and
/// `*`), though the RTSP listener is on 127.0.0.1 by default. Played with `rtspsrc protocols=udp`.
#[test]
fn rtsp_udp_session_binds_its_ports_to_the_listen_address() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = dir.path().join("udp.yaml");
    std::fs::write(
        &p,
        format!(
            "name: udp\nsources:\n  - id: ball\n    uri: test:ball?width=320&height=240&fps=10\n\
             detector:\n  model: {}\n  every: 10\noutputs:\n  - kind: rtsp\n    port: {port}\n",
            model().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("vigil.log");
    let mut child = super::service::run_logged(&p, &log);
    wait_for("the RTSP server", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let url = format!("rtsp://127.0.0.1:{port}/udp/ball");
    let launch = format!(
        "rtspsrc location={url} protocols=udp latency=100 ! decodebin ! videoconvert \
         ! video/x-raw,format=BGR ! appsink name=sink sync=false"
    );
    let player = std::thread::spawn(move || {
        super::service::pull_frames(&launch, 30, Duration::from_secs(60))
    });
    let pid = child.0.id();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !player.is_finished() && Instant::now() < deadline {
        for s in udp_sockets_of(pid) {
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let frames = player.join().unwrap();
    sigterm(&child.0);
    let status = child.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(frames.len() >= 30, "got {} frames over UDP", frames.len());
    eprintln!("vigil's UDP sockets during the session: {seen:?}");
    assert!(seen.len() >= 2, "no RTP/RTCP sockets seen: {seen:?}");
    assert!(
        seen.iter().all(|a| a.starts_with("127.0.0.1:")),
        "UDP sockets outside 127.0.0.1: {seen:?}"
    );
}

/// The shipped unit's `ExecStartPre` and `ExecStart` command lines, pointed at this build, the
/// folder `conf` and HTTP on `http`.
/// The unit's commands with its paths made the test's (`state`: its StateDirectory, where a
/// token for `http` is created).
fn unit_commands(conf: &Path, state: &Path, http: u16) -> (Vec<String>, Vec<String>) {
    super::service::register_token(state, http);
    let unit =
        std::fs::read_to_string(super::common::root().join("systemd/vigil.service")).unwrap();
    let line = |key: &str| -> Vec<String> {
        let l = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"));
        l.replace("/usr/local/bin/vigil", env!("CARGO_BIN_EXE_vigil"))
            .replace("/etc/vigil/pipelines", &conf.display().to_string())
            .replace("127.0.0.1:9090", &format!("127.0.0.1:{http}"))
            .replace("/var/lib/vigil", &state.display().to_string())
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    (line("ExecStartPre="), line("ExecStart="))
}

/// systemd's side of `Type=notify`: a datagram socket collecting what the service says.
fn notify_socket(path: &Path) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
    let said: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let s2 = said.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    said
}

/// Every message on `topic`, as its payload text, in arrival order (QoS 1, reconnecting).
fn collect_payloads(
    port: u16,
    topic: &str,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let got: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let subscribed: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
    let (g, sub, topic) = (got.clone(), subscribed.clone(), topic.to_string());
    std::thread::spawn(move || {
        let mut opts = rumqttc::MqttOptions::new("it-unit-subscriber", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = rumqttc::Client::new(opts, 100);
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(topic.as_str(), rumqttc::QoS::AtLeastOnce);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    sub.store(true, Ordering::Relaxed);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    g.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    (got, subscribed)
}

/// The records waiting in an outbox folder, oldest first (whole lines only).
fn outbox_records(dir: &Path) -> Vec<String> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let whole = text.rfind('\n').map_or("", |i| &text[..i]).to_string();
            whole.lines().map(String::from).collect::<Vec<_>>()
        })
        .collect()
}

/// One start of the unit: `ExecStartPre` must pass, then `ExecStart` must say READY=1 (the
/// `ready`-th time) and run the pipeline. Returns the running service.
fn start_as_unit(
    pre: &[String],
    exec: &[String],
    env: (&Path, &Path, &Path),
    said: &std::sync::Mutex<Vec<String>>,
    ready: usize,
) -> Reaped {
    let (state, sock, log) = env;
    let check = Command::new(&pre[0])
        .args(&pre[1..])
        .current_dir(state)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "ExecStartPre failed on start {ready}: {}",
        stdout(&check)
    );
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(&exec[0])
        .args(&exec[1..])
        .current_dir(state)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", sock)
        .stderr(log_file)
        .spawn()
        .unwrap();
    wait_for("READY=1", Duration::from_secs(60), || {
        said.lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains("READY=1"))
            .count()
            >= ready
    });
    Reaped(child)
}

/// Done-means of issue 14: `vigil serve` under the shipped unit (its ExecStartPre, then its
/// ExecStart with a NOTIFY_SOCKET), restarted 5 times with an MQTT pipeline and the broker down
/// each time (SIGTERM and kill -9 alternating): it starts every time, and once the broker is back
/// every record the runs queued is delivered, first arrivals in queue order; duplicates are only
/// QoS-1 redeliveries.
#[test]
fn unit_restarts_five_times_with_the_broker_down_and_delivers_everything_in_order() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let (conf, state) = (dir.path().join("conf"), dir.path().join("state"));
    std::fs::create_dir(&conf).unwrap();
    std::fs::create_dir(&state).unwrap();
    let broker_port = free_port();
    let outbox = state.join("outbox");
    std::fs::write(
        conf.join("yard.yaml"),
        format!(
            "name: yard\nsources:\n  - id: cam\n    uri: test:ball?width=160&height=120&fps=5\n\
             detector:\n  model: {}\n  every: 5\noutputs:\n  - kind: mqtt\n    broker: 127.0.0.1:{broker_port}\n\
             \x20   outbox: {}\n    drain: 2s\n",
            model().display(),
            outbox.display()
        ),
    )
    .unwrap();
    let http = free_port();
    let (pre, exec) = unit_commands(&conf, &state, http);
    let sock = dir.path().join("notify.sock");
    let said = notify_socket(&sock);
    let log = dir.path().join("serve.log");
    let started = Instant::now();
    let mut queued = Vec::new();
    for i in 0..5 {
        let mut child = start_as_unit(&pre, &exec, (&state, &sock, &log), &said, i + 1);
        wait_for(
            "the pipeline to queue records",
            Duration::from_secs(30),
            || {
                pipelines(http).iter().any(|p| p["state"] == "running")
                    && outbox.is_dir()
                    && outbox_records(&outbox).len() > queued.len() + 5
            },
        );
        if i % 2 == 0 {
            sigterm(&child.0);
            let status = child.0.wait().unwrap();
            assert!(status.success(), "start {}: {status:?}", i + 1);
        } else {
            child.0.kill().unwrap();
            child.0.wait().unwrap();
        }
        let now = outbox_records(&outbox);
        assert!(now.len() > queued.len(), "start {} queued nothing", i + 1);
        assert_eq!(now[..queued.len()], queued[..], "queued records changed");
        queued = now;
    }
    // the broker comes back; one more start delivers what the five runs queued
    let _broker = super::service::Mosquitto::start(broker_port, dir.path());
    let (got, subscribed) = collect_payloads(broker_port, "vigil/yard/cam");
    wait_for("the subscription", Duration::from_secs(10), || {
        subscribed.load(std::sync::atomic::Ordering::Relaxed)
    });
    let mut child = start_as_unit(&pre, &exec, (&state, &sock, &log), &said, 6);
    wait_for("every queued record", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= queued.len()
    });
    sigterm(&child.0);
    assert!(child.0.wait().unwrap().success());
    let received = got.lock().unwrap().clone();
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<&String> = received.iter().filter(|r| seen.insert(*r)).collect();
    assert!(firsts.len() >= queued.len());
    for (k, (a, b)) in firsts.iter().zip(&queued).enumerate() {
        assert_eq!(
            *a,
            b,
            "record {k} of {} out of order or missing",
            queued.len()
        );
    }
    let duplicates = received.len() - firsts.len();
    let text = std::fs::read_to_string(&log).unwrap();
    let redelivered: usize = text
        .lines()
        .filter(|l| l.contains("mqtt output finished"))
        .filter_map(|l| {
            l.split("redelivered=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    eprintln!(
        "5 starts with the broker down queued {} records; delivered {} messages ({} distinct, \
         {duplicates} duplicates, vigil redelivered {redelivered}); {:.0} s",
        queued.len(),
        received.len(),
        firsts.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        duplicates <= redelivered,
        "{duplicates} duplicates, {redelivered} redeliveries"
    );
}

/// Regression: records dropped from a full outbox were counted but never logged. With no broker
/// and a 64 KiB outbox, a WARN says how many were dropped (the WARNs add up to the final count).
#[test]
fn a_full_outbox_warns_with_the_number_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("full.yaml");
    std::fs::write(
        &p,
        format!(
            "name: full\nsources:\n  - id: ball\n    uri: test:ball?width=64&height=48&fps=100\n\
             detector:\n  model: {}\n  every: 1000\noutputs:\n  - kind: mqtt\n    broker: 127.0.0.1:{}\n\
             \x20   outbox: box\n    outbox_max: 64KiB\n    drain: 1s\n",
            model().display(),
            free_port()
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let mut child = super::service::run_logged(&p, &log);
    // a live source does not end by itself: stop it once the outbox has passed its size
    wait_for("the outbox to fill", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("outbox full"))
    });
    sigterm(&child.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "vigil did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let warned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("outbox full"))
        .collect();
    assert!(!warned.is_empty(), "no WARN for the drops:\n{text}");
    let logged: u64 = warned
        .iter()
        .filter_map(|l| {
            l.split("dropped=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let finished: u64 = text
        .lines()
        .find(|l| l.contains("mqtt output finished"))
        .and_then(|l| l.split(" dropped=").nth(1)?.split(' ').next()?.parse().ok())
        .expect("the mqtt summary");
    assert!(finished > 0);
    assert_eq!(
        logged,
        finished,
        "every drop is in a WARN:\n{}",
        warned.join("\n")
    );
}

/// Regression: a reloaded pipeline numbered its frames from 0 again while its JSONL was appended
/// to, so one file held every seq twice. Now each source continues where its previous run stopped.
#[test]
fn a_reloaded_or_restarted_pipeline_continues_its_seq_in_the_appended_jsonl() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    pattern_pipeline(&conf, "lobby", "0.25");
    let http = free_port();
    let log = dir.path().join("serve.log");
    let child = serve_answering(&conf, http, &log, &[]);
    let out = dir.path().join("out/lobby.jsonl");
    let lines = || std::fs::read_to_string(&out).map_or(0, |t| t.lines().count());
    wait_for("records of the first run", Duration::from_secs(60), || {
        lines() >= 5
    });
    pattern_pipeline(&conf, "lobby", "0.3");
    wait_for("the restart", Duration::from_secs(30), || {
        by_name(&pipelines(http), "lobby")["starts"] == 2
    });
    let at_restart = lines();
    wait_for("records of the second run", Duration::from_secs(60), || {
        lines() >= at_restart + 5
    });
    stop(child, &log);
    // and across a restart of the service: numbering goes on from the file's last record
    let at_stop = lines();
    let child = serve_answering(&conf, http, &log, &[]);
    wait_for(
        "records after the service restart",
        Duration::from_secs(60),
        || lines() >= at_stop + 5,
    );
    stop(child, &log);
    let seqs: Vec<u64> = records(&out).iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq repeats or goes back across the reload or the restart: {seqs:?}"
    );
}

/// Reloading and stopping a pipeline whose JSONL output is stuck (a FIFO nobody reads) take at
/// most the drain deadline (`--drain-timeout 2s`): the new config runs within it, `/pipelines`
/// names the MP4 file the new run writes (`lobby-1.mp4`, not the old path), and SIGTERM ends the
/// service within the deadline + 2 s with exit 1 naming what did not drain.
#[test]
fn reload_and_stop_with_a_stuck_output_take_at_most_the_drain_deadline() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(out.join("lobby.jsonl"))
            .status()
            .unwrap()
            .success()
    );
    let write = |confidence: &str| {
        std::fs::write(
            conf.join("lobby.yaml"),
            format!(
                "name: lobby\nsources:\n  - id: pattern\n    uri: test:ball?width=160&height=120&fps=5\n\
                 detector:\n  model: {}\n  confidence: {confidence}\nqueues: {{ stall_timeout: 10m }}\n\
                 outputs:\n  - {{ kind: mp4, path: \"../out/{{pipeline}}.mp4\" }}\n\
                 \x20 - {{ kind: jsonl, path: \"../out/{{pipeline}}.jsonl\" }}\n",
                model().display()
            ),
        )
        .unwrap();
    };
    write("0.25");
    let http = free_port();
    let log = dir.path().join("serve.log");
    let mut child = serve_answering(&conf, http, &log, &["--drain-timeout", "2s"]);
    let mp4_file = |ps: &[serde_json::Value]| -> String {
        by_name(ps, "lobby")["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["output"].as_str().unwrap_or("").starts_with("mp4"))
            .and_then(|o| o["file"].as_str())
            .unwrap_or("")
            .to_string()
    };
    wait_for("the first MP4", Duration::from_secs(60), || {
        mp4_file(&pipelines(http)).ends_with("lobby.mp4")
    });
    write("0.3");
    let changed = Instant::now();
    wait_for("the restart", Duration::from_secs(30), || {
        by_name(&pipelines(http), "lobby")["starts"] == 2
    });
    let took = changed.elapsed();
    // poll 500 ms + drain 2 s + finalize grace 1.5 s, and room for a loaded machine
    assert!(took < Duration::from_secs(8), "restart took {took:?}");
    wait_for("the new MP4 in /pipelines", Duration::from_secs(30), || {
        mp4_file(&pipelines(http)).ends_with("lobby-1.mp4")
    });
    sigterm(&child.0);
    let term = Instant::now();
    let status = super::common::wait_exit(&mut child.0, Duration::from_secs(30));
    let took = term.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        took < Duration::from_secs(2 + 2),
        "stop took {took:?}:\n{text}"
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("did not drain"), "{text}");
}

/// Regression (item 2): an output that fails while its pipeline runs was invisible until the
/// pipeline stopped (`running`, `error: null`, `/healthz` 200). Now `/pipelines` shows the output
/// failed with its error, `/metrics` has its state, `/healthz` names it — while the pipeline and
/// its other output go on.
#[test]
fn a_failed_output_shows_in_pipelines_metrics_and_health_while_its_pipeline_runs() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("lobby.yaml"),
        format!(
            "name: lobby\nsources:\n  - id: pattern\n    uri: test:ball?width=160&height=120&fps=5\n\
             detector:\n  model: {}\noutputs:\n\
             \x20 - {{ kind: jsonl, path: /dev/full }}\n\
             \x20 - {{ kind: jsonl, path: \"../out/{{pipeline}}.jsonl\" }}\n",
            model().display()
        ),
    )
    .unwrap();
    let http = free_port();
    let log = dir.path().join("serve.log");
    let child = serve_answering(&conf, http, &log, &[]);
    let failed_output = |ps: &[serde_json::Value]| -> Option<serde_json::Value> {
        by_name(ps, "lobby")["outputs"]
            .as_array()?
            .iter()
            .find(|o| o["output"] == "jsonl /dev/full" && o["state"] == "failed")
            .cloned()
    };
    wait_for(
        "the failed output in /pipelines",
        Duration::from_secs(60),
        || failed_output(&pipelines(http)).is_some(),
    );
    let ps = pipelines(http);
    let o = failed_output(&ps).unwrap();
    assert!(
        o["error"].as_str().unwrap_or("").contains("No space left"),
        "{o}"
    );
    assert_eq!(by_name(&ps, "lobby")["state"], "running", "{ps:?}");
    let (code, body) = get(http, "/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("output failed: lobby: output jsonl /dev/full failed"),
        "{body}"
    );
    let (_, metrics) = get(http, "/metrics").unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("vigil_stage_state{")
            && l.contains("output jsonl /dev/full")
            && l.contains("state=\"failed\"")
            && l.ends_with(" 1.0")),
        "{metrics}"
    );
    // the other output goes on
    let good = dir.path().join("out/lobby.jsonl");
    let n = || std::fs::read_to_string(&good).map_or(0, |t| t.lines().count());
    let before = n();
    wait_for("the other output to go on", Duration::from_secs(60), || {
        n() > before + 2
    });
    stop(child, &log);
}
