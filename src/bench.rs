//! `vigil bench`: in one run, on the same machine and input, time (a) the Candle detector's forward
//! pass, (b) OpenCV DNN on the same weights (a script, when OpenCV's Python bindings are there),
//! (c) decoding alone, (d) the whole pipeline, and print the ratios that matter. Medians over
//! repeats: the machine is noisy, so only ratios from one run are compared.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::config::plan::{OutputPlan, Plan};
use crate::frame::Frame;
use crate::ingest::SourceSettings;
use crate::output::OutputSettings;
use crate::output::jsonl::JsonlSettings;
use crate::output::mp4::{DEFAULT_BITRATE_KBPS, Mp4Settings, X264Preset};
use crate::runtime::edge::WhenFull;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub repeats: usize,
    pub frames: u64,
    pub opencv_script: PathBuf,
    pub python: String,
    pub scratch: PathBuf,
}

/// The numbers.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub model: String,
    pub input: (u32, u32),
    pub candle_ms: f64,
    pub candle_min_ms: f64,
    pub opencv: Result<(String, f64), String>,
    pub decode_fps: f64,
    pub pipeline_fps: f64,
    pub pipeline_frames: u64,
    pub source_fps: f64,
}

impl Default for BenchSettings {
    fn default() -> Self {
        Self {
            repeats: 30,
            frames: 200,
            opencv_script: PathBuf::from("scripts/bench/opencv_dnn.py"),
            python: "python3".into(),
            scratch: std::env::temp_dir(),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Decode the first `n` frames of `src` as fast as possible; returns (frames, seconds, first frame).
fn decode(src: &SourceSettings, n: u64) -> (u64, f64, Option<Frame>) {
    let mut s = src.clone();
    s.max_frames = Some(n);
    let mut first = None;
    let t = Instant::now();
    let r = crate::ingest::decode_each(&s, |f| {
        first.get_or_insert(f);
    });
    (r.frames, t.elapsed().as_secs_f64(), first)
}

/// Run the benchmark for the first source of `plan`.
#[allow(
    clippy::too_many_lines,
    reason = "the benchmark's phases in the order they run"
)]
pub fn run(plan: &Plan, s: &BenchSettings) -> Result<BenchReport, String> {
    let src = plan.sources.first().ok_or("the pipeline has no source")?;
    let mut report = BenchReport {
        model: plan.model.name.clone(),
        input: plan.model.input,
        candle_ms: 0.0,
        candle_min_ms: 0.0,
        opencv: Err("not measured".into()),
        decode_fps: 0.0,
        pipeline_fps: 0.0,
        pipeline_frames: 0,
        source_fps: f64::NAN,
    };

    // (c) decode floor, and a frame for the detector
    let (n, secs, first) = decode(src, s.frames);
    report.decode_fps = n as f64 / secs.max(1e-9);
    let frame = first.ok_or("the source gave no frame")?;
    report.source_fps = if frame.fps.0 > 0 {
        frame.fps.0 as f64 / frame.fps.1.max(1) as f64
    } else {
        f64::NAN
    };

    // (a) Candle forward pass (+ head decode), same input as the pipeline
    let detector = plan.load_detector().map_err(|e| e.to_string())?;
    let input = crate::preprocess::prepare(&frame.image, plan.model.input, plan.resize)
        .map_err(|e| e.to_string())?;
    for _ in 0..3 {
        detector
            .infer(&[&input], plan.post.confidence)
            .map_err(|e| e.to_string())?;
    }
    let mut times = Vec::with_capacity(s.repeats);
    for _ in 0..s.repeats.max(1) {
        let t = Instant::now();
        detector
            .infer(&[&input], plan.post.confidence)
            .map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report.candle_min_ms = times.iter().copied().fold(f64::INFINITY, f64::min);
    report.candle_ms = median(times);

    // (b) OpenCV DNN on the same cfg/weights/video
    let video = gstreamer::glib::filename_from_uri(&src.uri)
        .map(|(p, _)| p)
        .map_err(|e| e.to_string());
    report.opencv = video.and_then(|video| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let out = Command::new(&s.python)
            .arg(&s.opencv_script)
            .arg("--cfg")
            .arg(&plan.model.cfg)
            .arg("--weights")
            .arg(&plan.model.weights)
            .arg("--video")
            .arg(&video)
            .args([
                "--size",
                &plan.model.input.0.to_string(),
                "--repeats",
                &s.repeats.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .output()
            .map_err(|e| format!("{}: {e}", s.python))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
                .to_string());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let ms = v["median_ms"].as_f64().ok_or("no median_ms")?;
        Ok((v["opencv"].as_str().unwrap_or("?").to_string(), ms))
    });

    // (d) the whole pipeline on the same frames: decode → detect → NMS → track → overlay → MP4 + JSONL
    let mut p = plan.clone();
    p.sources.truncate(1);
    p.source_detect.truncate(1);
    p.source_analytics.truncate(1);
    p.sources[0].max_frames = Some(s.frames);
    p.sources[0].when_full = WhenFull::Block;
    p.outputs = vec![
        OutputPlan {
            source: src.id.clone(),
            settings: OutputSettings::Mp4(Mp4Settings {
                path: s.scratch.join("vigil-bench.mp4"),
                overlay: true,
                preset: X264Preset::default(),
                bitrate_kbps: DEFAULT_BITRATE_KBPS,
            }),
        },
        OutputPlan {
            source: src.id.clone(),
            settings: OutputSettings::Jsonl(JsonlSettings {
                path: s.scratch.join("vigil-bench.jsonl"),
            }),
        },
    ];
    let detector = p.load_detector().map_err(|e| e.to_string())?;
    let run = crate::runtime::run(
        &p,
        detector,
        &AtomicBool::new(false),
        &crate::runtime::RunOptions::default(),
    );
    if let Some(e) = run.errors.first() {
        return Err(e.clone());
    }
    report.pipeline_frames = run.frames_in.iter().map(|f| f.1).sum();
    report.pipeline_fps = report.pipeline_frames as f64 / run.wall.as_secs_f64().max(1e-9);
    let _ = std::fs::remove_file(s.scratch.join("vigil-bench.mp4"));
    let _ = std::fs::remove_file(s.scratch.join("vigil-bench.jsonl"));
    Ok(report)
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pipeline_ms = 1000.0 / self.pipeline_fps.max(1e-9);
        writeln!(f, "| measurement | value |")?;
        writeln!(f, "|---|---|")?;
        writeln!(
            f,
            "| Candle {} forward + decode at {}x{} (median) | {:.1} ms (min {:.1}) |",
            self.model, self.input.0, self.input.1, self.candle_ms, self.candle_min_ms
        )?;
        match &self.opencv {
            Ok((v, ms)) => {
                writeln!(
                    f,
                    "| OpenCV {v} DNN, same weights and input (median) | {ms:.1} ms |"
                )?;
                writeln!(
                    f,
                    "| **detector vs OpenCV** | **{:.2}×** |",
                    self.candle_ms / ms
                )?;
            }
            Err(e) => writeln!(f, "| OpenCV DNN baseline | unavailable: {e} |")?,
        }
        writeln!(
            f,
            "| decode alone (GStreamer → BGR frames) | {:.0} fps |",
            self.decode_fps
        )?;
        writeln!(
            f,
            "| whole pipeline (decode→detect→NMS→track→overlay→H.264 MP4 + JSONL), {} frames | {:.1} fps ({pipeline_ms:.1} ms/frame) |",
            self.pipeline_frames, self.pipeline_fps
        )?;
        writeln!(
            f,
            "| **pipeline vs detector alone** | **{:+.1}% per frame** |",
            (pipeline_ms / self.candle_ms - 1.0) * 100.0
        )?;
        write!(
            f,
            "| **pipeline fps vs source fps ({:.0})** | **{:.2}×** |",
            self.source_fps,
            self.pipeline_fps / self.source_fps
        )
    }
}
