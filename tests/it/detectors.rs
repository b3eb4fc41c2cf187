//! The detector survey beyond the YOLO line, as torchvision exports it for users — SSD300-VGG16,
//! SSDlite-MobileNetV3, RetinaNet-ResNet50-FPN, FCOS-ResNet50-FPN, Faster R-CNN (MobileNetV3 and
//! ResNet-50 FPN), Mask R-CNN (ResNet-50 FPN), R-FCN (ResNet-50, rebuilt on torchvision's R-CNN
//! parts: position-sensitive pooling as `RoiAlign` + a bin mask) — run by vigil's ONNX executor exactly as exported:
//! the rank-3 image input, anchors, decoding, RPN proposals, `RoiAlign` and `ScatterElements` in
//! the multi-scale RoI pooling, `If` around the batched NMS, `TopK`, `NonZero`, the `Loop` that
//! pastes Mask R-CNN's masks and every other data-dependent shape inside the graph. The first-stage heads (class and box convolutions of every level, added as
//! graph outputs by the export script) must be within 1e-3 of ONNX Runtime's, relative to their
//! largest value, and the final detections must equal ONNX Runtime's: each reference box has one of vigil's with the same label, IoU
//! ≥ 0.99 and a score within 1e-3. `scripts/reference/export-detectors.py` (run by
//! `make onnx-fixtures`) writes the ONNX files, too large for git, and the committed goldens.

use candle_core::Tensor;
use serde_json::Value;
use vigil::detect::onnx::OnnxModel;

use super::common::{root, torchvision_fixture};
use vigil::frame::BitMask;
use vigil::output::rle::Rle;

const DETECTORS: [&str; 8] = [
    "ssdlite320_mobilenet_v3_large",
    "ssd300_vgg16",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
    "rfcn_resnet50",
];

fn iou(a: &[f32], b: &[f32]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union <= 0.0 {
        // degenerate boxes (random weights clip some to a line): equal corners, or no match
        let same = a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-2);
        return if same { 1.0 } else { 0.0 };
    }
    inter / union
}

/// `(boxes x1y1x2y2, score, label)` per detection.
type Det = ([f32; 4], f32, i64);
type Dets = Vec<Det>;

fn detections(boxes: &[f32], scores: &[f32], labels: &[f32]) -> Dets {
    boxes
        .chunks_exact(4)
        .zip(scores)
        .zip(labels)
        .map(|((b, s), l)| ([b[0], b[1], b[2], b[3]], *s, *l as i64))
        .collect()
}

/// Reference detections vigil has no partner for, ignoring those tied with the last one kept
/// (which of equal scores makes the cut is arbitrary in both runtimes).
fn unmatched(ours: &Dets, want: &Dets) -> Vec<String> {
    paired(ours, want).1
}

/// For each reference detection, vigil's partner (same label, score within 1e-3, IoU ≥ 0.99),
/// and the reference detections without one (as [`unmatched`]).
fn paired(ours: &Dets, want: &Dets) -> (Vec<Option<usize>>, Vec<String>) {
    let cut = want.iter().map(|d| d.1).fold(f32::INFINITY, f32::min);
    let mut used = vec![false; ours.len()];
    let mut pairs = Vec::new();
    let mut missing = Vec::new();
    for w in want {
        let best = ours
            .iter()
            .enumerate()
            .filter(|(i, o)| !used[*i] && o.2 == w.2 && (o.1 - w.1).abs() <= 1e-3)
            // slivers (random regression squeezes some boxes to a fraction of a pixel) have an
            // ill-conditioned IoU: equal corners within 0.05 px count as the same box
            .map(|(i, o)| {
                let close = o.0.iter().zip(&w.0).all(|(a, b)| (a - b).abs() <= 0.05);
                (i, if close { 1.0 } else { iou(&o.0, &w.0) })
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, v)) if v >= 0.99 => {
                used[i] = true;
                pairs.push(Some(i));
                continue;
            }
            _ if w.1 - cut <= 1e-3 => {}
            other => missing.push(format!("{w:?} (best IoU {:?})", other.map(|o| o.1))),
        }
        pairs.push(None);
    }
    (pairs, missing)
}

