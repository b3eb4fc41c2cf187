//! Broken inputs get a clear error naming their source; nothing panics, and what did decode is
//! still written.

use super::common::{asset, pipeline, records, vigil};

/// A truncated AVI and a file that is not video, in one pipeline: each error names its source, the
/// frames before the cut are finalized, and the process exits 1 without a panic.
#[test]
fn truncated_and_non_video_sources_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(asset("vtest.avi")).unwrap();
    let truncated = dir.path().join("cut.avi");
    std::fs::write(&truncated, &full[..400_000]).unwrap();
    let notvideo = dir.path().join("notes.mp4");
    std::fs::write(&notvideo, "shopping list: milk, eggs\n").unwrap();
    let p = pipeline(dir.path(), &[("cut", &truncated), ("notes", &notvideo)], "");

    let out = vigil().arg("run").arg(&p).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("error: source `cut`:") && stderr.contains("truncated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: source `notes`:")
            && stderr.contains("Could not determine type of stream"),
        "{stderr}"
    );

    let recs = records(&dir.path().join("out/cut.jsonl"));
    assert!(
        !recs.is_empty() && recs.len() < 795,
        "{} records before the cut",
        recs.len()
    );
    assert!(dir.path().join("out/cut.mp4").is_file());
    assert!(
        !dir.path().join("out/notes.mp4").exists(),
        "no empty MP4 for a source that never produced a frame"
    );
}

/// A missing source file is a config error with its place, before anything starts.
#[test]
fn missing_source_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &[("gone", &dir.path().join("nope.avi"))], "");
    let out = vigil().arg("run").arg(&p).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("pipeline.yaml:4:10: source `gone`: no such file"),
        "{stderr}"
    );
}

/// A live source that never sends a frame trips the stall watchdog (`stall: 1s`) and is reported
/// stalled, naming the source, instead of hanging the pipeline.
#[test]
fn silent_live_source_is_reported_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stall.yaml");
    std::fs::write(
        &p,
        format!(
            "name: stall\nsources:\n  - id: quiet\n    uri: udp://127.0.0.1:59998\n    stall: 1s\n    reconnect: {{ retries: 0 }}\ndetector:\n  model: {}\noutputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            super::common::model().display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = vigil().arg("run").arg(&p).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("source `quiet`") && stderr.contains("stalled"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

/// Damaged and non-video files, all in one pipeline: each source ends by itself — with a message
/// naming it, or after decoding what it could — JSONL holds whole lines only, nothing panics, and
/// the run ends well within a minute.
#[test]
fn damaged_and_non_video_files_each_end_with_a_clear_message() {
    use super::common::{generated_video, output_within};
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = std::fs::read(generated_video(d, 320, 240, 20)).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut flipped_body = good.clone();
    for i in (good.len() / 4..good.len()).step_by(97) {
        flipped_body[i] ^= 0x5a;
    }
    let mut flipped_head = good.clone();
    for b in flipped_head.iter_mut().take(64).skip(4) {
        *b ^= 0xff;
    }
    let wav = d.join("tone.wav");
    let (o, _) = output_within(
        std::process::Command::new("gst-launch-1.0").args([
            "-q",
            "audiotestsrc",
            "num-buffers=20",
            "!",
            "wavenc",
            "!",
            "filesink",
            &format!("location={}", wav.display()),
        ]),
        std::time::Duration::from_secs(60),
    );
    assert!(o.status.success());
    let files: Vec<(&str, &str, Vec<u8>)> = vec![
        ("empty", "mp4", Vec::new()),
        ("random", "mp4", random(64 * 1024)),
        ("zeros", "avi", vec![0; 1 << 20]),
        ("audio", "mp4", std::fs::read(&wav).unwrap()),
        (
            "jpeg",
            "mp4",
            std::fs::read(asset("images/dog.jpg")).unwrap(),
        ),
        (
            "text",
            "mkv",
            b"<html><body>not a video</body></html>\n".to_vec(),
        ),
        ("truncated", "mp4", good[..good.len() / 2].to_vec()),
        ("headonly", "mp4", good[..1024.min(good.len())].to_vec()),
        ("flipbody", "mp4", flipped_body),
        ("fliphead", "mp4", flipped_head),
        (
            "cutavi",
            "avi",
            std::fs::read(asset("vtest.avi")).unwrap()[..300_000].to_vec(),
        ),
    ];
    let mut sources = Vec::new();
    for (id, ext, bytes) in &files {
        let p = d.join(format!("{id}.{ext}"));
        std::fs::write(&p, bytes).unwrap();
        sources.push((*id, p));
    }
    let refs: Vec<(&str, &std::path::Path)> =
        sources.iter().map(|(i, p)| (*i, p.as_path())).collect();
    let p = pipeline(d, &refs, "");
    let (out, took) = output_within(
        vigil().arg("run").arg(&p),
        std::time::Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for (id, _) in &sources {
        let jsonl = d.join(format!("out/{id}.jsonl"));
        let decoded = if jsonl.exists() {
            records(&jsonl).len()
        } else {
            0
        };
        let named = stderr.contains(&format!("error: source `{id}`:"));
        assert!(
            named || decoded > 0,
            "{id}: neither an error naming it nor frames:\n{stderr}"
        );
    }
    for id in ["empty", "random", "zeros", "audio", "text"] {
        assert!(
            stderr.contains(&format!("error: source `{id}`:")),
            "{id}:\n{stderr}"
        );
    }
}
