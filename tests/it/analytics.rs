//! Zones and lines count right: against ground truth computed here with separate, plain geometry
//! (TUD-Campus tracks through `vigil analyze`), and against flicker, lost tracks and unconfirmed
//! ones.

use std::collections::BTreeMap;
use std::path::Path;

use vigil::analytics::{Analytics, AnalyticsSettings, Anchor, Coords, LineSettings, ZoneSettings};
use vigil::event::{Event, EventKind};
use vigil::frame::{BoxInFrame, Detection, Xyxy};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::common::free_port;
use super::common::{asset, model, root, vigil, wait_exit};
use super::service::{Mosquitto, run_logged, wait_for};

/// Three lines and two zones over TUD-Campus (640×480): pixels, a normalized one, class filter.
const ANALYTICS: &str = "
analytics:
  min_hits: 1
  forget_after: 1000
  count_every: 0s
";

fn pipeline(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "name: tud\nsources:\n  - id: cam\n    uri: test:smpte\n    zones:\n      \
         - {{name: left, points: [[0, 0], [250.5, 0], [250.5, 480], [0, 480]], inertia: 1}}\n      \
         - {{name: middle, points: [[0.3, 0.5], [0.7, 0.5], [0.7, 0.95], [0.3, 0.95]], coords: normalized, inertia: 1, classes: [person]}}\n    \
         lines:\n      \
         - {{name: v, points: [[320.5, 0], [320.5, 480]], hysteresis: 0, left_to_right: west, right_to_left: east}}\n      \
         - {{name: h, points: [[0, 400.5], [640, 400.5]], hysteresis: 0}}\n      \
         - {{name: diagonal, points: [[100.5, 480], [540.5, 150.5]], hysteresis: 0}}\n\
         detector:\n  model: {}\n{ANALYTICS}",
        root().join("models/yolov3-tiny.yaml").display()
    );
    let p = dir.join("tud.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

type Pt = (f64, f64);

/// `(b − a) × (p − a)`: the sign says the side (positive: right-hand side walking a → b on
/// screen, y down).
fn side(a: Pt, b: Pt, p: Pt) -> f64 {
    (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0)
}

/// Whether segments p–q and a–b cross (no touching: the test's lines sit on half pixels).
fn cross(p: Pt, q: Pt, a: Pt, b: Pt) -> bool {
    side(a, b, p) * side(a, b, q) < 0.0 && side(p, q, a) * side(p, q, b) < 0.0
}

fn in_polygon(poly: &[Pt], p: Pt) -> bool {
    let mut inside = false;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
        if (a.1 > p.1) != (b.1 > p.1) && p.0 < (b.0 - a.0) * (p.1 - a.1) / (b.1 - a.1) + a.0 {
            inside = !inside;
        }
    }
    inside
}

/// Ground truth: `(kind, region, track, direction or "")` for every crossing and zone change,
/// from consecutive bottom-centre points of each ground-truth trajectory.
fn expected(gt: &[(i64, i64, Pt)]) -> BTreeMap<(String, String, i64, String), u32> {
    let lines: [(&str, Pt, Pt, &str, &str); 3] = [
        ("v", (320.5, 0.0), (320.5, 480.0), "west", "east"),
        (
            "h",
            (0.0, 400.5),
            (640.0, 400.5),
            "left_to_right",
            "right_to_left",
        ),
        (
            "diagonal",
            (100.5, 480.0),
            (540.5, 150.5),
            "left_to_right",
            "right_to_left",
        ),
    ];
    let zones: [(&str, Vec<Pt>); 2] = [
        (
            "left",
            vec![(0.0, 0.0), (250.5, 0.0), (250.5, 480.0), (0.0, 480.0)],
        ),
        (
            "middle",
            vec![
                (192.0, 240.0),
                (448.0, 240.0),
                (448.0, 456.0),
                (192.0, 456.0),
            ],
        ),
    ];
    let mut by_id: BTreeMap<i64, Vec<(i64, Pt)>> = BTreeMap::new();
    for (frame, id, p) in gt {
        by_id.entry(*id).or_default().push((*frame, *p));
    }
    let mut out = BTreeMap::new();
    let mut add = |k: (&str, &str, i64, &str)| {
        *out.entry((k.0.into(), k.1.into(), k.2, k.3.into()))
            .or_insert(0) += 1;
    };
    for (id, mut path) in by_id {
        path.sort_by_key(|(f, _)| *f);
        for w in path.windows(2) {
            let (p, q) = (w[0].1, w[1].1);
            for (name, a, b, right, left) in &lines {
                if cross(p, q, *a, *b) {
                    add((
                        "cross",
                        name,
                        id,
                        if side(*a, *b, q) > 0.0 { right } else { left },
                    ));
                }
            }
        }
        for (name, poly) in &zones {
            let mut inside = false;
            for (_, p) in &path {
                let now = in_polygon(poly, *p);
                if now != inside {
                    add((if now { "enter" } else { "exit" }, name, id, ""));
                }
                inside = now;
            }
        }
    }
    out
}

