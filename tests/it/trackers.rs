//! Trackers replayed on recorded detections (YOLOv3-tiny on vtest.avi) against reference
//! implementations run once by scripts/reference/trackers.py: IDs exactly, boxes within 1e-2.

use std::collections::BTreeMap;

use vigil::track::bytetrack::{ByteTrack, ByteTrackParams};
use vigil::track::sort::{Sort, SortParams};
use vigil::track::{Tracker, TrackerInput};

use super::common::root;

type Rows = BTreeMap<u64, Vec<(u64, [f64; 4])>>;

fn detections() -> (u64, BTreeMap<u64, Vec<TrackerInput>>) {
    let text =
        std::fs::read_to_string(root().join("tests/golden/track/vtest_detections.csv")).unwrap();
    let mut frames: BTreeMap<u64, Vec<TrackerInput>> = BTreeMap::new();
    let mut last = 0;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        let f = v[0] as u64;
        last = last.max(f);
        frames.entry(f).or_default().push(TrackerInput {
            bbox: [v[1], v[2], v[3], v[4]],
            score: v[5],
            class_id: v[6] as u32,
        });
    }
    (last, frames)
}

fn reference(name: &str) -> Rows {
    let text =
        std::fs::read_to_string(root().join(format!("tests/golden/track/{name}_reference.csv")))
            .unwrap();
    let mut rows: Rows = BTreeMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        rows.entry(v[0] as u64)
            .or_default()
            .push((v[1] as u64, [v[2], v[3], v[4], v[5]]));
    }
    rows
}

fn replay(tracker: &mut dyn Tracker) -> Rows {
    let (last, frames) = detections();
    let mut rows: Rows = BTreeMap::new();
    for f in 1..=last {
        let dets = frames.get(&f).cloned().unwrap_or_default();
        let mut out: Vec<(u64, [f64; 4])> = tracker
            .update(&dets)
            .into_iter()
            .map(|t| (t.track_id, t.bbox))
            .collect();
        out.sort_by_key(|t| t.0);
        if !out.is_empty() {
            rows.insert(f, out);
        }
    }
    rows
}

fn compare(name: &str, got: &Rows, want: &Rows) {
    let frames: std::collections::BTreeSet<&u64> = got.keys().chain(want.keys()).collect();
    for f in frames {
        let g = got.get(f).cloned().unwrap_or_default();
        let w = want.get(f).cloned().unwrap_or_default();
        let gi: Vec<u64> = g.iter().map(|t| t.0).collect();
        let wi: Vec<u64> = w.iter().map(|t| t.0).collect();
        assert_eq!(gi, wi, "{name}: track ids differ at frame {f}");
        for ((id, a), (_, b)) in g.iter().zip(&w) {
            for k in 0..4 {
                assert!(
                    (a[k] - b[k]).abs() <= 1e-2,
                    "{name}: frame {f} track {id}: {a:?} vs {b:?}"
                );
            }
        }
    }
}

#[test]
fn bytetrack_matches_reference_ids_and_boxes() {
    let mut t = ByteTrack::new(ByteTrackParams {
        high: 0.5,
        low: 0.1,
        match_thresh: 0.8,
        max_age: 30,
    });
    compare("bytetrack", &replay(&mut t), &reference("bytetrack"));
}

#[test]
fn sort_matches_reference_ids_and_boxes() {
    let mut t = Sort::new(SortParams {
        max_age: 1,
        min_hits: 3,
        iou: 0.3,
    });
    compare("sort", &replay(&mut t), &reference("sort"));
}
