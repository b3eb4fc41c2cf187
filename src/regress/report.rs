//! The regression report: `report.md` with a summary table per source, a PNG chart of detections
//! per frame (golden vs new, drawn with plotters) and side-by-side thumbnails of the worst frames
//! (golden boxes left in green, new boxes right in red; OpenCV).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use opencv::core::{Mat, Point, Rect, Scalar, Size, Vec3b, Vector};
use opencv::{imgcodecs, imgproc};
use plotters::prelude::*;

use super::compare::SourceDiff;
use crate::frame::Image;
use crate::ingest::SourceSettings;
use crate::output::record::RecordDetection;

/// Frames shown per source.
pub const WORST_FRAMES: usize = 4;
/// Width of each half of a thumbnail.
const THUMB_WIDTH: i32 = 480;
/// The font the chart's text is drawn with (Debian `fonts-dejavu-core`).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Debug, thiserror::Error)]
#[error("report: {0}")]
pub struct ReportError(pub String);

fn err<E: std::fmt::Display>(e: E) -> ReportError {
    ReportError(e.to_string())
}

/// Decode `src` and keep the frames whose sequence number is in `seqs`.
pub fn frames_at(src: &SourceSettings, seqs: &BTreeSet<u64>) -> HashMap<u64, Image> {
    let mut settings = src.clone();
    settings.max_frames = seqs.iter().next_back().map(|m| m + 1);
    let mut out = HashMap::new();
    let _ = crate::ingest::decode_each(&settings, |f| {
        if seqs.contains(&f.seq)
            && let Ok(image) = std::sync::Arc::try_unwrap(f.image)
        {
            out.insert(f.seq, image);
        }
    });
    out
}

fn draw_boxes(
    mat: &mut impl opencv::core::ToInputOutputArray,
    dets: &[RecordDetection],
    colour: Scalar,
) -> opencv::Result<()> {
    for d in dets {
        let [x1, y1, x2, y2] = d.bbox;
        let r = Rect::new(
            x1 as i32,
            y1 as i32,
            (x2 - x1).max(1.0) as i32,
            (y2 - y1).max(1.0) as i32,
        );
        imgproc::rectangle(mat, r, colour, 2, imgproc::LINE_8, 0)?;
        let label = format!("{} {:.2}", d.class, d.score);
        imgproc::put_text(
            mat,
            &label,
            Point::new(r.x, (r.y - 3).max(10)),
            imgproc::FONT_HERSHEY_SIMPLEX,
            0.4,
            colour,
            1,
            imgproc::LINE_AA,
            false,
        )?;
    }
    Ok(())
}

/// Golden (left) and new (right) boxes on the same frame, scaled to `THUMB_WIDTH` each.
fn thumbnail(
    image: &Image,
    golden: &[RecordDetection],
    new: &[RecordDetection],
    out: &Path,
) -> Result<(), ReportError> {
    let mut halves = Vector::<Mat>::new();
    for (dets, colour) in [
        (golden, Scalar::new(0.0, 200.0, 0.0, 0.0)),
        (new, Scalar::new(0.0, 0.0, 255.0, 0.0)),
    ] {
        let mut bgr = image.bgr.clone();
        let mut mat = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(
            image.height as i32,
            image.width as i32,
            &mut bgr,
        )
        .map_err(err)?;
        draw_boxes(&mut mat, dets, colour).map_err(err)?;
        let h = (image.height as f64 * THUMB_WIDTH as f64 / image.width as f64).round() as i32;
        let mut small = Mat::default();
        imgproc::resize(
            &mat,
            &mut small,
            Size::new(THUMB_WIDTH, h),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )
        .map_err(err)?;
        halves.push(small);
    }
    let mut both = Mat::default();
    opencv::core::hconcat(&halves, &mut both).map_err(err)?;
    imgcodecs::imwrite(out.as_os_str(), &both, &Vector::new()).map_err(err)?;
    Ok(())
}

/// Detections per frame, golden vs new.
fn chart(d: &SourceDiff, out: &Path) -> Result<(), ReportError> {
    let g: Vec<(u64, u64)> = d
        .frames
        .iter()
        .map(|f| (f.seq, f.golden.len() as u64))
        .collect();
    let n: Vec<(u64, u64)> = d
        .frames
        .iter()
        .map(|f| (f.seq, f.new.len() as u64))
        .collect();
    let max_x = d.frames.iter().map(|f| f.seq).max().unwrap_or(1).max(1);
    let max_y = g.iter().chain(&n).map(|p| p.1).max().unwrap_or(1).max(1) + 1;
    let root = BitMapBackend::new(out, (960, 320)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{}: detections per frame (golden blue, new red)", d.source),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0u64..max_x, 0u64..max_y)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("frame")
        .y_desc("detections")
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(g, BLUE.stroke_width(2)))
        .map_err(err)?;
    c.draw_series(LineSeries::new(n, RED.stroke_width(1)))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn register_font() -> Result<(), ReportError> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let bytes =
            std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (install fonts-dejavu-core)"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT}: not a usable font"))
    })
    .clone()
    .map_err(ReportError)
}

