//! Issue 22's GPU check binary in this (CPU) build: it runs its CPU half, says why the GPU half
//! is skipped, and links nothing of GStreamer or GLib and of OpenCV only what a stand-in
//! replaces, so it can be carried to a GPU machine that has none of them. Also f16 against f32 on the real weights (on the CPU here; the
//! GPU's numbers come from `scripts/device-check`).

use std::process::{Command, Stdio};
use std::time::Duration;

use vigil::detect::agreement::Agreement;
use vigil::detect::manifest::ModelInfo;
use vigil::detect::nms::NmsParams;
use vigil::detect::{PostParams, Precision};
use vigil::frame::{Image, ModelInput};

use super::common::{asset, model, wait_exit};
use super::service::pull_frames;

/// The first `n` frames of vtest.avi as vigil's ingest decodes them.
fn vtest_frames(n: usize) -> Vec<Image> {
    let launch = format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=BGR ! appsink name=sink sync=false",
        asset("vtest.avi").display()
    );
    let frames = pull_frames(&launch, n, Duration::from_secs(60));
    assert_eq!(frames.len(), n, "decoded {} of {n} frames", frames.len());
    frames
        .into_iter()
        .map(|bgr| Image {
            width: 768,
            height: 576,
            bgr,
        })
        .collect()
}