/// IoU of two masks over a `width × height` frame (1 when both are empty).
fn mask_iou(a: &BitMask, b: &BitMask, width: i64, height: i64) -> f32 {
    let (mut inter, mut union) = (0usize, 0usize);
    for y in 0..height {
        for x in 0..width {
            let (p, q) = (a.get(x, y), b.get(x, y));
            inter += usize::from(p && q);
            union += usize::from(p || q);
        }
    }
    if union == 0 {
        1.0
    } else {
        inter as f32 / union as f32
    }
}

/// The reference's masks of one output set (`{"rle": [...]}`), decoded.
fn reference_masks(masks: &Value) -> Vec<BitMask> {
    masks["rle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_value::<Rle>(r.clone())
                .unwrap()
                .decode()
                .unwrap()
        })
        .collect()
}

/// Where torchvision's ONNX paste puts a box's mask: the box grown by (28 + 2) / 28 about its
/// centre (`expand_boxes`), truncated to integers. Boxes equal within float noise can truncate
/// to different pixels when a grown edge lies on an integer; the pasted mask then moves by that
/// pixel and is resized to one more or less row (IoU about 0.9 for thin structures), which says
/// nothing about the mask head.
fn paste_rect(b: &[f32; 4]) -> [i64; 4] {
    let scale = 30.0 / 28.0;
    let (w, h) = ((b[2] - b[0]) * 0.5 * scale, (b[3] - b[1]) * 0.5 * scale);
    let (cx, cy) = ((b[2] + b[0]) * 0.5, (b[3] + b[1]) * 0.5);
    [cx - w, cy - h, cx + w, cy + h].map(|v| v as i64)
}

/// vigil's masks (`ours[i]`, detections `got`) against the reference's (`want`) over the paired
/// detections: the worst IoU where both pasted at the same pixels, which must be ≥ 0.98, and how
/// many pairs pasted at different pixels (each must still be ≥ 0.8).
fn worst_mask_iou(
    name: &str,
    pairs: &[Option<usize>],
    (got, ours): (&Dets, &[BitMask]),
    (want, masks): (&Dets, &[BitMask]),
) -> Result<(f32, usize), String> {
    let (mut worst, mut moved) = (1f32, 0);
    for (w, o) in pairs.iter().enumerate() {
        let Some(o) = *o else { continue };
        let (h, wd) = (masks[w].height as i64, masks[w].width as i64);
        let v = mask_iou(&ours[o], &masks[w], wd, h);
        if paste_rect(&got[o].0) != paste_rect(&want[w].0) {
            moved += 1;
            if v < 0.8 {
                return Err(format!(
                    "{name}: mask IoU {v:.4} < 0.8 for {:?} (reference {:?})",
                    got[o], want[w]
                ));
            }
        } else {
            worst = worst.min(v);
        }
    }
    if worst < 0.98 {
        return Err(format!("{name}: a mask IoU of {worst:.4} < 0.98"));
    }
    Ok((worst, moved))
}

/// The worst relative error of the first-stage heads (every level's class and box convolution,
/// a strided sample of each, relative to its largest magnitude); an error above 1e-3.
fn head_error(
    name: &str,
    model: &OnnxModel,
    outs: &[Tensor],
    heads: &Value,
) -> Result<f32, String> {
    let heads = heads
        .as_object()
        .filter(|h| !h.is_empty())
        .ok_or(format!("{name}: no heads in the golden"))?;
    let mut worst = 0f32;
    for (tensor, h) in heads {
        let i = model
            .summary
            .outputs
            .iter()
            .position(|o| &o.name == tensor)
            .ok_or(format!("{name}: no output `{tensor}`"))?;
        let ours: Vec<f32> = outs[i].flatten_all().unwrap().to_vec1().unwrap();
        let stride = h["stride"].as_u64().unwrap() as usize;
        let scale = h["max_abs"].as_f64().unwrap() as f32;
        for (k, v) in h["values"].as_array().unwrap().iter().enumerate() {
            let err = (ours[k * stride] - v.as_f64().unwrap() as f32).abs() / scale.max(1e-12);
            worst = worst.max(err);
        }
        if worst > 1e-3 {
            return Err(format!(
                "{name}: head `{tensor}` relative error {worst:.2e} > 1e-3"
            ));
        }
    }
    Ok(worst)
}