/// Write `dir/report.md`, `dir/<source>-chart.png` and `dir/<source>-frame-<seq>.png`.
#[allow(
    clippy::too_many_lines,
    reason = "the report's sections in reading order"
)]
pub fn write(
    dir: &Path,
    pipeline: &str,
    sources: &[SourceSettings],
    diffs: &[SourceDiff],
) -> Result<PathBuf, ReportError> {
    std::fs::create_dir_all(dir).map_err(err)?;
    register_font()?;
    let mut md = String::new();
    let verdict = if diffs.iter().all(SourceDiff::passed) {
        "PASS"
    } else {
        "FAIL"
    };
    let _ = writeln!(md, "# Regression report: `{pipeline}` — {verdict}\n");
    let _ = writeln!(
        md,
        "| source | frames (new/golden) | matched | missing | extra | score drift mean / max | score violations | box moves | track IDF1 | ID switches | result |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for d in diffs {
        let (idf1, sw) = d.tracks.as_ref().map_or(("—".into(), "—".into()), |t| {
            (format!("{:.4}", t.idf1), t.num_switches.to_string())
        });
        let _ = writeln!(
            md,
            "| {} | {}/{} | {} | {} | {} | {:.4} / {:.4} | {} | {} | {} | {} | {} |",
            d.source,
            d.frames_new,
            d.frames_golden,
            d.matched,
            d.missing,
            d.extra,
            d.mean_score_drift,
            d.max_score_drift,
            d.score_violations,
            d.box_moves,
            idf1,
            sw,
            if d.passed() { "pass" } else { "**fail**" }
        );
    }
    for d in diffs {
        let _ = writeln!(md, "\n## {}\n", d.source);
        for f in &d.failures {
            let _ = writeln!(md, "- {f}");
        }
        let chart_name = format!("{}-chart.png", d.source);
        chart(d, &dir.join(&chart_name))?;
        let _ = writeln!(md, "\n![detections per frame]({chart_name})\n");
        let mut worst: Vec<&crate::regress::compare::FrameDiff> =
            d.frames.iter().filter(|f| f.badness() > 0).collect();
        worst.sort_by_key(|f| (std::cmp::Reverse(f.badness()), f.seq));
        worst.truncate(WORST_FRAMES);
        if worst.is_empty() {
            let _ = writeln!(md, "No frame differs.");
            continue;
        }
        let _ = writeln!(
            md,
            "| frame | missing (golden only) | extra (new only) | score moves | box moves (golden → new) |\n|---|---|---|---|---|"
        );
        let describe = |v: &[RecordDetection]| {
            v.iter()
                .map(|x| {
                    format!(
                        "{} {:.2} [{:.0},{:.0},{:.0},{:.0}]",
                        x.class, x.score, x.bbox[0], x.bbox[1], x.bbox[2], x.bbox[3]
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        for f in &worst {
            let moves = f
                .score_violations
                .iter()
                .map(|(c, a, b)| format!("{c} {a:.2}→{b:.2}"))
                .collect::<Vec<_>>()
                .join("; ");
            let boxes = f
                .box_moves
                .iter()
                .map(|(c, a, b)| {
                    format!(
                        "{c} [{:.0},{:.0},{:.0},{:.0}]→[{:.0},{:.0},{:.0},{:.0}]",
                        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                f.seq,
                describe(&f.missing),
                describe(&f.extra),
                moves,
                boxes
            );
        }
        if let Some(src) = sources.iter().find(|s| s.id == d.source) {
            let seqs: BTreeSet<u64> = worst.iter().map(|f| f.seq).collect();
            let images = frames_at(src, &seqs);
            let _ = writeln!(md, "\nGolden boxes left (green), new boxes right (red):\n");
            for f in &worst {
                let Some(image) = images.get(&f.seq) else {
                    continue;
                };
                let name = format!("{}-frame-{}.png", d.source, f.seq);
                thumbnail(image, &f.golden, &f.new, &dir.join(&name))?;
                let _ = writeln!(md, "frame {}:\n\n![frame {}]({name})\n", f.seq, f.seq);
            }
        }
    }
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(err)?;
    Ok(path)
}
