//! `vigil-gpu-check`: the GPU checks and benchmarks in one binary for a machine with a GPU, no
//! Rust toolchain and perhaps no GStreamer or OpenCV. It links Candle and vigil's detectors only
//! (the integration test `gpu_check` reads its dynamic dependencies to keep it so) and is built
//! with `--features cuda` by `scripts/device-check --build`.
//!
//! On the frames given (raw BGR, as `gst-launch … ! video/x-raw,format=BGR ! filesink` writes
//! them) it checks the letterbox on the GPU against the CPU's, the detections of the GPU in f32
//! against the CPU's (boxes IoU ≥ 0.99, scores ± 1e-3), measures f16's difference from f32, then
//! times the detector at each batch size, and prints one Markdown table. Without a GPU (a CPU
//! build, or no driver) it says so and runs the CPU half. Exit status 1 when a check fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use candle_core::Device;
use clap::Parser;

use vigil::detect::agreement::Agreement;
use vigil::detect::manifest::ModelInfo;
use vigil::detect::nms::NmsParams;
use vigil::detect::{self, Detector, PostParams, Precision};
use vigil::frame::{Detection, Image, ModelInput};
use vigil::preprocess::on_device;

/// Box IoU and score tolerance of the GPU's f32 detections against the CPU's.
const MIN_IOU: f64 = 0.99;
const MAX_SCORE_DIFF: f32 = 1e-3;
/// Largest letterbox difference allowed between devices, in 8-bit levels.
const MAX_LETTERBOX_LEVELS: f32 = 1.01;

#[derive(Parser)]
#[command(about = "GPU checks and benchmarks for vigil's detectors")]
struct Args {
    /// Model manifest (`models/NAME.yaml`); repeat for several models (one table each).
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    /// Raw BGR frames, one after another.
    #[arg(long)]
    frames: PathBuf,
    /// Frame size, `WIDTHxHEIGHT`.
    #[arg(long, value_parser = parse_size)]
    frame_size: (u32, u32),
    /// Batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    batches: Vec<usize>,
    /// Seconds to time each configuration.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Batch sizes to time on the CPU (the baseline in the same run).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    cpu_batches: Vec<usize>,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WIDTHxHEIGHT")?;
    Ok((
        w.parse().map_err(|_| "bad width")?,
        h.parse().map_err(|_| "bad height")?,
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vigil-gpu-check: {e}");
            ExitCode::from(2)
        }
    }
}

/// One row of the table.
struct Row {
    what: String,
    result: String,
    ok: bool,
}

fn run(args: &Args) -> Result<bool, String> {
    let frames = read_frames(args)?;
    let gpu = gpu_device();
    let mut ok = true;
    for model in &args.model {
        let info = ModelInfo::load(model).map_err(|e| e.to_string())?;
        let rows = model_rows(args, &info, &frames, gpu.as_ref())?;
        print_table(&info, frames.len(), gpu.as_ref().ok(), &rows);
        ok &= rows.iter().all(|r| r.ok);
    }
    Ok(ok)
}

/// One model's rows: letterbox and detections GPU vs CPU, f16 vs f32 where the family has it,
/// the speeds, and the CPU baseline.
fn model_rows(
    args: &Args,
    info: &ModelInfo,
    frames: &[Image],
    gpu: Result<&Device, &String>,
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let cpu_inputs = letterbox_all(frames, info, &Device::Cpu)?;
    let post = post_params();
    let cpu = detect::load_at(info, &Device::Cpu, Precision::F32).map_err(|e| e.to_string())?;
    let cpu_dets = detect_all(cpu.as_ref(), &cpu_inputs, &post)?;
    match gpu {
        Ok(device) => {
            rows.push(letterbox_row(frames, info, &cpu_inputs, device)?);
            let g32 = detect::load_at(info, device, Precision::F32).map_err(|e| e.to_string())?;
            let dets32 = detect_all(g32.as_ref(), &cpu_inputs, &post)?;
            rows.push(agreement_row(
                "detections: GPU f32 vs CPU f32",
                &cpu_dets,
                &dets32,
                &post,
                true,
            ));
            let mut timed = vec![("f32", g32)];
            if info.family.has_precision(Precision::F16) {
                let g16 =
                    detect::load_at(info, device, Precision::F16).map_err(|e| e.to_string())?;
                let dets16 = detect_all(g16.as_ref(), &cpu_inputs, &post)?;
                rows.push(agreement_row(
                    "detections: GPU f16 vs GPU f32 (measured, not checked)",
                    &dets32,
                    &dets16,
                    &post,
                    false,
                ));
                timed.push(("f16", g16));
            }
            for (precision, d) in &timed {
                for &b in &args.batches {
                    let what = format!("GPU {precision}, batch {b}");
                    rows.push(speed_row(&what, d.as_ref(), &cpu_inputs, b, args.seconds)?);
                }
            }
        }
        Err(why) => rows.push(Row {
            what: "GPU".into(),
            result: format!("skipped: {why}"),
            ok: true,
        }),
    }
    for &b in &args.cpu_batches {
        let what = format!("CPU f32, batch {b} (baseline)");
        rows.push(speed_row(
            &what,
            cpu.as_ref(),
            &cpu_inputs,
            b,
            args.seconds,
        )?);
    }
    Ok(rows)
}

/// The first GPU, or why there is none.
fn gpu_device() -> Result<Device, String> {
    if !candle_core::utils::cuda_is_available() {
        return Err("this binary was built without the `cuda` feature".into());
    }
    Device::new_cuda(0).map_err(|e| format!("no usable CUDA device: {e}"))
}

