//! Analytics cost per frame: 50 tracks walking across a 1280×720 frame with 20 zones and 20
//! lines (issue 18's goal: under 0.2 ms a frame).

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::analytics::{Analytics, AnalyticsSettings, Anchor, Coords, LineSettings, ZoneSettings};
use vigil::frame::{BoxInFrame, Detection, Xyxy};

fn settings() -> AnalyticsSettings {
    let zones = (0..20)
        .map(|i| {
            let (x, y) = ((i % 5) as f64 * 250.0, (i / 5) as f64 * 170.0);
            ZoneSettings {
                name: format!("zone{i}"),
                points: vec![
                    [x, y],
                    [x + 200.0, y],
                    [x + 220.0, y + 150.0],
                    [x - 10.0, y + 140.0],
                ],
                coords: Coords::Pixels,
                classes: None,
                min_dwell_s: Some(5.0),
                inertia: 3,
                anchor: Anchor::BottomCenter,
            }
        })
        .collect();
    let lines = (0..20)
        .map(|i| LineSettings {
            name: format!("line{i}"),
            points: vec![
                [60.0 * i as f64 + 15.5, 0.0],
                [60.0 * i as f64 + 40.5, 360.0],
                [60.0 * i as f64 + 15.5, 720.0],
            ],
            coords: Coords::Pixels,
            classes: None,
            hysteresis: 5.0,
            left_to_right: "in".into(),
            right_to_left: "out".into(),
            anchor: Anchor::BottomCenter,
        })
        .collect();
    AnalyticsSettings {
        zones,
        lines,
        min_hits: 3,
        forget_after: 30,
        count_every_s: Some(60.0),
    }
}

/// Frame `f`: 50 people walking right at 3 px a frame, wrapping round.
fn frame(f: u64) -> Vec<Detection> {
    (0..50u64)
        .map(|i| {
            let x = ((i * 97 + f * 3) % 1280) as f32;
            let y = (100 + (i * 53) % 600) as f32;
            Detection {
                class_id: (i % 3) as u32,
                score: 0.8,
                box_in_frame: BoxInFrame(Xyxy {
                    x1: x - 15.0,
                    y1: y - 60.0,
                    x2: x + 15.0,
                    y2: y,
                }),
                track_id: Some(i + 1),
                mask: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let frames: Vec<Vec<Detection>> = (0..1000).map(frame).collect();
    c.bench_function("analytics_update/50_tracks_20_zones_20_lines", |b| {
        let mut a = Analytics::new(settings());
        let mut f = 0u64;
        b.iter(|| {
            let dets = &frames[(f % 1000) as usize];
            let events = a.update(f, f as f64 / 25.0, (1280, 720), dets);
            f += 1;
            events
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
