//! The TensorFlow Lite path on the real quantized COCO SSD MobileNet v2, against the LiteRT
//! interpreter's outputs (`scripts/reference/tflite-reference` → `tests/golden/tflite/`):
//! the six sample images and 20 vtest frames. Where vigil's decode and resize give the same
//! input bytes as the reference script's (checked by SHA-256), the outputs must be equal
//! bit for bit; everywhere, the same classes with IoU ≥ 0.95 and scores within 0.02.

use std::collections::BTreeMap;

use sha2::Digest;
use vigil::detect::head::Candidate;
use vigil::detect::manifest::ModelInfo;
use vigil::detect::tflite::detector::TfliteDetector;
use vigil::detect::tflite::{Data, TfliteModel};
use vigil::frame::{Image, Resize};

use super::common::{asset, root};

#[derive(serde::Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    input_sha256: String,
    detections: Vec<GoldenDet>,
}

#[derive(serde::Deserialize, Debug)]
struct GoldenDet {
    class_id: u32,
    score: f32,
    /// Normalized `[ymin, xmin, ymax, xmax]`.
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

fn detector() -> (ModelInfo, TfliteDetector) {
    let info = ModelInfo::load(&root().join("models/ssd-mobilenet-v2.yaml")).unwrap();
    let det = TfliteDetector::load_concrete(&info).unwrap();
    (info, det)
}

/// The images the golden names: sample photos, and vtest frames decoded by vigil's ingest.
fn images(cases: &[Case]) -> BTreeMap<String, Image> {
    let mut out = BTreeMap::new();
    for c in cases {
        if let Some(file) = c.name.strip_prefix("images/") {
            let img = vigil::image_io::read(&asset(&format!("images/{file}"))).unwrap();
            out.insert(c.name.clone(), img);
        }
    }
    vigil::ingest::init().unwrap();
    let path = std::path::absolute(asset("vtest.avi")).unwrap();
    let uri = gstreamer::glib::filename_to_uri(path, None).unwrap();
    let mut src = vigil::ingest::SourceSettings::file("vtest", uri.as_str());
    src.stall = None;
    let wanted: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    let frames = std::sync::Mutex::new(BTreeMap::new());
    vigil::ingest::decode_each(&src, |f| {
        let name = format!("vtest.avi#{}", f.seq);
        if wanted.contains(&name) {
            frames.lock().unwrap().insert(name, (*f.image).clone());
        }
    });
    out.extend(frames.into_inner().unwrap());
    out
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let ih = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iw = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ih * iw;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

/// A candidate's box back in the golden's normalized `[ymin, xmin, ymax, xmax]`.
fn normalized(c: &Candidate) -> [f32; 4] {
    let b = c.box_in_model.0;
    [b.y1 / 300.0, b.x1 / 300.0, b.y2 / 300.0, b.x2 / 300.0]
}

/// Each side's detections at or above `floor` have a partner on the other side (same class, IoU
/// ≥ 0.95, score within 0.02), except the reference's within 0.02 of the floor.
fn agree(name: &str, got: &[Candidate], want: &[GoldenDet], floor: f32) {
    let close = |c: &Candidate, g: &GoldenDet| {
        c.class_id == g.class_id
            && (c.score - g.score).abs() <= 0.02
            && iou(normalized(c), g.bbox) >= 0.95
    };
    for g in want.iter().filter(|g| g.score >= floor + 0.02) {
        assert!(
            got.iter().any(|c| close(c, g)),
            "{name}: vigil misses {g:?}"
        );
    }
    for c in got.iter().filter(|c| c.score >= floor + 0.02) {
        assert!(
            want.iter().any(|g| close(c, g)),
            "{name}: vigil finds {c:?}, the interpreter does not"
        );
    }
}

/// Equal outputs: the same detections in the same order, scores equal, boxes to f32 rounding.
fn equal(name: &str, got: &[Candidate], want: &[GoldenDet]) {
    assert_eq!(got.len(), want.len(), "{name}: detection count");
    for (c, g) in got.iter().zip(want) {
        assert_eq!((c.class_id, c.score), (g.class_id, g.score), "{name}");
        let b = normalized(c);
        for k in 0..4 {
            assert!(
                (b[k] - g.bbox[k]).abs() < 1e-6,
                "{name}: box {b:?} vs {:?}",
                g.bbox
            );
        }
    }
}

#[test]
fn ssd_mobilenet_gives_the_litert_interpreters_detections() {
    let golden: Golden = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/golden/tflite/ssd-mobilenet-v2.json")).unwrap(),
    )
    .unwrap();
    let (info, det) = detector();
    let images = images(&golden.cases);
    let mut exact = 0;
    for case in &golden.cases {
        let image = images
            .get(&case.name)
            .unwrap_or_else(|| panic!("{} not decoded", case.name));
        let input = vigil::preprocess::prepare(image, info.input, Resize::Stretch).unwrap();
        let Data::U8(bytes) = det.input_data(&input).unwrap() else {
            panic!("a uint8 model")
        };
        let got = det.run(&input).unwrap();
        agree(&case.name, &got, &case.detections, 0.3);
        if vigil::hash::hex(&sha2::Sha256::digest(&bytes)) == case.input_sha256 {
            equal(&case.name, &got, &case.detections);
            exact += 1;
        }
    }
    eprintln!(
        "ssd-mobilenet-v2: {exact} of {} cases had the reference's input bytes and equal outputs",
        golden.cases.len()
    );
    // OpenCV 4.6's imread and resize match the oracle's wheel, and the oracle decodes vtest with
    // GStreamer as vigil does: every input is the same, so every output must be equal
    assert_eq!(
        exact,
        golden.cases.len(),
        "cases with the reference's input bytes"
    );
}

#[test]
fn coral_label_files_keep_their_ids() {
    let (info, _) = detector();
    assert_eq!(info.classes.len(), 90);
    assert_eq!(info.class_id("person"), Some(0));
    assert_eq!(info.class_id("stop sign"), Some(12));
    assert_eq!(info.classes[11], "#11", "a gap in the numbering");
    assert_eq!(info.class_id("toothbrush"), Some(89));
}

#[test]
fn detect_cli_runs_the_tflite_model() {
    let manifest = root().join("models/ssd-mobilenet-v2.yaml");
    let person = asset("images/person.jpg");
    let rec = super::common::detect_first_record(&[
        "--model".as_ref(),
        manifest.as_os_str(),
        person.as_os_str(),
    ]);
    let classes: Vec<&str> = rec.detections.iter().map(|d| d.class.as_str()).collect();
    assert_eq!(&classes[..2], ["person", "horse"], "{classes:?}");
}

/// Truncated and corrupted model files are errors, never panics or huge allocations.
#[test]
fn malformed_tflite_files_are_clear_errors() {
    let bytes = std::fs::read(asset(
        "ssd-mobilenet-v2/mobilenet_ssd_v2_coco_quant_postprocess.tflite",
    ))
    .unwrap();
    assert!(TfliteModel::from_bytes(&bytes).is_ok());
    let not_tflite = TfliteModel::from_bytes(b"\x1c\0\0\0ONNXjunk").unwrap_err();
    assert!(not_tflite.to_string().contains("TFL3"), "{not_tflite}");
    // cut points across the header, the tables and the buffers
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((1..200).map(|i| i * bytes.len() / 200));
    for n in cuts {
        assert!(
            TfliteModel::from_bytes(&bytes[..n]).is_err(),
            "{n} bytes loaded"
        );
    }
    // flipped bytes in the header and the last 64 KiB (where the converter puts the tables,
    // vtables and offsets): Ok or Err, no panic
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = bytes.clone();
        let at = if i % 4 == 0 {
            (seed as usize) % 64
        } else {
            b.len() - 1 - (seed as usize) % 65536
        };
        b[at] ^= (seed >> 32) as u8 | 1;
        let _ = TfliteModel::from_bytes(&b);
    }
}
