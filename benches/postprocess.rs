//! NMS on 1k and 10k candidate boxes, and letterboxing a 768x576 frame into 416x416.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use vigil::config::spec::Resize;
use vigil::detect::head::Candidate;
use vigil::detect::nms::{NmsParams, nms};
use vigil::frame::{BoxInModel, Image, Xyxy};

fn candidates(n: usize) -> Vec<Candidate> {
    // clusters of overlapping boxes, as a detector head produces around each object
    (0..n)
        .map(|i| {
            let cluster = (i / 10) as f32;
            let jitter = (i % 10) as f32;
            let (x, y) = ((cluster * 37.0) % 400.0, (cluster * 53.0) % 400.0);
            Candidate {
                box_in_model: BoxInModel(Xyxy {
                    x1: x + jitter,
                    y1: y + jitter,
                    x2: x + 30.0 + jitter,
                    y2: y + 60.0,
                }),
                class_id: (i % 3) as u32,
                score: 0.3 + ((i * 7919) % 700) as f32 / 1000.0,
                mask: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let p = NmsParams {
        iou: 0.45,
        class_aware: true,
        max_detections: 300,
    };
    let mut g = c.benchmark_group("nms");
    for n in [1_000usize, 10_000] {
        let cands = candidates(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &cands, |b, cands| {
            b.iter(|| nms(cands.clone(), &p))
        });
    }
    g.finish();
    let image = Image {
        width: 768,
        height: 576,
        bgr: (0..768 * 576 * 3).map(|i| (i % 251) as u8).collect(),
    };
    c.bench_function("letterbox_768x576_to_416", |b| {
        b.iter(|| vigil::preprocess::prepare(&image, (416, 416), Resize::Letterbox))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
