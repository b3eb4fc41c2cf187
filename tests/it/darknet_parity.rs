//! The darknet YOLO line, each network against a reference on seeded random weights.
//!
//! `scripts/reference/darknet_parity.py` ran once: `vigil synth-weights` (seed 1) wrote the
//! weights and a reduced-size cfg, one fixed input (person.jpg resized, RGB bytes, /255 on both
//! sides) was written, and OpenCV DNN (or Debian's darknet, for the layers OpenCV lacks) recorded the raw tensor
//! entering every head and the head's decoded output; all of it is committed under
//! `tests/golden/darknet/`. Here vigil builds the same cfg (checked text for text), synthesizes the
//! same weights, runs its fast path on the same input bytes and compares.
//!
//! Error measure: `max_i |vigil_i − ref_i| / max(|ref_i|, 0.01 · max_j |ref_j|)` — relative per
//! element, with a floor of 1 % of the tensor's largest magnitude so values that are zero up to
//! rounding do not divide by ~0. Raw heads and decoded outputs must both be ≤ 1e-3.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use vigil::detect::darknet::DarknetNet;
use vigil::detect::darknet::cfg::Cfg;
use vigil::detect::head::{Candidate, Head};
use vigil::detect::manifest::ModelInfo;

use super::common::{asset, heavy, root, vigil};

const MAX_REL: f32 = 1e-3;
/// OpenCV's `[yolo]` zeroes class scores ≤ 0.2 (its default `thresh`); its `[region]` uses the
/// cfg's `thresh`.
const OPENCV_YOLO_THRESH: f32 = 0.2;

#[derive(serde::Deserialize)]
struct Meta {
    seed: u64,
    size: [usize; 2],
    input: String,
    reference: String,
    tensors: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    offset: usize,
}

struct Golden {
    meta: Meta,
    data: Vec<f32>,
}

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn dir() -> PathBuf {
    root().join("tests/golden/darknet")
}

impl Golden {
    fn load(model: &str) -> Self {
        let meta: Meta = serde_json::from_str(
            &std::fs::read_to_string(dir().join(format!("{model}.json"))).unwrap(),
        )
        .unwrap();
        let data = read_f32(&dir().join(format!("{model}.f32")));
        Self { meta, data }
    }

    fn get(&self, name: &str) -> Option<&[f32]> {
        let e = self.meta.tensors.iter().find(|e| e.name == name)?;
        let n: usize = e.shape.iter().product();
        Some(&self.data[e.offset..e.offset + n])
    }

    fn tensor(&self, name: &str) -> &[f32] {
        self.get(name)
            .unwrap_or_else(|| panic!("golden has no tensor {name}"))
    }
}

/// The error measure of the module doc.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "sizes differ");
    let floor = 0.01 * want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(floor).max(f32::MIN_POSITIVE))
        .fold(0f32, f32::max)
}

fn check(what: &str, got: &[f32], want: &[f32]) -> f32 {
    let e = rel_err(got, want);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let abs = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!(
        "{what}: max relative error {e:.2e} over {} values (max |error| / max |ref| {:.2e})",
        want.len(),
        abs / scale
    );
    assert!(e <= MAX_REL, "{what}: max relative error {e} > {MAX_REL}");
    e
}

/// What vigil computes for a model: its heads and their raw inputs.
struct Run {
    golden: Golden,
    net: DarknetNet,
    raw: Vec<Vec<f32>>,
    grids: Vec<(usize, usize)>,
    size: usize,
}