/// `Ok(None)` when the ONNX file was not generated here.
fn check(name: &str) -> Result<Option<String>, String> {
    let Some((meta, model, input)) = torchvision_fixture("detectors", name, |s| vec![3, s, s])?
    else {
        return Ok(None);
    };
    let size = meta["input_size"].as_u64().unwrap();
    let t0 = std::time::Instant::now();
    let outs = model.run(&input).map_err(|e| format!("{name}: run: {e}"))?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let ours = |role: &str| -> Vec<f32> {
        let n = meta["outputs"][role]["name"].as_str().unwrap();
        let i = model
            .summary
            .outputs
            .iter()
            .position(|o| o.name == n)
            .unwrap_or_else(|| panic!("{name}: no output `{n}` ({role})"));
        outs[i]
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let want = |n: &str| -> Vec<f32> {
        meta["outputs"][n]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let heads = head_error(name, &model, &outs, &meta["heads"])?;
    let got = detections(&ours("boxes"), &ours("scores"), &ours("labels"));
    let reference = detections(&want("boxes"), &want("scores"), &want("labels"));
    let (pairs, missing) = paired(&got, &reference);
    let masks = match meta["outputs"].get("masks") {
        Some(m) => {
            let planes = ours("masks");
            let (s, plane) = (size as usize, (size * size) as usize);
            let ours: Vec<BitMask> = planes
                .chunks_exact(plane)
                .map(|p| BitMask::from_plane(p, s, s, 0.5))
                .collect();
            let want = reference_masks(m);
            let (worst, moved) = worst_mask_iou(name, &pairs, (&got, &ours), (&reference, &want))?;
            format!(", masks IoU ≥ {worst:.4} ({moved} pasted one pixel apart)")
        }
        None => String::new(),
    };
    let line = format!(
        "{name} at {size}: raw heads within {heads:.1e}; {} detections, ONNX Runtime {}, {} unmatched{masks}, {ms:.0} ms",
        got.len(),
        reference.len(),
        missing.len()
    );
    // Two-stage models decide twice on thresholds (the RPN's top-k and NMS, then the box head's
    // score threshold, NMS and top 100): proposals within float noise of a cut can fall either
    // way, and the boxes that depend on them differ. Up to 10% of their detections may.
    let two_stage = ["fasterrcnn", "maskrcnn", "rfcn"];
    let allowed = if two_stage.iter().any(|p| name.starts_with(p)) {
        reference.len() / 10
    } else {
        0
    };
    if missing.len() > allowed || got.len() != reference.len() {
        return Err(format!("{line}:\n  {}", missing.join("\n  ")));
    }
    Ok(Some(line))
}

#[test]
fn torchvision_detectors_give_onnx_runtimes_detections() {
    super::common::check_fixtures("detectors", &DETECTORS, check);
}

/// A survey network whose decoding runs in vigil (`decoder` for `classes` classes) against the
/// golden's `[K, 6]` reference rows (x1, y1, x2, y2, score, class; `row` reads one, as each
/// reference writes it): the maps within 1e-3, then `finish` turns vigil's candidates (decoded at
/// `floor(reference)`) into detections, which must pair with every reference row.
struct NetworkCheck<'a> {
    decoder: vigil::detect::onnx::decode::Decoder,
    classes: usize,
    reference: &'a str,
    row: fn(&[f32]) -> Det,
    floor: fn(&Value, &Dets) -> f32,
    finish: fn(Vec<vigil::detect::head::Candidate>) -> Vec<vigil::detect::head::Candidate>,
}

fn check_network(name: &str, c: &NetworkCheck) -> Result<Option<String>, String> {
    use vigil::detect::onnx::decode::{DecodeParams, decode};
    let Some((meta, model, input)) = torchvision_fixture("detectors", name, |s| vec![1, 3, s, s])?
    else {
        return Ok(None);
    };
    let size = meta["input_size"].as_u64().unwrap() as usize;
    let t0 = std::time::Instant::now();
    let outs = model.run(&input).map_err(|e| format!("{name}: run: {e}"))?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let heads = head_error(name, &model, &outs, &meta["heads"])?;
    let values: Vec<f32> = meta["outputs"]["detections"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let reference: Dets = values.chunks_exact(6).map(c.row).collect();
    let floor = (c.floor)(&meta, &reference);
    let params = DecodeParams {
        classes: c.classes,
        input: (size, size),
        anchors: vec![],
        strides: vec![],
    };
    let cands = decode(c.decoder, &outs, 0, floor, &params).map_err(|e| e.to_string())?;
    let n_cands = cands.len();
    let got: Dets = (c.finish)(cands)
        .iter()
        .map(|d| {
            let b = d.box_in_model.0;
            ([b.x1, b.y1, b.x2, b.y2], d.score, i64::from(d.class_id))
        })
        .collect();
    let missing = unmatched(&got, &reference);
    let line = format!(
        "{name} at {size}: raw maps within {heads:.1e}; {n_cands} candidates ≥ {floor:.3}, {} detections, {} {}, {} unmatched, {ms:.0} ms",
        got.len(),
        c.reference,
        reference.len(),
        missing.len()
    );
    if !missing.is_empty() || got.len() != reference.len() {
        return Err(format!("{line}:\n  {}", missing.join("\n  ")));
    }
    Ok(Some(line))
}

/// EfficientDet-D0 from PyPI's effdet, its network exported (the post-processing is a TorchScript
/// loop that does not export): vigil's `efficientdet` decoder (anchors, box decoding) and NMS
/// against effdet's own post-processing of ONNX Runtime's maps. effdet keeps the top 5000
/// anchor-class pairs before its NMS; vigil keeps what scores above the confidence, which is set
/// to that top-5000 floor so both NMS see the same candidates.
#[test]
fn efficientdet_gives_effdets_detections() {
    use vigil::detect::nms::{NmsParams, nms};
    let check = NetworkCheck {
        decoder: vigil::detect::onnx::decode::Decoder::Efficientdet,
        classes: 90,
        reference: "effdet",
        // effdet's classes count from 1 (0 is the background)
        row: |r| ([r[0], r[1], r[2], r[3]], r[4], r[5] as i64 - 1),
        floor: |meta, _| meta["topk_min_score"].as_f64().unwrap() as f32,
        finish: |cands| {
            let p = NmsParams {
                iou: 0.5,
                class_aware: true,
                max_detections: 100,
            };
            nms(cands, &p)
        },
    };
    super::common::check_fixtures("detectors", &["efficientdet_d0"], |n| {
        check_network(n, &check)
    });
}

/// CenterNet (ResNet-18 with transposed convolutions, rebuilt from the paper): vigil's
/// `centernet` decoder against the reference `ctdet_decode` on ONNX Runtime's maps. Both keep the
/// best 100 peaks; vigil's are compared before its NMS (CenterNet has none), at the reference's
/// 100th score.
#[test]
fn centernet_gives_the_reference_decoders_detections() {
    // the reference leaves a negative size as an inverted box; vigil makes it a point there
    fn point(a: f32, b: f32) -> (f32, f32) {
        if b < a {
            ((a + b) / 2.0, (a + b) / 2.0)
        } else {
            (a, b)
        }
    }
    let check = NetworkCheck {
        decoder: vigil::detect::onnx::decode::Decoder::Centernet,
        classes: 80,
        reference: "ctdet_decode",
        row: |r| {
            let ((x1, x2), (y1, y2)) = (point(r[0], r[2]), point(r[1], r[3]));
            ([x1, y1, x2, y2], r[4], r[5] as i64)
        },
        floor: |_, reference| reference.iter().map(|d| d.1).fold(f32::INFINITY, f32::min) - 1e-4,
        finish: |cands| cands,
    };
    super::common::check_fixtures("detectors", &["centernet_resnet18"], |n| {
        check_network(n, &check)
    });
}

/// A manifest in `dir` for the survey export `file` (`tests/golden/onnx/big/`), with `classes`
/// placeholder names; `None`, saying so, when `make onnx-fixtures` has not made the file here.
fn survey_manifest(
    dir: &std::path::Path,
    file: &str,
    decoder: &str,
    classes: usize,
) -> Option<std::path::PathBuf> {
    let onnx = root().join("tests/golden/onnx/big").join(file);
    if !onnx.is_file() {
        eprintln!(
            "skipped: {} is missing (run `make onnx-fixtures`)",
            onnx.display()
        );
        return None;
    }
    let names: Vec<String> = (0..classes).map(|i| format!("class{i}")).collect();
    std::fs::write(dir.join("names.txt"), names.join("\n")).unwrap();
    let manifest = dir.join("model.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: {decoder}\nonnx: {}\ndecoder: {decoder}\nclasses: names.txt\nresize: stretch\n",
            onnx.display()
        ),
    )
    .unwrap();
    Some(manifest)
}

/// A torchvision export (`decoder: torchvision`), EfficientDet's and CenterNet's networks
/// (`decoder: efficientdet`, `centernet`) in a manifest run through `vigil detect`: the input layout, the labels as class
/// ids, boxes mapped back to the photo.
#[test]
fn survey_exports_run_from_a_manifest() {
    for (file, decoder, classes) in [
        (
            "detector-ssdlite320_mobilenet_v3_large.onnx",
            "torchvision",
            91,
        ),
        ("detector-efficientdet_d0.onnx", "efficientdet", 90),
        ("detector-centernet_resnet18.onnx", "centernet", 80),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let Some(manifest) = survey_manifest(dir.path(), file, decoder, classes) else {
            continue;
        };
        let dog = super::common::asset("images/dog.jpg");
        let rec = super::common::detect_first_record(&[
            "--confidence".as_ref(),
            "0.3".as_ref(),
            "--model".as_ref(),
            manifest.as_os_str(),
            dog.as_os_str(),
        ]);
        assert!(
            !rec.detections.is_empty(),
            "{decoder}: random weights still find boxes"
        );
        for d in &rec.detections {
            assert!(
                d.class.starts_with("class") && d.score >= 0.3,
                "{decoder}: {d:?}"
            );
            let [x1, y1, x2, y2] = d.bbox;
            assert!(
                x1 >= 0.0 && y1 >= 0.0 && x2 <= 768.0 && y2 <= 576.0 && x1 <= x2,
                "{decoder}: {d:?}"
            );
        }
    }
}

/// The Mask R-CNN export (`export-detectors.py`).
const MASK_RCNN: &str = "detector-maskrcnn_resnet50_fpn.onnx";

/// Mask R-CNN through the product: `vigil detect --json` on a photo at the model's input size
/// (so both runtimes read the same pixels) gives ONNX Runtime's detections with their masks as
/// COCO RLE in the metadata — decoded back here, each within IoU 0.98 of the reference's mask —
/// and `--save` draws them: pixels under a mask are tinted, pixels outside every box untouched.
#[test]
fn mask_rcnn_masks_reach_the_metadata_and_the_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let Some(manifest) = survey_manifest(dir.path(), MASK_RCNN, "torchvision", 91) else {
        return;
    };
    let _heavy = super::common::heavy();
    let golden = root().join("tests/golden/onnx/detectors/maskrcnn_resnet50_fpn.json");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    let reference = &meta["photo"]["outputs"];
    let photo = root().join(meta["photo"]["image"].as_str().unwrap());
    let drawn = dir.path().join("drawn");
    // no `--iou`: the graph's own NMS ran, vigil's keeps every box (it took 3 of these 100 at
    // its default 0.45 before it knew; regression test)
    let rec = super::common::detect_first_record(&[
        "--confidence".as_ref(),
        "0.05".as_ref(),
        "--save".as_ref(),
        drawn.as_os_str(),
        "--model".as_ref(),
        manifest.as_os_str(),
        photo.as_os_str(),
    ]);
    let values = |role: &str| -> Vec<f32> {
        reference[role]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let want = detections(&values("boxes"), &values("scores"), &values("labels"));
    let got: Dets = rec
        .detections
        .iter()
        .map(|d| (d.bbox, d.score, i64::from(d.class_id)))
        .collect();
    let (pairs, missing) = paired(&got, &want);
    assert_eq!(
        got.len(),
        want.len(),
        "vigil's NMS suppressed what the graph's kept"
    );
    assert!(
        missing.len() <= want.len() / 10,
        "{} of {} reference detections unmatched:\n{}",
        missing.len(),
        want.len(),
        missing.join("\n")
    );
    let ours: Vec<BitMask> = rec
        .detections
        .iter()
        .map(|d| {
            let rle = d
                .mask
                .clone()
                .expect("every Mask R-CNN detection has a mask");
            let back = rle.decode().unwrap();
            // decoded and encoded again: the same counts
            let again = Rle::encode(
                &vigil::frame::MaskInFrame(back.clone()),
                rle.size[1],
                rle.size[0],
            );
            assert_eq!(again, rle, "RLE round trip");
            back
        })
        .collect();
    let masks = reference_masks(&reference["masks"]);
    let (worst, moved) = worst_mask_iou("photo", &pairs, (&got, &ours), (&want, &masks))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "Mask R-CNN on {}: {} detections, ONNX Runtime {}, {} unmatched, masks IoU ≥ {worst:.4} ({moved} pasted one pixel apart)",
        photo.display(),
        got.len(),
        want.len(),
        missing.len()
    );
    let input = vigil::image_io::read(&photo).unwrap();
    let out = vigil::image_io::read(&drawn.join(photo.file_name().unwrap())).unwrap();
    let pixel = |img: &vigil::frame::Image, x: u32, y: u32| {
        let p = ((y * img.width + x) * 3) as usize;
        img.bgr[p..p + 3].to_vec()
    };
    // a box, its outline's width around it and its label above (which can be wider)
    let in_a_box = |x: u32, y: u32| {
        let (x, y) = (x as f32, y as f32);
        got.iter().any(|(b, _, _)| {
            let right = b[2].max(b[0] + 100.0);
            x >= b[0] - 4.0 && x <= right && y >= b[1] - 16.0 && y <= b[3] + 4.0
        })
    };
    let (mut tinted, mut under, mut outside_changed) = (0, 0, 0);
    for y in 0..input.height {
        for x in 0..input.width {
            let changed = pixel(&input, x, y) != pixel(&out, x, y);
            if ours.iter().any(|m| m.get(i64::from(x), i64::from(y))) {
                under += 1;
                tinted += usize::from(changed);
            } else if !in_a_box(x, y) {
                outside_changed += usize::from(changed);
            }
        }
    }
    assert!(
        under > 0 && tinted * 10 >= under * 9,
        "{tinted} of {under} masked pixels drawn"
    );
    assert_eq!(outside_changed, 0, "pixels outside every box changed");
}

