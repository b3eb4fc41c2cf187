//! Draw detections on a BGR frame with OpenCV: a box per object, `class score` (and `#track`) above it.

use opencv::core::{Mat, Point, Rect, Scalar, Vec3b, Vector};
use opencv::imgproc;

use crate::event::RegionsView;
use crate::frame::{BitMask, Detection, Frame, Trail};

/// A distinct, stable colour per class (or per track when tracked), BGR.
fn colour(key: u64) -> Scalar {
    const PALETTE: [(f64, f64, f64); 10] = [
        (56.0, 56.0, 255.0),
        (151.0, 157.0, 255.0),
        (31.0, 112.0, 255.0),
        (29.0, 178.0, 255.0),
        (49.0, 210.0, 207.0),
        (10.0, 249.0, 72.0),
        (23.0, 204.0, 146.0),
        (134.0, 219.0, 61.0),
        (211.0, 188.0, 0.0),
        (255.0, 115.0, 100.0),
    ];
    let (b, g, r) = PALETTE[(key % PALETTE.len() as u64) as usize];
    Scalar::new(b, g, r, 0.0)
}

/// A copy of the frame's pixels, with its detections and trails drawn when `overlay` is set.
pub fn frame_pixels(frame: &Frame, classes: &[String], overlay: bool) -> opencv::Result<Vec<u8>> {
    let mut pixels = frame.image.bgr.clone();
    if overlay {
        draw(
            &mut pixels,
            frame.image.width,
            frame.image.height,
            &frame.detections,
            &frame.trails,
            classes,
        )?;
        if let Some(regions) = &frame.regions {
            draw_regions(&mut pixels, frame.image.width, frame.image.height, regions)?;
        }
    }
    Ok(pixels)
}

/// The zone and line colour: yellow, unlike any class colour at full saturation.
const REGION: (f64, f64, f64) = (0.0, 215.0, 255.0);

/// Zones (outline, name and occupancy) and lines (name and counts per direction).
pub fn draw_regions(
    bgr: &mut [u8],
    width: u32,
    height: u32,
    regions: &RegionsView,
) -> opencv::Result<()> {
    let mut mat = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(height as i32, width as i32, bgr)?;
    let thickness = ((width.max(height) as f32 / 500.0).round() as i32).max(1);
    let colour = Scalar::new(REGION.0, REGION.1, REGION.2, 0.0);
    let to_points = |p: &[(f32, f32)]| -> Vector<Point> {
        p.iter()
            .map(|(x, y)| Point::new(*x as i32, *y as i32))
            .collect()
    };
    let shapes = regions.zones.iter().map(|z| {
        (
            to_points(&z.points),
            true,
            format!("{}: {}", z.name, z.occupancy),
        )
    });
    let lines = regions.lines.iter().map(|l| {
        let [(a, na), (b, nb)] = &l.counts;
        let label = format!("{}: {na} {a}, {nb} {b}", l.name);
        (to_points(&l.points), false, label)
    });
    for (pts, closed, label) in shapes.chain(lines) {
        let polys: Vector<Vector<Point>> = std::iter::once(pts.clone()).collect();
        let t = if closed { thickness } else { thickness + 1 };
        imgproc::polylines(&mut mat, &polys, closed, colour, t, imgproc::LINE_AA, 0)?;
        if let Ok(first) = pts.get(0) {
            boxed_text(
                &mut mat,
                (width as i32, height as i32),
                &label,
                first,
                f64::from(thickness) * 0.45,
                colour,
            )?;
        }
    }
    Ok(())
}

/// `text` on a dark box next to `at`, kept inside the picture.
fn boxed_text(
    mat: &mut impl opencv::core::ToInputOutputArray,
    size: (i32, i32),
    text: &str,
    at: Point,
    scale: f64,
    colour: Scalar,
) -> opencv::Result<()> {
    let mut base = 0;
    let (cols, rows) = size;
    let size = imgproc::get_text_size(text, imgproc::FONT_HERSHEY_SIMPLEX, scale, 1, &mut base)?;
    let (w, h) = (size.width + 6, size.height + base + 4);
    let x = (at.x + 3).clamp(0, (cols - w).max(0));
    let y = (at.y + 3).clamp(0, (rows - h).max(0));
    let bg = Scalar::new(20.0, 20.0, 20.0, 0.0);
    imgproc::rectangle(
        mat,
        Rect::new(x, y, w, h),
        bg,
        imgproc::FILLED,
        imgproc::LINE_8,
        0,
    )?;
    let origin = Point::new(x + 3, y + 2 + size.height);
    imgproc::put_text(
        mat,
        text,
        origin,
        imgproc::FONT_HERSHEY_SIMPLEX,
        scale,
        colour,
        1,
        imgproc::LINE_AA,
        false,
    )
}