fn run(model: &str) -> Run {
    let started = std::time::Instant::now();
    let golden = Golden::load(model);
    let manifest = match model {
        "yolov4-tiny-mish" => dir().join("variants/yolov4-tiny-mish.yaml"),
        _ => root().join(format!("models/{model}.yaml")),
    };
    let info = ModelInfo::load(&manifest).unwrap();
    let [w, h] = golden.meta.size;
    let cfg = Cfg::load(&info.cfg).unwrap().with_input_size(w, h);
    // the reference ran exactly this network
    assert_eq!(
        cfg.to_text(),
        std::fs::read_to_string(dir().join(format!("{model}.cfg"))).unwrap(),
        "{model}: the cfg differs from the one the reference ran"
    );
    let (net, _) = DarknetNet::synthesize(&cfg, golden.meta.seed, &Device::Cpu).unwrap();
    let bytes = std::fs::read(dir().join(&golden.meta.input)).unwrap();
    let input: Vec<f32> = bytes.iter().map(|&b| f32::from(b) / 255.0).collect();
    let x = Tensor::from_vec(input, (1, 3, h, w), &Device::Cpu).unwrap();
    let forward = std::time::Instant::now();
    let heads = net.forward(&x).unwrap();
    eprintln!(
        "{model} ({w}x{h}) vs {}: build {:.2} s, forward {:.3} s",
        golden.meta.reference,
        (forward - started).as_secs_f64(),
        forward.elapsed().as_secs_f64()
    );
    let grids = heads
        .iter()
        .map(|t| {
            let (_, _, gh, gw) = t.dims4().unwrap();
            (gh, gw)
        })
        .collect();
    let raw = heads
        .iter()
        .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    Run {
        golden,
        net,
        raw,
        grids,
        size: w,
    }
}

/// Raw heads vs OpenCV's `conv_N` outputs, decoded rows vs OpenCV's `[yolo]`/`[region]` rows
/// (cell-major, `x, y, w, h` relative to the input, class scores zeroed at its threshold).
fn check_opencv(model: &str, r: &Run, class_thresh: f32) {
    for (i, (head, raw)) in r.net.heads().iter().zip(&r.raw).enumerate() {
        check(
            &format!("{model} raw head {i}"),
            raw,
            r.golden.tensor(&format!("raw{i}")),
        );
        let rows = head.rows(raw, r.grids[i]);
        let k = 5 + head.classes();
        let plane = r.grids[i].0 * r.grids[i].1;
        let anchors = rows.len() / k / plane;
        let want = r.golden.tensor(&format!("decoded{i}"));
        let mut got = vec![0f32; rows.len()];
        for a in 0..anchors {
            for cell in 0..plane {
                let src = &rows[(a * plane + cell) * k..(a * plane + cell + 1) * k];
                let dst = &mut got[(cell * anchors + a) * k..(cell * anchors + a + 1) * k];
                for (j, v) in src.iter().enumerate() {
                    dst[j] = match j {
                        0..4 => v / r.size as f32,
                        4 => *v,
                        _ => {
                            let refv = want[(cell * anchors + a) * k + j];
                            // at the threshold itself either side may round the other way
                            if (v - class_thresh).abs() < 1e-5 {
                                refv
                            } else if *v > class_thresh {
                                *v
                            } else {
                                0.0
                            }
                        }
                    };
                }
            }
        }
        check(&format!("{model} decoded head {i}"), &got, want);
    }
}

fn region_thresh(model: &str) -> f32 {
    let cfg = Cfg::load(&root().join(format!("models/{model}.cfg"))).unwrap();
    cfg.sections
        .iter()
        .find(|s| s.kind == "region")
        .map(|s| s.get(&cfg.file, "thresh", 0.2).unwrap())
        .unwrap()
}

/// darknet's `[region]` output (logistic/softmax applied) and get_network_boxes' boxes
/// (`x, y, w, h` relative to the input, objectness, per-class probability), anchor-major.
fn check_darknet_region(model: &str, r: &Run) -> (Vec<f32>, Vec<f32>) {
    let Head::Region(head) = &r.net.heads()[0] else {
        panic!("{model}: not a [region] head");
    };
    if let Some(dk) = r.golden.get("darknet_raw0") {
        check(&format!("{model} raw head (darknet)"), &r.raw[0], dk);
    } else {
        check(
            &format!("{model} raw head"),
            &r.raw[0],
            r.golden.tensor("raw0"),
        );
    }
    let activated = head.activate(&r.raw[0], r.grids[0]);
    let k = 5 + head.classes;
    let mut rows = head.rows(&r.raw[0], r.grids[0]);
    for row in rows.chunks_exact_mut(k) {
        for v in &mut row[..4] {
            *v /= r.size as f32;
        }
    }
    (activated, rows)
}

fn opencv_model(model: &str) {
    let _g = heavy();
    let r = run(model);
    check_opencv(model, &r, OPENCV_YOLO_THRESH);
}

