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

/// 100 000 frames of churn — objects entering, crossing and leaving, a few at a time — keep every
/// tracker's state bounded, and IDs only ever grow (never reused).
#[test]
fn trackers_stay_bounded_over_100k_frames_of_churn() {
    use vigil::track::iou::{IouParams, IouTracker};
    let mut trackers: Vec<(&str, Box<dyn Tracker>)> = vec![
        ("iou", Box::new(IouTracker::new(IouParams::default()))),
        ("sort", Box::new(Sort::new(SortParams::default()))),
        (
            "bytetrack",
            Box::new(ByteTrack::new(ByteTrackParams::default())),
        ),
    ];
    for (name, tracker) in &mut trackers {
        let mut max_held = 0;
        let mut max_id = 0;
        for f in 0u64..100_000 {
            // Object k lives for 40 frames starting at frame 10k, moving right 3 px a frame;
            // about four are in view at once.
            let dets: Vec<TrackerInput> = (f.saturating_sub(40) / 10..=f / 10)
                .filter(|k| f >= k * 10 && f < k * 10 + 40)
                .map(|k| {
                    let age = (f - k * 10) as f64;
                    let y = ((k * 37) % 400) as f64;
                    TrackerInput {
                        bbox: [age * 3.0, y, age * 3.0 + 40.0, y + 80.0],
                        score: 0.9,
                        class_id: 0,
                    }
                })
                .collect();
            for t in tracker.update(&dets) {
                assert!(t.track_id >= 1);
                max_id = max_id.max(t.track_id);
            }
            max_held = max_held.max(tracker.held());
        }
        assert!(max_held <= 64, "{name}: held up to {max_held} tracks");
        // ~10 000 objects passed; each got at least one ID, IDs were never recycled.
        assert!(
            max_id >= 9_000,
            "{name}: only {max_id} ids for 10 000 objects"
        );
    }
}

#[test]
fn ocsort_matches_reference_ids_and_boxes() {
    use vigil::track::ocsort::{OcSort, OcSortParams};
    let mut t = OcSort::new(OcSortParams {
        det_thresh: 0.5,
        max_age: 30,
        min_hits: 3,
        iou: 0.3,
        delta_t: 3,
        inertia: 0.2,
    });
    compare("ocsort", &replay(&mut t), &reference("ocsort"));
}