/// A picture ready for an H.264 encoder: overlay drawn if asked, then padded to even width and
/// height (x264 with 4:2:0 chroma needs both even) by repeating the last column and row — the
/// source picture is kept whole, one pixel is added to an odd axis. x264 also refuses pictures
/// under 16 pixels on an axis: slivers (98x2) are padded up to 16 the same way.
#[derive(Debug)]
pub struct EncoderPicture {
    pub bgr: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// x264enc's smallest accepted width and height.
const MIN_ENCODER_SIDE: u32 = 16;

/// The size an encoder gets for a `width × height` frame: even, and at least 16 on each axis.
pub fn even_size(width: u32, height: u32) -> (u32, u32) {
    let side = |v: u32| (v + v % 2).max(MIN_ENCODER_SIDE);
    (side(width), side(height))
}

pub fn encoder_picture(
    frame: &Frame,
    classes: &[String],
    overlay: bool,
) -> opencv::Result<EncoderPicture> {
    let pixels = frame_pixels(frame, classes, overlay)?;
    let (w, h) = (frame.image.width, frame.image.height);
    let (ew, eh) = even_size(w, h);
    if (ew, eh) == (w, h) {
        return Ok(EncoderPicture {
            bgr: pixels,
            width: w,
            height: h,
        });
    }
    Ok(EncoderPicture {
        bgr: pad_to(
            &pixels,
            (w as usize, h as usize),
            (ew as usize, eh as usize),
        ),
        width: ew,
        height: eh,
    })
}

/// Copy a packed BGR picture of `from` size into one of `to` size (not smaller), repeating the
/// last column and row into the added ones.
fn pad_to(bgr: &[u8], from: (usize, usize), to: (usize, usize)) -> Vec<u8> {
    let (row, new_row) = (from.0 * 3, to.0 * 3);
    let mut out = Vec::with_capacity(new_row * to.1);
    for y in 0..to.1 {
        let src_y = y.min(from.1.saturating_sub(1));
        let line = bgr.get(src_y * row..(src_y + 1) * row).unwrap_or(&[]);
        out.extend_from_slice(line);
        let last = line.get(row.saturating_sub(3)..).unwrap_or(&[0, 0, 0]);
        while out.len() < (y + 1) * new_row {
            out.extend_from_slice(last);
        }
        out.truncate((y + 1) * new_row);
    }
    out
}

/// Tint the pixels of `mask` (frame pixels) half way towards `colour`, as Detectron2 and
/// Ultralytics draw instance masks: the object stays visible under it.
fn fill_mask(bgr: &mut [u8], width: u32, height: u32, mask: &BitMask, colour: Scalar) {
    let tint = [colour[0], colour[1], colour[2]].map(|c| c as u16);
    let x_end = (mask.x + mask.width).min(width);
    let y_end = (mask.y + mask.height).min(height);
    for y in mask.y..y_end {
        for x in mask.x..x_end {
            if mask.bits[((y - mask.y) * mask.width + (x - mask.x)) as usize] == 0 {
                continue;
            }
            let p = ((y * width + x) * 3) as usize;
            for (v, t) in bgr[p..p + 3].iter_mut().zip(tint) {
                *v = ((u16::from(*v) + t) / 2) as u8;
            }
        }
    }
}

/// Draw `detections` (their masks, and the `trails` of tracked ones) into `bgr` (`width × height`, tightly packed).
pub fn draw(
    bgr: &mut [u8],
    width: u32,
    height: u32,
    detections: &[Detection],
    trails: &[Trail],
    classes: &[String],
) -> opencv::Result<()> {
    for d in detections {
        if let Some(m) = &d.mask {
            let c = colour(d.track_id.unwrap_or(d.class_id as u64));
            fill_mask(bgr, width, height, &m.0, c);
        }
    }
    let mut mat = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(height as i32, width as i32, bgr)?;
    let thickness = ((width.max(height) as f32 / 400.0).round() as i32).max(1);
    for t in trails {
        let c = colour(t.track_id);
        for w in t.points.windows(2) {
            let (a, b) = (w[0], w[1]);
            imgproc::line(
                &mut mat,
                Point::new(a.0 as i32, a.1 as i32),
                Point::new(b.0 as i32, b.1 as i32),
                c,
                thickness,
                imgproc::LINE_AA,
                0,
            )?;
        }
    }
    let font_scale = (thickness as f64) * 0.35;
    for d in detections {
        let b = d.box_in_frame.0;
        let c = colour(d.track_id.unwrap_or(d.class_id as u64));
        let rect = Rect::new(
            b.x1 as i32,
            b.y1 as i32,
            b.width().max(1.0) as i32,
            b.height().max(1.0) as i32,
        );
        imgproc::rectangle(&mut mat, rect, c, thickness, imgproc::LINE_8, 0)?;
        let name = classes.get(d.class_id as usize).map_or("?", String::as_str);
        let label = match d.track_id {
            Some(t) => format!("#{t} {name} {:.2}", d.score),
            None => format!("{name} {:.2}", d.score),
        };
        let mut base = 0;
        let size = imgproc::get_text_size(
            &label,
            imgproc::FONT_HERSHEY_SIMPLEX,
            font_scale,
            1,
            &mut base,
        )?;
        let top = (b.y1 as i32 - size.height - base).max(0);
        let bg = Rect::new(b.x1 as i32, top, size.width + 2, size.height + base);
        imgproc::rectangle(&mut mat, bg, c, imgproc::FILLED, imgproc::LINE_8, 0)?;
        imgproc::put_text(
            &mut mat,
            &label,
            Point::new(b.x1 as i32 + 1, top + size.height),
            imgproc::FONT_HERSHEY_SIMPLEX,
            font_scale,
            Scalar::new(255.0, 255.0, 255.0, 0.0),
            1,
            imgproc::LINE_AA,
            false,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod pad_tests {
    use super::*;

    /// Odd sizes gain one repeated column / row; the source pixels stay where they were.
    #[test]
    fn odd_pictures_are_padded_by_repeating_the_edge() {
        // 3x1: pixels (1,1,1) (2,2,2) (3,3,3)
        let bgr = [1u8, 1, 1, 2, 2, 2, 3, 3, 3];
        let out = pad_to(&bgr, (3, 1), (4, 2));
        assert_eq!(
            out,
            [
                1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3
            ]
        );
        assert_eq!(even_size(720, 405), (720, 406));
        assert_eq!(even_size(98, 2), (98, 16));
        assert_eq!(even_size(16, 16), (16, 16));
        assert_eq!(even_size(641, 481), (642, 482));
    }
}