#[test]
fn tud_campus_counts_equal_plain_geometry_on_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path());
    let gt_path = asset("mot/TUD-Campus/gt.txt");
    let events = dir.path().join("events.jsonl");
    let mut child = vigil()
        .args(["analyze", "--size", "640x480", "--tracks"])
        .arg(&gt_path)
        .arg("--config")
        .arg(&config)
        .stdout(std::fs::File::create(&events).unwrap())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, std::time::Duration::from_secs(60));
    assert!(status.success(), "vigil analyze failed: {status}");
    let mut got = BTreeMap::new();
    for line in std::fs::read_to_string(&events).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["lost"] == true || v["kind"] == "count" {
            continue;
        }
        let key = (
            v["kind"].as_str().unwrap().to_string(),
            v["region"].as_str().unwrap().to_string(),
            v["track_id"].as_i64().unwrap(),
            v["direction"].as_str().unwrap_or("").to_string(),
        );
        *got.entry(key).or_insert(0u32) += 1;
    }
    let gt: Vec<(i64, i64, Pt)> = vigil::regress::mot::load(&gt_path)
        .unwrap()
        .iter()
        .map(|r| {
            let b = r.bbox;
            (
                r.frame,
                r.id,
                (f64::from(b.x1 + b.x2) / 2.0, f64::from(b.y2)),
            )
        })
        .collect();
    let want = expected(&gt);
    let crossings = want.keys().filter(|k| k.0 == "cross").count();
    let entries = want.keys().filter(|k| k.0 == "enter").count();
    assert!(crossings >= 5 && entries >= 5, "too easy a test: {want:?}");
    assert_eq!(got, want);
}

fn det(id: u64, class_id: u32, x: f32, y: f32) -> Detection {
    // a 20×40 box whose bottom centre is (x, y)
    Detection {
        class_id,
        score: 0.9,
        box_in_frame: BoxInFrame(Xyxy {
            x1: x - 10.0,
            y1: y - 40.0,
            x2: x + 10.0,
            y2: y,
        }),
        track_id: Some(id),
        mask: None,
    }
}

fn one_line(hysteresis: f64, min_hits: u32) -> AnalyticsSettings {
    AnalyticsSettings {
        zones: vec![],
        lines: vec![LineSettings {
            name: "door".into(),
            points: vec![[100.0, 0.0], [100.0, 200.0]],
            coords: Coords::Pixels,
            classes: None,
            hysteresis,
            left_to_right: "in".into(),
            right_to_left: "out".into(),
            anchor: Anchor::BottomCenter,
        }],
        min_hits,
        forget_after: 30,
        count_every_s: None,
    }
}

/// Feed `xs` (one position a frame, `None`: the track is not seen) and return the crossings.
fn crossings(a: &mut Analytics, xs: &[Option<f32>]) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, x) in xs.iter().enumerate() {
        let dets: Vec<Detection> = x.iter().map(|x| det(7, 0, *x, 150.0)).collect();
        out.extend(a.update(i as u64, i as f64 / 25.0, (640, 480), &dets));
    }
    out.retain(|e| e.kind == EventKind::Cross);
    out
}

