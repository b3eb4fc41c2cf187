//! `vigil detect` against the OpenCV DNN reference on the same weights and preprocessing (stretch to
//! 416x416, RGB, 1/255; confidence 0.25; NMS 0.45). The reference output was produced once by
//! `scripts/reference/opencv_dnn_detect.py` and is committed as a golden.

use vigil::output::record::Record;

use super::common::{asset, model, root, vigil};

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

fn detect(resize: &str) -> Vec<Record> {
    let out = vigil()
        .args(["detect", "--json", "--resize", resize, "--model"])
        .arg(model())
        .arg(asset("images/person.jpg"))
        .arg(asset("images/dog.jpg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[derive(serde::Deserialize)]
struct Golden {
    image: String,
    detections: Vec<GoldenDet>,
}
#[derive(serde::Deserialize)]
struct GoldenDet {
    class: String,
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

/// Every reference detection has a vigil detection of the same class with IoU ≥ 0.9 and a score
/// within 0.03, and vigil finds nothing the reference does not.
#[test]
fn detect_matches_opencv_dnn_on_person_and_dog() {
    let got = detect("stretch");
    let golden: Vec<Golden> =
        std::fs::read_to_string(root().join("tests/golden/opencv_dnn_yolov3_tiny.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(got.len(), golden.len());
    for (rec, g) in got.iter().zip(&golden) {
        assert!(
            rec.source.ends_with(&g.image),
            "{} vs {}",
            rec.source,
            g.image
        );
        assert_eq!(
            rec.detections.len(),
            g.detections.len(),
            "{}: {:?}",
            g.image,
            rec.detections
        );
        for want in &g.detections {
            let best = rec
                .detections
                .iter()
                .filter(|d| d.class == want.class)
                .map(|d| (iou(d.bbox, want.bbox), d.score))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or_else(|| panic!("{}: no {} found", g.image, want.class));
            assert!(best.0 >= 0.9, "{} {}: IoU {}", g.image, want.class, best.0);
            assert!(
                (best.1 - want.score).abs() <= 0.03,
                "{} {}: score {} vs {}",
                g.image,
                want.class,
                best.1,
                want.score
            );
        }
    }
}

/// The boxes the assets README gives for person.jpg (x, y, w, h from OpenCV's DNN).
#[test]
fn detect_finds_the_readme_boxes() {
    let got = detect("stretch");
    let person = &got[0];
    for (class, [x, y, w, h]) in [
        ("person", [180.0, 94.0, 98.0, 288.0]),
        ("dog", [79.0, 264.0, 123.0, 86.0]),
    ] {
        let want = [x, y, x + w, y + h];
        assert!(
            person
                .detections
                .iter()
                .any(|d| d.class == class && iou(d.bbox, want) >= 0.9),
            "person.jpg: no {class} at {want:?}: {:?}",
            person.detections
        );
    }
    let dog = &got[1];
    for class in ["car", "dog"] {
        assert!(
            dog.detections.iter().any(|d| d.class == class),
            "dog.jpg: no {class}"
        );
    }
}

/// Letterboxed input gives boxes in the same frame pixels as stretched input (the two inputs
/// differ, so boxes move a little, but a bug in `frame_from_model` would move them a lot).
#[test]
fn letterbox_boxes_come_back_in_frame_pixels() {
    let stretch = detect("stretch");
    let letterbox = detect("letterbox");
    let find = |r: &Record, class: &str| {
        r.detections
            .iter()
            .find(|d| d.class == class)
            .map(|d| d.bbox)
            .unwrap()
    };
    for class in ["person", "dog"] {
        let a = find(&stretch[0], class);
        let b = find(&letterbox[0], class);
        assert!(
            iou(a, b) > 0.75,
            "{class}: stretch {a:?} vs letterbox {b:?}"
        );
    }
}

/// The fused CPU convolution gives the same raw head tensors as Candle's stock convolution on a
/// real image with the real weights (max error ≤ 1e-4 of the tensor's largest magnitude).
#[test]
fn fast_conv_heads_match_candle_reference_on_real_weights() {
    let info = vigil::detect::manifest::ModelInfo::load(&model()).unwrap();
    let det = vigil::detect::load_darknet(&info, &candle_core::Device::Cpu).unwrap();
    let image = vigil::image_io::read(&asset("images/person.jpg")).unwrap();
    let input =
        vigil::preprocess::prepare(&image, info.input, vigil::config::spec::Resize::Letterbox)
            .unwrap();
    let fast = det.raw_heads(&[&input]).unwrap();
    let plain = det.raw_heads_reference(&[&input]).unwrap();
    assert_eq!(fast.len(), 2);
    for (f, p) in fast.iter().zip(&plain) {
        assert_eq!(f.dims(), p.dims());
        let f: Vec<f32> = f.flatten_all().unwrap().to_vec1().unwrap();
        let p: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        let scale = p.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = f
            .iter()
            .zip(&p)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-4 * scale, "max error {err} vs scale {scale}");
    }
}
