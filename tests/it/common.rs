//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use vigil::config::plan::SourcePlan;
use vigil::config::spec::Pace;
use vigil::frame::Msg;
use vigil::runtime::edge::{WhenFull, edge};
use vigil::runtime::metrics::StageStats;

/// Held by every test that runs the detector for long or measures timing: on a 2-core machine
/// two of them at once starve each other (and timing assertions measure the neighbour, not vigil).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run one CPU-heavy test at a time (light tests still run alongside).
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fetched assets (`VIGIL_ASSETS_DIR` or `assets/`).
pub fn asset(rel: &str) -> PathBuf {
    let dir =
        std::env::var_os("VIGIL_ASSETS_DIR").map_or_else(|| root().join("assets"), PathBuf::from);
    let p = dir.join(rel);
    assert!(
        p.is_file(),
        "{} missing: run scripts/fetch-assets",
        p.display()
    );
    p
}

pub fn model() -> PathBuf {
    root().join("models/yolov3-tiny.yaml")
}

pub fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.env("RUST_LOG", "info");
    c
}

/// A pipeline file in `dir` running `sources` (`(id, path)`) through YOLOv3-tiny to MP4 + JSONL
/// under `dir/out/`.
pub fn pipeline(dir: &Path, sources: &[(&str, &Path)], extra: &str) -> PathBuf {
    let mut y = String::from("name: test\nsources:\n");
    for (id, path) in sources {
        y.push_str(&format!("  - id: {id}\n    uri: file:{}\n", path.display()));
    }
    y.push_str(&format!(
        "detector:\n  model: {}\n  confidence: 0.25\n{extra}outputs:\n  - kind: mp4\n    path: out/{{source}}.mp4\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
        model().display()
    ));
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

/// Decode a video file with vigil's own ingest; returns (frames, width, height).
pub fn decode_count(path: &Path) -> (u64, u32, u32) {
    vigil::ingest::init().unwrap();
    let src = SourcePlan {
        id: "check".into(),
        uri: gstreamer::glib::filename_to_uri(std::path::absolute(path).unwrap(), None)
            .unwrap()
            .to_string(),
        pace: Pace::AsFastAsPossible,
        live: false,
        when_full: WhenFull::Block,
        stall: None,
        max_frames: None,
        reconnect: Default::default(),
        rtsp_tcp: true,
        rtsp_latency: std::time::Duration::from_millis(200),
        state: Default::default(),
        reconnects: Default::default(),
        seq_start: 0,
    };
    let (tx, rx) = edge::<vigil::frame::Frame>("check", 4, WhenFull::Block);
    let stop = AtomicBool::new(false);
    let stats = StageStats::default();
    let counter = std::thread::spawn(move || {
        let (mut n, mut size) = (0, (0, 0));
        while let Ok(Msg::Item(f)) = rx.recv() {
            n += 1;
            size = (f.image.width, f.image.height);
        }
        (n, size)
    });
    let report = vigil::ingest::run(&src, &tx, &stop, &stats);
    drop(tx);
    assert!(
        report.error.is_none(),
        "{} does not decode: {:?}",
        path.display(),
        report.error
    );
    let (n, (w, h)) = counter.join().unwrap();
    (n, w, h)
}

/// Parse every line of a JSONL file as a metadata record; panics on a partial line.
pub fn records(path: &Path) -> Vec<vigil::output::record::Record> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends with a partial line",
        path.display()
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}: {l}", path.display(), i + 1))
        })
        .collect()
}