#[test]
fn jitter_across_a_line_counts_at_most_once() {
    let mut xs: Vec<Option<f32>> = (0..10).map(|i| Some(80.0 + i as f32)).collect();
    for i in 0..100 {
        xs.push(Some(if i % 2 == 0 { 97.0 } else { 103.0 }));
    }
    let mut a = Analytics::new(one_line(5.0, 3));
    let got = crossings(&mut a, &xs);
    assert!(got.len() <= 1, "{got:?}");
    // without hysteresis the same jitter is 99 crossings (one per change of side): the band is
    // what prevents them
    let mut raw = Analytics::new(one_line(0.0, 3));
    assert_eq!(crossings(&mut raw, &xs).len(), 99);
}

#[test]
fn a_track_lost_and_found_again_counts_once() {
    // walks right, is lost for 10 frames around the line, comes back on the other side
    let mut xs: Vec<Option<f32>> = (0..10).map(|i| Some(60.0 + 3.0 * i as f32)).collect();
    xs.extend([None; 10]);
    xs.extend((0..10).map(|i| Some(130.0 + 3.0 * i as f32)));
    let mut a = Analytics::new(one_line(5.0, 3));
    let got = crossings(&mut a, &xs);
    assert_eq!(got.len(), 1, "{got:?}");
    // "in": from the left-hand to the right-hand side walking the line top to bottom, i.e.
    // from larger x to smaller x: this track went the other way
    assert_eq!(got[0].direction.as_deref(), Some("out"));
    assert_eq!(got[0].track_id, Some(7));
}

#[test]
fn an_unconfirmed_track_counts_nothing() {
    let mut a = Analytics::new(one_line(5.0, 3));
    assert!(crossings(&mut a, &[Some(80.0), Some(120.0)]).is_empty());
    // the same two frames with min_hits 1 count
    let mut b = Analytics::new(one_line(5.0, 1));
    assert_eq!(crossings(&mut b, &[Some(80.0), Some(120.0)]).len(), 1);
}

#[test]
fn zone_dwell_occupancy_and_lost_exit() {
    let settings = AnalyticsSettings {
        zones: vec![ZoneSettings {
            name: "door".into(),
            points: vec![[0.0, 0.0], [200.0, 0.0], [200.0, 200.0], [0.0, 200.0]],
            coords: Coords::Pixels,
            classes: Some(vec![0]),
            min_dwell_s: Some(1.0),
            inertia: 3,
            anchor: Anchor::BottomCenter,
        }],
        lines: vec![],
        min_hits: 1,
        forget_after: 5,
        count_every_s: None,
    };
    let mut a = Analytics::new(settings);
    let mut events = Vec::new();
    // a person stands in the zone for 2 s at 25 fps, a car (class 2) beside them is ignored
    for i in 0..50u64 {
        let dets = [det(1, 0, 100.0, 150.0), det(2, 2, 120.0, 150.0)];
        events.extend(a.update(i, i as f64 / 25.0, (640, 480), &dets));
    }
    assert_eq!(a.occupancy()[0].get(&0), Some(&1));
    assert_eq!(a.occupancy()[0].get(&2), None);
    // then is no longer seen: forgotten after 5 frames, reported as a lost exit
    for i in 50..60u64 {
        events.extend(a.update(i, i as f64 / 25.0, (640, 480), &[]));
    }
    let kinds: Vec<(EventKind, bool)> = events.iter().map(|e| (e.kind, e.lost)).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Enter, false),
            (EventKind::Dwell, false),
            (EventKind::Exit, true)
        ]
    );
    // inertia 3: the enter comes on the third frame inside
    assert_eq!(events[0].seq, 2);
    let dwell = events[1].dwell_s.unwrap();
    assert!((1.0..1.1).contains(&dwell), "{dwell}");
}

/// `(topic, record, dup)` of every message, in arrival order.
type Messages = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value, bool)>>>;

