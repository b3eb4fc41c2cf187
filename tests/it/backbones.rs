//! The backbones the detector survey stands on — MobileNet v2 and v3, SqueezeNet, ResNet-50,
//! EfficientNet-B0 and Swin-T, as torchvision builds and exports them — run by vigil's ONNX
//! executor with outputs within 1e-3 (relative to the largest) of ONNX Runtime's.
//! `scripts/reference/export-backbones.py` (run by `make onnx-fixtures`) writes the ONNX files,
//! too large for git, and the committed goldens in tests/golden/onnx/backbones/.

use super::common::torchvision_fixture;

const BACKBONES: [&str; 6] = [
    "mobilenet_v2",
    "mobilenet_v3_large",
    "squeezenet1_1",
    "resnet50",
    "efficientnet_b0",
    "swin_t",
];

/// `Ok(None)` when the ONNX file was not generated here.
fn check(name: &str) -> Result<Option<String>, String> {
    let Some((meta, model, input)) = torchvision_fixture("backbones", name, |s| vec![1, 3, s, s])?
    else {
        return Ok(None);
    };
    let size = meta["input_size"].as_u64().unwrap();
    let t0 = std::time::Instant::now();
    let out = model.run(&input).map_err(|e| format!("{name}: run: {e}"))?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let ours: Vec<f32> = out[0].flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = meta["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    if ours.len() != want.len() {
        return Err(format!(
            "{name}: {} outputs, ORT {}",
            ours.len(),
            want.len()
        ));
    }
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let err = ours
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    let line = format!("{name} at {size}: relative error {err:.2e}, {ms:.0} ms");
    if err > 1e-3 {
        return Err(line);
    }
    Ok(Some(line))
}

#[test]
fn torchvision_backbones_match_onnx_runtime() {
    super::common::check_fixtures("backbones", &BACKBONES, check);
}