fn read_frames(args: &Args) -> Result<Vec<Image>, String> {
    let (w, h) = args.frame_size;
    let bytes =
        std::fs::read(&args.frames).map_err(|e| format!("{}: {e}", args.frames.display()))?;
    let size = (w * h * 3) as usize;
    if size == 0 || bytes.is_empty() || !bytes.len().is_multiple_of(size) {
        return Err(format!(
            "{}: {} bytes is not a whole number of {w}x{h} BGR frames",
            args.frames.display(),
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| Image {
            width: w,
            height: h,
            bgr: c.to_vec(),
        })
        .collect())
}

fn letterbox_all(
    frames: &[Image],
    info: &ModelInfo,
    device: &Device,
) -> Result<Vec<ModelInput>, String> {
    frames
        .iter()
        .map(|f| {
            let (t, map) = on_device::letterbox(f, info.input, info.resize, device)
                .map_err(|e| e.to_string())?;
            Ok(ModelInput {
                chw: t
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .map_err(|e| e.to_string())?,
                on_device: None,
                width: info.input.0,
                height: info.input.1,
                frame_from_model: map,
            })
        })
        .collect()
}

fn post_params() -> PostParams {
    PostParams {
        confidence: 0.25,
        classes: None,
        nms: NmsParams {
            iou: vigil::config::spec::DEFAULT_NMS_IOU,
            class_aware: true,
            max_detections: 300,
        },
    }
}

fn detect_all(
    d: &dyn Detector,
    inputs: &[ModelInput],
    post: &PostParams,
) -> Result<Vec<Vec<Detection>>, String> {
    inputs
        .iter()
        .map(|i| {
            let c = d.infer(&[i], post.confidence).map_err(|e| e.to_string())?;
            Ok(detect::postprocess(
                c.into_iter().next().unwrap_or_default(),
                post,
                i,
            ))
        })
        .collect()
}

fn letterbox_row(
    frames: &[Image],
    info: &ModelInfo,
    cpu: &[ModelInput],
    gpu: &Device,
) -> Result<Row, String> {
    let on_gpu = letterbox_all(frames, info, gpu)?;
    let worst = on_gpu
        .iter()
        .zip(cpu)
        .flat_map(|(g, c)| g.chw.iter().zip(&c.chw).map(|(a, b)| (a - b).abs()))
        .fold(0f32, f32::max)
        * 255.0;
    Ok(Row {
        what: format!(
            "letterbox {}x{} → {}x{} on the GPU vs the CPU",
            frames[0].width, frames[0].height, info.input.0, info.input.1
        ),
        result: format!("max difference {worst:.2} levels (≤ {MAX_LETTERBOX_LEVELS})"),
        ok: worst <= MAX_LETTERBOX_LEVELS,
    })
}

fn agreement_row(
    what: &str,
    a: &[Vec<Detection>],
    b: &[Vec<Detection>],
    post: &PostParams,
    checked: bool,
) -> Row {
    let g = a
        .iter()
        .zip(b)
        .map(|(x, y)| Agreement::of(x, y, post.confidence, 0.02))
        .fold(Agreement::EMPTY, Agreement::merge);
    Row {
        what: what.into(),
        result: format!(
            "{} pairs, min IoU {:.4}, max score diff {:.1e}, {} unpaired{}",
            g.paired,
            g.min_iou,
            g.max_score_diff,
            g.unpaired,
            if checked {
                format!(" (IoU ≥ {MIN_IOU}, ± {MAX_SCORE_DIFF:.0e})")
            } else {
                String::new()
            }
        ),
        ok: !checked || g.within(MIN_IOU, MAX_SCORE_DIFF),
    }
}

/// Time `d` on batches of `batch` inputs for about `seconds`: latency per batch (median) and
/// frames per second, and how many 30 fps streams that holds.
fn speed_row(
    what: &str,
    d: &dyn Detector,
    inputs: &[ModelInput],
    batch: usize,
    seconds: f64,
) -> Result<Row, String> {
    let refs: Vec<&ModelInput> = inputs.iter().cycle().take(batch.max(1)).collect();
    d.infer(&refs, 0.25).map_err(|e| e.to_string())?; // warm-up (kernels, allocations)
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut laps = Vec::new();
    while laps.len() < 3 || started.elapsed() < budget {
        let t = Instant::now();
        d.infer(&refs, 0.25).map_err(|e| e.to_string())?;
        laps.push(t.elapsed());
    }
    laps.sort();
    let median = laps[laps.len() / 2];
    let fps = refs.len() as f64 / median.as_secs_f64();
    Ok(Row {
        what: what.into(),
        result: format!(
            "{:.2} ms per batch, {:.1} frames/s, {} streams at 30 fps ({} runs)",
            median.as_secs_f64() * 1e3,
            fps,
            (fps / 30.0).floor(),
            laps.len()
        ),
        ok: true,
    })
}

fn print_table(info: &ModelInfo, frames: usize, gpu: Option<&Device>, rows: &[Row]) {
    println!(
        "model {} ({}x{}), {frames} frames, GPU: {}",
        info.name,
        info.input.0,
        info.input.1,
        gpu.map_or("none".to_string(), |d| format!("{d:?}"))
    );
    println!("| check | result | |\n|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} |",
            r.what,
            r.result,
            if r.ok { "ok" } else { "FAILED" }
        );
    }
}
