//! Every frame size works with every output: odd sizes, tiny, slivers and 4K each give one record
//! per frame and a playable MP4 that keeps the whole source picture (padded by a repeated last
//! column/row to even sizes, and to x264's 16-pixel minimum on an axis).

use std::time::Duration;

use super::common::{decode_count, generated_video, heavy, model, output_within, records, vigil};

#[test]
fn odd_tiny_sliver_and_4k_frames_give_a_record_per_frame_and_a_playable_mp4() {
    let _heavy = heavy();
    const FRAMES: u32 = 6;
    let dir = tempfile::tempdir().unwrap();
    // (width, height) → the size the MP4 has
    let sizes = [
        ((720, 405), (720, 406)),
        ((641, 481), (642, 482)),
        ((16, 16), (16, 16)),
        ((98, 2), (98, 16)),
        ((3840, 2160), (3840, 2160)),
    ];
    let mut y = String::from("name: sizes\nsources:\n");
    for ((w, h), _) in sizes {
        let v = generated_video(dir.path(), w, h, FRAMES);
        y.push_str(&format!(
            "  - id: s{w}x{h}\n    uri: file:{}\n",
            v.display()
        ));
    }
    y.push_str(&format!(
        "detector:\n  model: {}\noutputs:\n  - {{ kind: mp4, path: \"out/{{source}}.mp4\" }}\n  - {{ kind: jsonl, path: \"out/{{source}}.jsonl\" }}\n",
        model().display()
    ));
    let p = dir.path().join("sizes.yaml");
    std::fs::write(&p, y).unwrap();
    let (out, _) = output_within(vigil().arg("run").arg(&p), Duration::from_secs(240));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for ((w, h), (mw, mh)) in sizes {
        let id = format!("s{w}x{h}");
        let recs = records(&dir.path().join(format!("out/{id}.jsonl")));
        assert_eq!(recs.len(), FRAMES as usize, "{id}: one record per frame");
        let (n, gw, gh) = decode_count(&dir.path().join(format!("out/{id}.mp4")));
        assert_eq!((n, gw, gh), (u64::from(FRAMES), mw, mh), "{id}: MP4");
    }
}
