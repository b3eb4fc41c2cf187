//! Fit a frame to the model's input: letterbox (keep aspect, pad with grey) or stretch, with OpenCV's
//! bilinear resize, then RGB planes of f32 in `[0, 1]`. Returns the `frame_from_model` transform
//! that maps boxes back to frame pixels.

pub mod on_device;

use opencv::core::{Mat, Size, Vec3b};
use opencv::imgproc;
use opencv::prelude::*;

use crate::frame::Image;
pub use crate::frame::{FrameFromModel, ModelInput, Resize};

/// darknet's letterbox fill (0.5 grey).
pub const LETTERBOX_FILL: f32 = 0.5;

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("opencv: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("letterbox on the device: {0}")]
    Device(#[from] candle_core::Error),
    #[error("image of {width}x{height} has {len} bytes, expected {expected}")]
    BadImage {
        width: u32,
        height: u32,
        len: usize,
        expected: usize,
    },
}

/// The size the frame is scaled to and where it sits in the model input.
fn placement(frame: (u32, u32), model: (u32, u32), resize: Resize) -> (u32, u32, u32, u32) {
    let (fw, fh) = (frame.0 as f32, frame.1 as f32);
    let (mw, mh) = model;
    match resize {
        Resize::Stretch => (mw, mh, 0, 0),
        Resize::Letterbox => {
            // darknet's letterbox_image: the tighter axis fills the input exactly
            let (nw, nh) = if mw as f32 / fw < mh as f32 / fh {
                (mw, ((fh * mw as f32 / fw) as u32).clamp(1, mh))
            } else {
                (((fw * mh as f32 / fh) as u32).clamp(1, mw), mh)
            };
            (nw, nh, (mw - nw) / 2, (mh - nh) / 2)
        }
    }
}

/// Resize `image` into a `model.0 × model.1` network input.
pub fn prepare(
    image: &Image,
    model: (u32, u32),
    resize: Resize,
) -> Result<ModelInput, PreprocessError> {
    let expected = image.row_bytes() * image.height as usize;
    if image.bgr.len() != expected || image.width == 0 || image.height == 0 {
        return Err(PreprocessError::BadImage {
            width: image.width,
            height: image.height,
            len: image.bgr.len(),
            expected,
        });
    }
    let (nw, nh, ox, oy) = placement((image.width, image.height), model, resize);
    let src = Mat::new_rows_cols_with_bytes::<Vec3b>(
        image.height as i32,
        image.width as i32,
        &image.bgr,
    )?;
    let mut dst = Mat::default();
    imgproc::resize(
        &src,
        &mut dst,
        Size::new(nw as i32, nh as i32),
        0.0,
        0.0,
        imgproc::INTER_LINEAR,
    )?;
    let resized = dst.data_bytes()?;

    let (mw, mh) = (model.0 as usize, model.1 as usize);
    let plane = mw * mh;
    let mut chw = vec![LETTERBOX_FILL; 3 * plane];
    let (nw, nh, ox, oy) = (nw as usize, nh as usize, ox as usize, oy as usize);
    for y in 0..nh {
        let row = &resized[y * nw * 3..(y + 1) * nw * 3];
        let at = (y + oy) * mw + ox;
        for (x, px) in row.chunks_exact(3).enumerate() {
            // BGR in, RGB planes out
            chw[at + x] = px[2] as f32 / 255.0;
            chw[plane + at + x] = px[1] as f32 / 255.0;
            chw[2 * plane + at + x] = px[0] as f32 / 255.0;
        }
    }
    Ok(ModelInput {
        chw,
        on_device: None,
        width: model.0,
        height: model.1,
        frame_from_model: frame_from_model((image.width, image.height), (nw, nh, ox, oy)),
    })
}

/// The map back to frame pixels of a frame of `frame` pixels scaled to `nw × nh` and placed at
/// `(ox, oy)` in the model input.
fn frame_from_model(
    frame: (u32, u32),
    (nw, nh, ox, oy): (usize, usize, usize, usize),
) -> FrameFromModel {
    FrameFromModel {
        scale_x: nw as f32 / frame.0 as f32,
        scale_y: nh as f32 / frame.1 as f32,
        offset_x: ox as f32,
        offset_y: oy as f32,
        frame_w: frame.0 as f32,
        frame_h: frame.1 as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{BoxInModel, Xyxy};

    fn image(w: u32, h: u32) -> Image {
        Image {
            width: w,
            height: h,
            bgr: vec![255; (w * h * 3) as usize],
        }
    }

    /// A wide frame letterboxed into a square keeps its aspect and is centred vertically.
    #[test]
    fn letterbox_pads_short_side_and_maps_back() {
        let input = prepare(&image(768, 576), (416, 416), Resize::Letterbox).unwrap();
        let t = input.frame_from_model;
        assert_eq!((t.offset_x, t.offset_y), (0.0, 52.0));
        // top rows are padding, middle is image
        assert_eq!(input.chw[0], LETTERBOX_FILL);
        assert_eq!(input.chw[208 * 416 + 10], 1.0);
        let b = t
            .apply(BoxInModel(Xyxy {
                x1: 0.0,
                y1: 52.0,
                x2: 416.0,
                y2: 364.0,
            }))
            .0;
        assert!(
            (b.x2 - 768.0).abs() < 0.5 && (b.y2 - 576.0).abs() < 0.5 && b.y1.abs() < 1e-3,
            "{b:?}"
        );
    }

    #[test]
    fn stretch_fills_the_input() {
        let input = prepare(&image(640, 272), (416, 416), Resize::Stretch).unwrap();
        assert!(input.chw.iter().all(|&v| v == 1.0));
        let b = input
            .frame_from_model
            .apply(BoxInModel(Xyxy {
                x1: 208.0,
                y1: 208.0,
                x2: 416.0,
                y2: 416.0,
            }))
            .0;
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (320.0, 136.0, 640.0, 272.0));
    }

    #[test]
    fn rejects_short_buffers() {
        let mut im = image(4, 4);
        im.bgr.pop();
        assert!(matches!(
            prepare(&im, (8, 8), Resize::Stretch),
            Err(PreprocessError::BadImage { .. })
        ));
    }
}