/// A QoS-1 subscriber with a persistent session on `filter` (reconnects by itself).
fn event_subscriber(port: u16, filter: &str) -> (Messages, std::sync::Arc<AtomicBool>) {
    let got: Messages = Messages::default();
    let subscribed = std::sync::Arc::new(AtomicBool::new(false));
    let (g, sub, filter) = (got.clone(), subscribed.clone(), filter.to_string());
    std::thread::spawn(move || {
        let mut opts = rumqttc::MqttOptions::new("it-events", "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = rumqttc::Client::new(opts, 100);
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    client
                        .try_subscribe(filter.as_str(), rumqttc::QoS::AtLeastOnce)
                        .unwrap();
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    sub.store(true, Ordering::Relaxed);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    g.lock().unwrap().push((p.topic.clone(), v, p.dup));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    (got, subscribed)
}

/// What identifies an event: `(seq, kind, region, track, direction)`.
fn identity(v: &serde_json::Value) -> (u64, String, String, Option<u64>, String) {
    (
        v["seq"].as_u64().unwrap(),
        v["kind"].as_str().unwrap().to_string(),
        v["region"].as_str().unwrap_or("").to_string(),
        v["track_id"].as_u64(),
        v["direction"].as_str().unwrap_or("").to_string(),
    )
}

/// Zone and line events of a real run on vtest reach a real mosquitto on topics per kind, in
/// order, none lost across a 20 s broker outage; the same events as the run's `events` file,
/// with counts per direction.
#[test]
fn line_events_reach_mqtt_in_order_across_a_20_s_broker_outage() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Mosquitto::start(port, dir.path());
    let (got, subscribed) = event_subscriber(port, "vigil/ev/vtest/#");
    wait_for("the subscription", Duration::from_secs(10), || {
        subscribed.load(Ordering::Relaxed)
    });
    let p = dir.path().join("ev.yaml");
    std::fs::write(
        &p,
        format!(
            "name: ev\nsources:\n  - id: vtest\n    uri: file:{}\n    max_frames: 400\n    lines:\n      \
             - {{name: middle, points: [[0.5, 0.3], [0.5, 1.0]], coords: normalized, left_to_right: westbound, right_to_left: eastbound}}\n    \
             zones:\n      - {{name: lawn, points: [[0, 0.4], [0.3, 0.4], [0.3, 1], [0, 1]], coords: normalized}}\n\
             detector:\n  model: {}\nanalytics:\n  count_every: 10s\n\
             outputs:\n  - kind: events\n    path: events.jsonl\n  \
             - kind: mqtt\n    broker: 127.0.0.1:{port}\n    publish: events\n    outbox: outbox/{{source}}\n    drain: 3m\n",
            asset("vtest.avi").display(),
            model().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("vigil.log");
    let mut child = run_logged(&p, &log);
    wait_for("the first 5 events", Duration::from_secs(300), || {
        got.lock().unwrap().len() >= 5
    });
    broker.stop();
    std::thread::sleep(Duration::from_secs(20));
    let _broker = Mosquitto::start(port, dir.path());
    let status = super::common::wait_exit(&mut child.0, Duration::from_secs(400));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    let written: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<_> = written.iter().map(identity).collect();
    wait_for("every event over MQTT", Duration::from_secs(60), || {
        let got = got.lock().unwrap();
        let ids: std::collections::HashSet<_> = got.iter().map(|m| identity(&m.1)).collect();
        want.iter().all(|w| ids.contains(w))
    });
    let received = got.lock().unwrap().clone();
    // first arrivals, zone and line events only (`start`/`end` are the MQTT output's own)
    let mut seen = std::collections::HashSet::new();
    let mut firsts = Vec::new();
    for (topic, v, _) in &received {
        let id = identity(v);
        assert_eq!(topic, &format!("vigil/ev/vtest/{}", id.1), "topic per kind");
        if !["start", "end"].contains(&id.1.as_str()) && seen.insert(id.clone()) {
            firsts.push(id);
        }
    }
    assert_eq!(firsts, want, "lost, extra or out of order");
    let crossings = |dir: &str| want.iter().filter(|w| w.1 == "cross" && w.4 == dir).count();
    assert!(
        crossings("westbound") > 0 && crossings("eastbound") > 0,
        "{want:?}"
    );
    let counts: Vec<&serde_json::Value> = written
        .iter()
        .filter(|v| v["kind"] == "count" && v["region"] == "middle")
        .collect();
    let counted: u64 = counts
        .iter()
        .flat_map(|c| c["counts"].as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(
        counted as usize,
        crossings("westbound") + crossings("eastbound")
    );
    assert!(
        received.iter().any(|m| m.1["kind"] == "start"),
        "track starts published too"
    );
}

/// `vigil serve` shows the events: live over server-sent events, the recent ones at `/events`,
/// counted in `/metrics` — the same events its `events` output writes.
#[test]
fn serve_streams_events_and_counts_them_in_metrics() {
    use std::io::{BufRead, BufReader, Write};
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("ev.yaml"),
        format!(
            "name: ev\nsources:\n  - id: vtest\n    uri: file:{}\n    max_frames: 300\n    lines:\n      \
             - {{name: middle, points: [[0.5, 0.3], [0.5, 1.0]], coords: normalized}}\n\
             detector:\n  model: {}\nanalytics:\n  count_every: 0s\n\
             outputs:\n  - kind: events\n    path: {}\n",
            asset("vtest.avi").display(),
            model().display(),
            dir.path().join("events.jsonl").display()
        ),
    )
    .unwrap();
    let http = free_port();
    let log = dir.path().join("serve.log");
    // the stream is opened as soon as the port answers, before the detector has warmed up
    let child = vigil()
        .args(["serve", "--config-dir"])
        .arg(&conf)
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(super::service::state_args(&conf, http))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _serve = super::service::Reaped(child);
    let mut sse = None;
    wait_for("the HTTP port", Duration::from_secs(30), || {
        sse = std::net::TcpStream::connect(("127.0.0.1", http)).ok();
        sse.is_some()
    });
    let mut sse = sse.unwrap();
    let token = super::service::token_of(http);
    write!(
        sse,
        "GET /events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut reader = BufReader::new(sse);
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut streamed = Vec::new();
    let mut line = String::new();
    while streamed.len() < 3 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream closed");
        if let Some(data) = line.strip_prefix("data: ") {
            streamed.push(serde_json::from_str::<serde_json::Value>(data).unwrap());
        }
    }
    wait_for("the run to end", Duration::from_secs(300), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("pipeline finished")
    });
    let written: Vec<_> = std::fs::read_to_string(dir.path().join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| identity(&serde_json::from_str(l).unwrap()))
        .collect();
    let (code, body) = super::service::get(http, "/events?n=1000").unwrap();
    assert_eq!(code, 200, "{body}");
    let recent: Vec<_> = serde_json::from_str::<Vec<serde_json::Value>>(&body)
        .unwrap()
        .iter()
        .map(identity)
        .collect();
    assert_eq!(
        recent, written,
        "/events holds what the events output wrote"
    );
    for s in &streamed {
        assert!(
            written.contains(&identity(s)),
            "streamed {s} was not written"
        );
    }
    let crosses = written.iter().filter(|w| w.1 == "cross").count();
    assert!(crosses > 0);
    let (_, metrics) = super::service::get(http, "/metrics").unwrap();
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vigil_events_total{") && l.contains("kind=\"cross\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as usize, crosses, "{metrics}");
}

/// Whether a clip's sidecar lists the event `id`.
fn holds(sidecar: &serde_json::Value, id: &(u64, String, String, Option<u64>, String)) -> bool {
    sidecar["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| identity(x) == *id)
}

/// Every line event of a vtest run has a playable clip from at most one frame after
/// `event − pre_roll`, with snapshots; a size-bounded folder deletes its oldest clips.
#[test]
fn every_event_gets_a_playable_clip_with_pre_roll_and_retention_bounds_the_folder() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clips.yaml");
    std::fs::write(
        &p,
        format!(
            "name: cl\nsources:\n  - id: vtest\n    uri: file:{}\n    max_frames: 200\n    lines:\n      \
             - {{name: middle, points: [[0.5, 0.3], [0.5, 1.0]], coords: normalized}}\n\
             detector:\n  model: {}\nanalytics:\n  count_every: 0s\n\
             outputs:\n  - kind: events\n    path: events.jsonl\n  \
             - kind: clips\n    path: clips\n    pre_roll: 2s\n    post_roll: 1s\n  \
             - kind: clips\n    path: small\n    pre_roll: 2s\n    post_roll: 1s\n    max_size: 1MiB\n  \
             - kind: clips\n    path: capped\n    pre_roll: 1s\n    post_roll: 2s\n    max_length: 3s\n",
            asset("vtest.avi").display(),
            model().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("vigil.log");
    let mut child = run_logged(&p, &log);
    let status = wait_exit(&mut child.0, Duration::from_secs(300));
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let events: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 2, "{events:?}");
    let sidecars = |folder: &str| -> Vec<serde_json::Value> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path().join(folder))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
            .collect();
        v.sort_by(|a: &serde_json::Value, b| {
            a["start_s"]
                .as_f64()
                .partial_cmp(&b["start_s"].as_f64())
                .unwrap()
        });
        v
    };
    let clips = sidecars("clips");
    let frame_s = 0.1; // vtest is 10 fps
    for e in &events {
        let id = identity(e);
        let holding: Vec<&serde_json::Value> = clips.iter().filter(|c| holds(c, &id)).collect();
        assert_eq!(holding.len(), 1, "event {e} in {} clips", holding.len());
        let clip = holding[0];
        let t = e["time_s"].as_f64().unwrap();
        let start = clip["start_s"].as_f64().unwrap();
        assert!(
            start <= (t - 2.0).max(0.0) + frame_s + 1e-6,
            "clip starts at {start} for an event at {t}"
        );
        let end = start + clip["frames"].as_f64().unwrap() * frame_s;
        assert!(
            end >= t + 1.0 - frame_s - 1e-6 || end >= 19.9 - 1e-6,
            "clip ends at {end} for {t}"
        );
        let mp4 = dir
            .path()
            .join("clips")
            .join(clip["clip"].as_str().unwrap());
        let (frames, w, h) = super::common::decode_count(&mp4);
        assert_eq!((frames, w, h), (clip["frames"].as_u64().unwrap(), 768, 576));
        let jpg = mp4.with_extension("jpg");
        assert!(
            std::fs::metadata(&jpg).unwrap().len() > 1000,
            "snapshot of {}",
            mp4.display()
        );
        let stem = mp4.with_extension("");
        assert!(std::fs::metadata(format!("{}-crop.jpg", stem.display())).is_ok());
    }
    // a busy scene makes several clips of at most max_length rather than one long one, each
    // event still in exactly one
    let capped = sidecars("capped");
    for c in &capped {
        let length = c["frames"].as_f64().unwrap() * frame_s;
        assert!(length <= 3.0 + frame_s + 1e-6, "{length} s: {c}");
    }
    for e in &events {
        let n = capped.iter().filter(|c| holds(c, &identity(e))).count();
        assert_eq!(n, 1, "event {e} in {n} capped clips");
    }
    // the bounded folder kept the newest clips and stayed under its size (but for the newest)
    let kept = sidecars("small");
    assert!(
        !kept.is_empty() && kept.len() < clips.len(),
        "{} of {}",
        kept.len(),
        clips.len()
    );
    assert_eq!(kept.last().unwrap()["clip"], clips.last().unwrap()["clip"]);
    let size: u64 = std::fs::read_dir(dir.path().join("small"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let newest: u64 = std::fs::read_dir(dir.path().join("small"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with(
                clips.last().unwrap()["clip"]
                    .as_str()
                    .unwrap()
                    .trim_end_matches(".mp4"),
            )
        })
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(size <= (1 << 20) + newest, "{size} bytes kept");
}
