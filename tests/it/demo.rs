//! The spine end to end: vtest.avi (795 frames) through the real detector to an H.264 MP4 and JSONL.

use super::common::{asset, decode_count, pipeline, records, vigil};

/// The demo's outputs: an H.264 768x576 MP4 of every frame, one valid record per frame, people in
/// at least 95% of frames (OpenCV's DNN finds them in all sampled frames).
#[test]
fn demo_on_vtest_writes_h264_mp4_and_a_record_per_frame() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &[("vtest", &asset("vtest.avi"))], "");
    let out = vigil().arg("run").arg(&p).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let mp4 = dir.path().join("out/vtest.mp4");
    let disc = std::process::Command::new("gst-discoverer-1.0")
        .arg(&mp4)
        .output()
        .unwrap();
    let disc = String::from_utf8_lossy(&disc.stdout);
    assert!(disc.contains("H.264"), "{disc}");
    assert!(
        !disc.contains("4:4:4"),
        "High 4:4:4 is refused by many players: {disc}"
    );
    let (frames, w, h) = decode_count(&mp4);
    assert_eq!((w, h), (768, 576));
    assert!(frames.abs_diff(795) <= 1, "{frames} frames in the MP4");

    let recs = records(&dir.path().join("out/vtest.jsonl"));
    assert_eq!(recs.len(), 795);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(
            (r.schema, r.seq, r.source.as_str(), r.pipeline.as_str()),
            (1, i as u64, "vtest", "test")
        );
        assert!(r.pts_ns.is_some() && r.captured_at.is_some());
        for d in &r.detections {
            let [x1, y1, x2, y2] = d.bbox;
            assert!(
                0.0 <= x1 && x1 <= x2 && x2 <= 768.0 && 0.0 <= y1 && y1 <= y2 && y2 <= 576.0,
                "{d:?}"
            );
            assert!(d.score >= 0.25 && d.score <= 1.0);
        }
    }
    let with_people = recs
        .iter()
        .filter(|r| r.detections.iter().any(|d| d.class == "person"))
        .count();
    assert!(
        with_people * 100 >= 95 * recs.len(),
        "people in only {with_people} of {} frames",
        recs.len()
    );
}

/// bikes.mp4 is H.264 in MP4 (vtest.avi is MS-MPEG4v3 in AVI): both must decode.
#[test]
fn h264_mp4_source_decodes_every_frame() {
    let (frames, w, h) = decode_count(&asset("bikes.mp4"));
    assert_eq!((frames, w, h), (250, 640, 272));
}

/// `detector.every: 3`: the detector runs on every third frame; on the two between, the tracker's
/// predicted boxes carry the IDs of the tracks seen at the last detection.
#[test]
fn every_third_frame_detects_and_the_tracker_fills_the_gaps() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &[("vtest", &asset("vtest.avi"))], "");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("  confidence: 0.25\n", "  confidence: 0.25\n  every: 3\n");
    std::fs::write(&p, text).unwrap();
    let out = vigil().arg("run").arg(&p).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&dir.path().join("out/vtest.jsonl"));
    assert_eq!(recs.len(), 795);
    let ids = |r: &vigil::output::record::Record| -> Vec<u64> {
        r.detections.iter().filter_map(|d| d.track_id).collect()
    };
    let mut with_people = 0;
    for (i, r) in recs.iter().enumerate() {
        if r.detections.iter().any(|d| d.class == "person") {
            with_people += 1;
        }
        if i % 3 != 0 {
            assert!(
                r.detections.iter().all(|d| d.track_id.is_some()),
                "frame {i}: predicted boxes without ids"
            );
            let last_detected = ids(&recs[i - i % 3]);
            for id in ids(r) {
                assert!(
                    last_detected.contains(&id),
                    "frame {i}: track {id} was not in frame {}",
                    i - i % 3
                );
            }
        }
    }
    assert!(
        with_people * 100 >= 90 * recs.len(),
        "people in only {with_people} frames"
    );
}
