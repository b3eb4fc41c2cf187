//! `vigil regress`: deterministic replay, golden comparison, and the report.

use std::path::{Path, PathBuf};

use sha2::Digest;

use super::common::{asset, model, root, vigil};

/// The shipped regression pipeline passes against the committed goldens (vtest.avi + bikes.mp4).
#[test]
fn shipped_regression_passes_against_committed_goldens() {
    let _heavy = super::common::heavy();
    let report = tempfile::tempdir().unwrap();
    let out = vigil()
        .current_dir(root())
        .args([
            "regress",
            "pipelines/regress-vtest.yaml",
            "--golden",
            "tests/golden/regress",
            "--report",
        ])
        .arg(report.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("vtest: pass") && stdout.contains("bikes: pass"),
        "{stdout}"
    );
}

/// A short pipeline on the first 60 frames of bikes.mp4 with `confidence`, in `dir`.
fn short_pipeline(dir: &Path, confidence: f32) -> PathBuf {
    let p = dir.join("short.yaml");
    std::fs::write(
        &p,
        format!(
            "name: short\nsources:\n  - id: bikes\n    uri: file:{}\n    max_frames: 60\ndetector:\n  model: {}\n  confidence: {confidence}\n\
             tracker:\n  kind: bytetrack\noutputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            asset("bikes.mp4").display(),
            model().display()
        ),
    )
    .unwrap();
    p
}

fn regress(pipeline: &Path, golden: &Path, report: &Path, update: bool) -> (bool, String) {
    let mut c = vigil();
    c.arg("regress")
        .arg(pipeline)
        .arg("--golden")
        .arg(golden)
        .arg("--report")
        .arg(report);
    if update {
        c.arg("--update");
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn sha(path: &Path) -> String {
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Two `--deterministic` runs write byte-identical JSONL.
#[test]
fn deterministic_runs_are_byte_identical() {
    let _heavy = super::common::heavy();
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let p = short_pipeline(dir.path(), 0.25);
        let out = vigil()
            .args(["run", "--deterministic"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let jsonl = dir.path().join("out/bikes.jsonl");
        assert_eq!(std::fs::read_to_string(&jsonl).unwrap().lines().count(), 60);
        hashes.push(sha(&jsonl));
    }
    assert_eq!(hashes[0], hashes[1]);
}

/// Raising the threshold from 0.25 to 0.5 fails the regression and the report names the missing
/// detections; `--update` records the new behaviour and then it passes.
#[test]
fn threshold_change_fails_then_update_passes() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let golden = dir.path().join("golden");
    let report = dir.path().join("report");
    let (ok, log) = regress(&short_pipeline(dir.path(), 0.25), &golden, &report, true);
    assert!(ok, "{log}");
    let (ok, log) = regress(&short_pipeline(dir.path(), 0.5), &golden, &report, false);
    assert!(!ok, "a higher threshold must lose detections: {log}");
    assert!(
        log.contains("bikes: FAIL") && log.contains("golden detections missing"),
        "{log}"
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("FAIL") && md.contains("missing (golden only)"),
        "{md}"
    );
    let (ok, log) = regress(&short_pipeline(dir.path(), 0.5), &golden, &report, true);
    assert!(ok, "{log}");
    let (ok, log) = regress(&short_pipeline(dir.path(), 0.5), &golden, &report, false);
    assert!(ok, "{log}");
}

/// A golden box moved by 20 px is reported in exactly its frame; the report's chart and thumbnail
/// are real pictures.
#[test]
fn corrupted_golden_box_is_reported_in_its_frame_with_pictures() {
    let _heavy = super::common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let golden = dir.path().join("golden");
    let report = dir.path().join("report");
    let p = short_pipeline(dir.path(), 0.25);
    assert!(regress(&p, &golden, &report, true).0);
    let path = golden.join("bikes.jsonl");
    let mut recs = vigil::output::record::read_jsonl(&path).unwrap();
    let target = recs
        .iter()
        .position(|r| r.seq >= 30 && !r.detections.is_empty())
        .unwrap();
    recs[target].detections[0].bbox[0] += 20.0;
    recs[target].detections[0].bbox[2] += 20.0;
    let text: String = recs
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();

    let (ok, log) = regress(&p, &golden, &report, false);
    assert!(!ok, "{log}");
    let seq = recs[target].seq;
    assert!(
        log.contains(&format!("frames differing: {seq}\n")),
        "only frame {seq} should differ: {log}"
    );

    let chart = vigil::image_io::read(&report.join("bikes-chart.png")).unwrap();
    let thumb = vigil::image_io::read(&report.join(format!("bikes-frame-{seq}.png"))).unwrap();
    assert_eq!((chart.width, chart.height), (960, 320));
    assert_eq!(thumb.width, 960, "two 480-px halves");
    for (name, im) in [("chart", &chart), ("thumbnail", &thumb)] {
        let mean = im.bgr.iter().map(|&v| v as f64).sum::<f64>() / im.bgr.len() as f64;
        let var = im
            .bgr
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / im.bgr.len() as f64;
        assert!(var > 100.0, "{name} is nearly blank (variance {var})");
    }
}