/// Mask R-CNN in a pipeline: two vtest frames (768×576, stretched to 256²) through the detect
/// stage, ByteTrack and the JSONL and MP4 outputs. Every detection's mask comes back out of the
/// JSONL as a frame-sized RLE, lies on its box (torchvision pastes a mask over the box grown by
/// 1/28 a side, 3× larger in frame pixels here) and is not empty.
#[test]
fn mask_rcnn_masks_survive_a_pipeline_into_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    if survey_manifest(dir.path(), MASK_RCNN, "torchvision", 91).is_none() {
        return;
    }
    let _heavy = super::common::heavy();
    let pipeline = dir.path().join("masks.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: masks\nsources:\n  - id: vtest\n    uri: file:{}\n    max_frames: 2\n    pace: as_fast_as_possible\n\
             detector:\n  model: model.yaml\n  confidence: 0.3\ntracker:\n  kind: bytetrack\n\
             outputs:\n  - kind: jsonl\n    path: masks.jsonl\n  - kind: mp4\n    path: masks.mp4\n    overlay: true\n",
            super::common::asset("vtest.avi").display()
        ),
    )
    .unwrap();
    let (out, _) = super::common::output_within(
        super::common::vigil().arg("-q").arg("run").arg(&pipeline),
        std::time::Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = vigil::output::record::read_jsonl(&dir.path().join("masks.jsonl")).unwrap();
    assert_eq!(records.len(), 2);
    let mut checked = 0;
    for rec in &records {
        assert!(
            !rec.detections.is_empty(),
            "random weights still find boxes"
        );
        for d in &rec.detections {
            let rle = d.mask.as_ref().expect("a mask per detection");
            assert_eq!(rle.size, [576, 768]);
            let m = rle.decode().unwrap();
            let [x1, y1, x2, y2] = d.bbox;
            let (gx, gy) = ((x2 - x1) / 28.0 + 4.0, (y2 - y1) / 28.0 + 4.0);
            let mut area = 0;
            for y in 0..576i64 {
                for x in 0..768i64 {
                    if m.get(x, y) {
                        area += 1;
                        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                        assert!(
                            fx >= x1 - gx && fx <= x2 + gx && fy >= y1 - gy && fy <= y2 + gy,
                            "mask pixel ({x}, {y}) off its box {:?}",
                            d.bbox
                        );
                    }
                }
            }
            checked += usize::from(area > 0);
        }
    }
    assert!(checked > 0, "no mask had pixels");
    eprintln!("{checked} masks through the pipeline, each on its box");
}
