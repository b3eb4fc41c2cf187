//! JPEG snapshots of one detection: the whole frame with its box drawn, and the box's crop.

use opencv::core::{Mat, Rect, Vec3b, Vector};
use opencv::imgcodecs;
use opencv::prelude::*;

use crate::frame::{Detection, Frame};

/// `(whole frame with the box, crop of the box)`, JPEG-encoded.
pub fn jpegs(
    frame: &Frame,
    d: &Detection,
    classes: &[String],
) -> opencv::Result<(Vec<u8>, Vec<u8>)> {
    let (w, h) = (frame.image.width, frame.image.height);
    let mut pixels = frame.image.bgr.clone();
    super::overlay::draw(&mut pixels, w, h, std::slice::from_ref(d), &[], classes)?;
    let full = jpeg(&pixels, w, h, None)?;
    let b = d.box_in_frame.0.clamped(w as f32, h as f32);
    let crop = Rect::new(
        b.x1 as i32,
        b.y1 as i32,
        (b.width() as i32).max(1),
        (b.height() as i32).max(1),
    );
    let crop = jpeg(&frame.image.bgr, w, h, Some(crop))?;
    Ok((full, crop))
}

/// The whole frame as the overlay draws it (boxes, track ids, trails, zones and lines), as JPEG:
/// what the console's live view shows.
pub fn annotated_jpeg(frame: &Frame, classes: &[String]) -> opencv::Result<Vec<u8>> {
    let pixels = super::overlay::frame_pixels(frame, classes, true)?;
    jpeg(&pixels, frame.image.width, frame.image.height, None)
}

fn jpeg(bgr: &[u8], w: u32, h: u32, crop: Option<Rect>) -> opencv::Result<Vec<u8>> {
    let mut pixels = bgr.to_vec();
    let mat = Mat::new_rows_cols_with_bytes_mut::<Vec3b>(h as i32, w as i32, &mut pixels)?;
    let mut out = Vector::<u8>::new();
    let params = Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, 90]);
    match crop {
        Some(r) => {
            let r = Rect::new(
                r.x.clamp(0, w as i32 - 1),
                r.y.clamp(0, h as i32 - 1),
                r.width.min(w as i32 - r.x.clamp(0, w as i32 - 1)).max(1),
                r.height.min(h as i32 - r.y.clamp(0, h as i32 - 1)).max(1),
            );
            let roi = mat.roi(r)?;
            imgcodecs::imencode(".jpg", &roi, &mut out, &params)?;
        }
        None => {
            imgcodecs::imencode(".jpg", &mat, &mut out, &params)?;
        }
    }
    Ok(out.to_vec())
}