#[test]
fn gpu_check_binary_runs_its_cpu_half_and_links_no_media_library() {
    let bin = env!("CARGO_BIN_EXE_vigil-gpu-check");
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames.bgr");
    let bytes: Vec<u8> = vtest_frames(2).into_iter().flat_map(|i| i.bgr).collect();
    std::fs::write(&frames, bytes).unwrap();
    let mut child = Command::new(bin)
        .arg("--model")
        .arg(model())
        .arg("--frames")
        .arg(&frames)
        .args([
            "--frame-size",
            "768x576",
            "--cpu-batches",
            "1,2",
            "--seconds",
            "0.2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    eprintln!("{out}{err}");
    assert!(status.success(), "exit {status}");
    assert!(
        out.contains("| GPU | skipped: this binary was built without the `cuda` feature | ok |"),
        "{out}"
    );
    for row in ["CPU f32, batch 1 (baseline)", "CPU f32, batch 2 (baseline)"] {
        assert!(out.contains(&format!("| {row} | ")), "no row {row}:\n{out}");
    }

    // Its dynamic dependencies: nothing of GStreamer or GLib; OpenCV's core only through the
    // opencv crate's exported callbacks, replaced on a GPU machine without OpenCV by the
    // stand-in `scripts/device-check` makes (each function aborts if called).
    let elf = Command::new("readelf").args(["-d", bin]).output().unwrap();
    let needed: Vec<String> = String::from_utf8_lossy(&elf.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .map(|l| {
            l.split('[')
                .nth(1)
                .unwrap_or("")
                .trim_end_matches(']')
                .to_string()
        })
        .collect();
    eprintln!("NEEDED: {needed:?}");
    assert!(!needed.is_empty());
    let media: Vec<&String> = needed
        .iter()
        .filter(|n| {
            [
                "gst",
                "glib",
                "gobject",
                "orc",
                "opencv_imgproc",
                "opencv_imgcodecs",
            ]
            .iter()
            .any(|m| n.contains(m))
        })
        .collect();
    assert!(media.is_empty(), "links {media:?}");
    if needed.iter().any(|n| n.contains("opencv_core")) {
        let stub = dir.path().join("lib");
        let made = Command::new(super::common::root().join("scripts/device-check"))
            .arg("--stub-opencv")
            .arg(bin)
            .arg(&stub)
            .status()
            .unwrap();
        assert!(made.success());
        let run = Command::new(bin)
            .env("LD_LIBRARY_PATH", &stub)
            .args(["--model"])
            .arg(model())
            .arg("--frames")
            .arg(&frames)
            .args(["--frame-size", "768x576", "--seconds", "0.1"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "with the stand-in: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let ldd = Command::new("ldd")
            .arg(bin)
            .env("LD_LIBRARY_PATH", &stub)
            .output()
            .unwrap();
        let ldd = String::from_utf8_lossy(&ldd.stdout);
        assert!(
            ldd.lines()
                .any(|l| l.contains("libopencv_core") && l.contains(stub.to_str().unwrap())),
            "the stand-in was not the one loaded:\n{ldd}"
        );
    }
}

/// `detector.precision: f16` on yolov3-tiny's real weights against f32, on vtest frames: what
/// the half-precision option costs in accuracy (Candle's f16 kernels on the CPU; a GPU's are
/// measured by `scripts/device-check`).
#[test]
fn f16_detections_stay_close_to_f32_on_real_weights() {
    let _heavy = super::common::heavy();
    let info = ModelInfo::load(&model()).unwrap();
    let cpu = candle_core::Device::Cpu;
    let f32_det = vigil::detect::load_at(&info, &cpu, Precision::F32).unwrap();
    let f16_det = vigil::detect::load_at(&info, &cpu, Precision::F16).unwrap();
    let post = PostParams {
        confidence: 0.25,
        classes: None,
        nms: NmsParams {
            iou: 0.45,
            class_aware: true,
            max_detections: 300,
        },
    };
    let mut total = Agreement::EMPTY;
    for frame in vtest_frames(3) {
        let input: ModelInput =
            vigil::preprocess::prepare(&frame, info.input, info.resize).unwrap();
        let run = |d: &dyn vigil::detect::Detector| {
            let c = d.infer(&[&input], 0.25).unwrap().remove(0);
            vigil::detect::postprocess(c, &post, &input)
        };
        let (a, b) = (run(f32_det.as_ref()), run(f16_det.as_ref()));
        total = total.merge(Agreement::of(&a, &b, 0.25, 0.03));
    }
    eprintln!("f16 vs f32 on 3 vtest frames: {total:?}");
    assert!(total.paired >= 6, "{total:?}");
    assert!(total.within(0.95, 0.03), "{total:?}");
}

/// A model family without an f16 path is refused at load with a message naming it, and
/// so is a CPU-only family on a GPU (here: asked through the same check as `vigil check`).
#[test]
fn precision_f16_is_refused_for_a_family_without_it() {
    let info =
        ModelInfo::load(&super::common::root().join("models/ssd-mobilenet-v2.yaml")).unwrap();
    let e = vigil::detect::load_at(&info, &candle_core::Device::Cpu, Precision::F16)
        .err()
        .expect("tflite in f16 must be refused")
        .to_string();
    assert!(e.contains("precision F16 is not available"), "{e}");
}

/// A frame letterboxed where the detector runs (`ModelInput::on_device`, as the pipeline does
/// for a GPU detector) gives the candidates of the same frame handed over as host planes: the
/// darknet and the ONNX detector, here with the tensor on the CPU.
#[test]
fn inputs_letterboxed_on_the_device_give_the_host_inputs_candidates() {
    let _heavy = super::common::heavy();
    let frames = vtest_frames(2);
    let onnx = super::common::root().join("models/yolov3-tiny-onnx.yaml");
    for manifest in [model(), onnx] {
        let info = ModelInfo::load(&manifest).unwrap();
        if !info.weights.is_file() {
            eprintln!(
                "skipped {}: {} not made (make onnx-fixtures)",
                info.name,
                info.weights.display()
            );
            continue;
        }
        let det = vigil::detect::load_at(&info, &candle_core::Device::Cpu, Precision::F32).unwrap();
        for frame in &frames {
            let (t, map) = vigil::preprocess::on_device::letterbox(
                frame,
                info.input,
                info.resize,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            let host = ModelInput {
                chw: t.flatten_all().unwrap().to_vec1().unwrap(),
                on_device: None,
                width: info.input.0,
                height: info.input.1,
                frame_from_model: map,
            };
            let dev = ModelInput {
                chw: Vec::new(),
                on_device: Some(t),
                ..host.clone()
            };
            let a = det.infer(&[&host, &host], 0.25).unwrap();
            let b = det.infer(&[&dev, &dev], 0.25).unwrap();
            assert!(!a[0].is_empty(), "{}: nothing found", info.name);
            assert_eq!(a, b, "{}", info.name);
        }
    }
}