#[test]
fn yolov3_tiny_matches_opencv() {
    opencv_model("yolov3-tiny");
}

#[test]
fn yolov3_matches_opencv() {
    opencv_model("yolov3");
}

#[test]
fn yolov3_spp_matches_opencv() {
    opencv_model("yolov3-spp");
}

/// YOLOv4: CSPDarknet53 (mish), SPP, PANet, three heads with scale_x_y 1.2/1.1/1.05.
#[test]
fn yolov4_matches_opencv() {
    opencv_model("yolov4");
}

#[test]
fn yolov4_tiny_matches_opencv() {
    opencv_model("yolov4-tiny");
}

/// mish, logistic head convolutions, `new_coords=1` and `scale_x_y=2` (Scaled-YOLOv4's heads) on
/// the yolov4-tiny body: a test-only cfg (`tests/golden/darknet/variants/`).
#[test]
fn yolov4_tiny_with_mish_and_new_coords_matches_opencv() {
    opencv_model("yolov4-tiny-mish");
}

fn yolov2_model(model: &str) {
    let _g = heavy();
    let r = run(model);
    check_opencv(model, &r, region_thresh(model));
    let (activated, rows) = check_darknet_region(model, &r);
    check(
        &format!("{model} region output (darknet)"),
        &activated,
        r.golden.tensor("activated0"),
    );
    check(
        &format!("{model} decoded boxes (darknet)"),
        &rows,
        r.golden.tensor("boxes0"),
    );
}

#[test]
fn yolov2_matches_opencv_and_darknet() {
    yolov2_model("yolov2");
}

#[test]
fn yolov2_tiny_matches_opencv_and_darknet() {
    yolov2_model("yolov2-tiny");
}

/// YOLOv1: `[local]` (its own kernels at each of the 2×2 positions), `[dropout]`, `[connected]`
/// and the `[detection]` boxes against darknet.
#[test]
fn yolov1_matches_darknet() {
    let _g = heavy();
    let r = run("yolov1");
    check("yolov1 raw head", &r.raw[0], r.golden.tensor("raw0"));
    check(
        "yolov1 detection output",
        &r.raw[0],
        r.golden.tensor("activated0"),
    );
    let rows = r.net.heads()[0].rows(&r.raw[0], r.grids[0]);
    check("yolov1 decoded boxes", &rows, r.golden.tensor("boxes0"));
}

/// YOLOv1-tiny's `[connected]` output and `[detection]` boxes against darknet (cell-major rows:
/// box in model pixels, confidence, confidence · p(class)).
#[test]
fn yolov1_tiny_matches_darknet() {
    let _g = heavy();
    let r = run("yolov1-tiny");
    check("yolov1-tiny raw head", &r.raw[0], r.golden.tensor("raw0"));
    check(
        "yolov1-tiny detection output",
        &r.raw[0],
        r.golden.tensor("activated0"),
    );
    let rows = r.net.heads()[0].rows(&r.raw[0], r.grids[0]);
    check(
        "yolov1-tiny decoded boxes",
        &rows,
        r.golden.tensor("boxes0"),
    );
}

