//! Zones and lines count right: against ground truth computed here with separate, plain geometry
//! (TUD-Campus tracks through `vigil analyze`), and against flicker, lost tracks and unconfirmed
//! ones.

use std::collections::BTreeMap;
use std::path::Path;

use vigil::analytics::{Analytics, AnalyticsSettings, Anchor, Coords, LineSettings, ZoneSettings};
use vigil::event::{Event, EventKind};
use vigil::frame::{BoxInFrame, Detection, Xyxy};

use super::common::{asset, root, vigil, wait_exit};

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
