//! `detector.batch: {max, wait}`: with a wait, frames of a paced source are held for the batch
//! to fill; without one, the detector takes only what is waiting. Either way every frame is
//! detected and the run ends at the end of the file (the last frames are never held back).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vigil::runtime::RunOptions;
use vigil::runtime::metrics::PipelineMetrics;

use super::common::{generated_video, model, records};

/// Runs the 20 frames of a 10 fps video at its own pace (a paced file is a camera: it would
/// start over at its end, so `max_frames` ends it) with `batch`; returns (forward passes,
/// frames they carried, records written).
fn run_paced(batch: &str) -> (u64, u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let video = generated_video(dir.path(), 320, 240, 20);
    let p = dir.path().join("batch.yaml");
    std::fs::write(
        &p,
        format!(
            "name: batch\nsources:\n  - id: a\n    uri: file:{}\n    pace: realtime\n    max_frames: 20\ndetector:\n  model: {}\n  batch: {batch}\noutputs:\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
            video.display(),
            model().display()
        ),
    )
    .unwrap();
    vigil::ingest::init().unwrap();
    let plan = vigil::config::load(&p).unwrap();
    let metrics = Arc::new(PipelineMetrics::for_plan(&plan));
    let (tx, rx) = std::sync::mpsc::channel();
    let m = metrics.clone();
    std::thread::spawn(move || {
        let detector = plan.load_detector().unwrap();
        let report = vigil::runtime::pipeline::run_observed(
            &plan,
            detector,
            &AtomicBool::new(false),
            &RunOptions::default(),
            &m,
        );
        let _ = tx.send(report.errors);
    });
    let errors = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the run ended within 2 minutes");
    assert!(errors.is_empty(), "{errors:?}");
    let n = records(&dir.path().join("out/a.jsonl")).len();
    (
        metrics.detector_batches.load(Ordering::Relaxed),
        metrics.detector_batched_frames.load(Ordering::Relaxed),
        n,
    )
}

#[test]
fn a_batch_wait_fills_batches_from_a_paced_source_and_never_holds_its_end() {
    let _heavy = super::common::heavy();
    let (passes, frames, n) = run_paced("{max: 4, wait: 350ms}");
    eprintln!("wait 350ms: {passes} passes for {frames} frames");
    assert_eq!((frames, n), (20, 20));
    // 10 fps: a 350 ms wait gathers 4 frames (the last batch may be short)
    assert!(
        passes <= 7,
        "{passes} passes: the wait did not gather frames"
    );

    let (passes, frames, n) = run_paced("4");
    eprintln!("no wait: {passes} passes for {frames} frames");
    assert_eq!((frames, n), (20, 20));
    // yolov3-tiny takes well under the 100 ms between frames: one frame per pass
    assert!(
        passes >= 12,
        "{passes} passes: frames were held without a wait"
    );
}