/// YOLO9000: the raw head, the tree softmax, the WordTree's absolute class probabilities for all
/// 9418 classes of every box (darknet's `hierarchy_predictions`), and the class each box gets
/// (darknet's `hierarchy_top_prediction`, `hier_thresh` 0.5), scored by its objectness. The
/// reference runs darknet's own tree functions: its CPU `[region]` tree softmax is broken (see
/// the script).
#[test]
fn yolo9000_hierarchy_matches_darknet() {
    let _g = heavy();
    let r = run("yolo9000");
    let Head::Region(head) = &r.net.heads()[0] else {
        panic!("not a [region] head");
    };
    check("yolo9000 raw head", &r.raw[0], r.golden.tensor("raw0"));
    let mut x = head.activate(&r.raw[0], r.grids[0]);
    check("yolo9000 tree softmax", &x, r.golden.tensor("activated0"));
    head.absolute(&mut x, r.grids[0]);
    check(
        "yolo9000 hierarchical probabilities",
        &x,
        r.golden.tensor("hier0"),
    );
    let mut cands: Vec<Candidate> = Vec::new();
    r.net.heads()[0].decode(&r.raw[0], r.grids[0], 0.0, &mut cands);
    let top = r.golden.tensor("top0");
    let plane = r.grids[0].0 * r.grids[0].1;
    let k = 5 + head.classes;
    // rows: hier_thresh 0.5 (what decode uses), then 0.001 (a walk deep into the tree)
    let (top, deep) = top.split_at(top.len() / 2);
    assert_eq!(cands.len(), top.len());
    let tree = head.tree.as_ref().unwrap();
    let mut depth = 0;
    for (i, &want) in deep.iter().enumerate() {
        let (a, cell) = (i / plane, i % plane);
        let got = tree.top(&x, (a * k + 5) * plane + cell, plane, 0.001);
        assert_eq!(got, want as usize, "box {i}: class at hier_thresh 0.001");
        let mut n = got;
        while let Some(p) = tree.parent[n] {
            n = p;
            depth += 1;
        }
    }
    assert!(depth > deep.len(), "the deep walk should leave the roots");
    for (i, (c, &want)) in cands.iter().zip(top).enumerate() {
        assert_eq!(c.class_id, want as u32, "box {i}: class");
        let (a, cell) = (i / plane, i % plane);
        let obj = x[(a * k + 4) * plane + cell];
        assert!(
            (c.score - obj).abs() <= 1e-6,
            "box {i}: {} vs {obj}",
            c.score
        );
    }
    eprintln!(
        "yolo9000 classes: {:?}",
        cands.iter().map(|c| c.class_id).collect::<Vec<_>>()
    );
}

/// `vigil check` refuses a pipeline whose model cfg has a layer vigil does not know, naming the
/// cfg's line.
#[test]
fn check_names_the_line_of_an_unknown_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(root().join("models/yolov2-tiny.cfg")).unwrap();
    let line = cfg.lines().count() + 2;
    std::fs::write(
        tmp.path().join("net.cfg"),
        format!("{cfg}\n[foo]\nsize=3\n"),
    )
    .unwrap();
    std::fs::copy(
        root().join("models/coco.names"),
        tmp.path().join("coco.names"),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("model.yaml"),
        "name: t\nfamily: darknet\ncfg: net.cfg\nweights:\n  path: net.weights\nclasses: coco.names\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("p.yaml"),
        "name: t\nsources:\n  - id: a\n    uri: file:/nonexistent.avi\ndetector:\n  model: model.yaml\noutputs:\n  - kind: jsonl\n    path: out.jsonl\n",
    )
    .unwrap();
    let out = vigil()
        .arg("check")
        .arg(tmp.path().join("p.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("net.cfg:{line}: unknown layer [foo]")),
        "{text}"
    );
}

/// `vigil detect --model M --weights W` runs each small model of the line end to end on weights
/// written by `vigil synth-weights` (full input size), and prints a record per image.
#[test]
fn detect_runs_every_small_model_on_synthesized_weights() {
    let _g = heavy();
    let tmp = tempfile::tempdir().unwrap();
    for model in [
        "yolov1-tiny",
        "yolov2-tiny",
        "yolov3-tiny",
        "yolov4-tiny",
        "yolo9000",
    ] {
        let weights = tmp.path().join(format!("{model}.weights"));
        let manifest = root().join(format!("models/{model}.yaml"));
        let out = vigil()
            .args(["synth-weights", "--seed", "3", "--model"])
            .arg(&manifest)
            .arg("--out")
            .arg(&weights)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = vigil()
            .args(["detect", "--json", "--confidence", "0.05", "--model"])
            .arg(&manifest)
            .arg("--weights")
            .arg(&weights)
            .arg(asset("images/person.jpg"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rec: vigil::output::record::Record =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        eprintln!("{model}: {} detections", rec.detections.len());
        let info = ModelInfo::load(&manifest).unwrap();
        for d in &rec.detections {
            assert!(
                info.classes.contains(&d.class),
                "{model}: class {}",
                d.class
            );
            // YOLOv1's confidences are unbounded regressions: only the floor holds for all
            assert!(d.score >= 0.05, "{model}: score {}", d.score);
        }
    }
}
