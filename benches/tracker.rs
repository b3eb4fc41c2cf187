//! Tracker update time per frame at 10, 100 and 500 detections per frame (objects moving steadily,
//! so every frame associates against a full set of live tracks).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use vigil::track::bytetrack::{ByteTrack, ByteTrackParams};
use vigil::track::ocsort::OcSort;
use vigil::track::sort::{Sort, SortParams};
use vigil::track::{Tracker, TrackerInput};

type NewTracker = fn() -> Box<dyn Tracker>;

/// `n` boxes on a grid, shifted `f` pixels: frame `f` of a scene of `n` walking objects.
fn frame(n: usize, f: usize) -> Vec<TrackerInput> {
    (0..n)
        .map(|i| {
            let (gx, gy) = ((i % 25) as f64 * 60.0, (i / 25) as f64 * 90.0);
            let x = gx + f as f64 * 2.0;
            TrackerInput {
                bbox: [x, gy, x + 40.0, gy + 80.0],
                score: 0.6 + (i % 4) as f64 * 0.1,
                class_id: 0,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker_update");
    for n in [10usize, 100, 500] {
        let make: [(&str, NewTracker); 3] = [
            ("bytetrack", || {
                Box::new(ByteTrack::new(ByteTrackParams::default()))
            }),
            ("sort", || Box::new(Sort::new(SortParams::default()))),
            ("ocsort", || Box::new(OcSort::new(Default::default()))),
        ];
        for (name, new) in make {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                let mut t = new();
                // warm up to a steady state with n live tracks
                for f in 0..5 {
                    t.update(&frame(n, f));
                }
                let mut f = 5;
                b.iter(|| {
                    f += 1;
                    t.update(&frame(n, f % 200))
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
