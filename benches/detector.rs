//! The YOLOv3-tiny forward pass (+ head decode) at 416x416 on a real image with the real weights
//! (`scripts/fetch-assets` first), fused CPU convolution vs Candle's stock convolution.

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::config::spec::Resize;
use vigil::detect::Detector;

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let info = vigil::detect::manifest::ModelInfo::load(&root.join("models/yolov3-tiny.yaml"))
        .expect("manifest");
    let det = vigil::detect::load_darknet(&info, &candle_core::Device::Cpu)
        .expect("weights: run scripts/fetch-assets");
    let image =
        vigil::image_io::read(&root.join("assets/images/dog.jpg")).expect("assets/images/dog.jpg");
    let input = vigil::preprocess::prepare(&image, info.input, Resize::Letterbox).expect("prepare");
    let mut g = c.benchmark_group("yolov3_tiny_416");
    g.sample_size(20);
    g.bench_function("fused_cpu_conv", |b| {
        b.iter(|| det.infer(&[&input], 0.25).expect("infer"))
    });
    g.bench_function("candle_stock_conv", |b| {
        b.iter(|| det.raw_heads_reference(&[&input]).expect("forward"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
