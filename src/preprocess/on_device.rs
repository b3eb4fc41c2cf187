//! Letterbox and normalization as Candle ops, for a detector on a GPU: the frame crosses the bus
//! as BGR bytes (a quarter of the f32 input's size) and is converted, resized and padded where the
//! network runs. Same placement and bilinear filter as [`super::prepare`] (half-pixel centres, no
//! antialiasing, rounded to whole 8-bit levels as OpenCV's 8-bit resize is), so the two agree to
//! about one level.

use candle_core::{DType, Device, Tensor};

use super::{LETTERBOX_FILL, placement};
use crate::frame::{FrameFromModel, Image, Resize};

/// `image` as a `(1, 3, model.1, model.0)` f32 RGB tensor in `[0, 1]` on `device`, padded with
/// [`LETTERBOX_FILL`], and the map of its boxes back to frame pixels.
pub fn letterbox(
    image: &Image,
    model: (u32, u32),
    resize: Resize,
    device: &Device,
) -> candle_core::Result<(Tensor, FrameFromModel)> {
    let (w, h) = (image.width as usize, image.height as usize);
    if image.bgr.len() != image.row_bytes() * h || w == 0 || h == 0 {
        candle_core::bail!(
            "image of {w}x{h} has {} bytes, expected {}",
            image.bgr.len(),
            image.row_bytes() * h
        );
    }
    let (nw, nh, ox, oy) = placement((image.width, image.height), model, resize);
    let (nw, nh, ox, oy) = (nw as usize, nh as usize, ox as usize, oy as usize);
    let (mw, mh) = (model.0 as usize, model.1 as usize);
    let rgb = Tensor::new(&[2u32, 1, 0], device)?;
    let x = Tensor::from_slice(&image.bgr, (h, w, 3), device)?
        .to_dtype(DType::F32)?
        .index_select(&rgb, 2)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()?;
    let x = if (nw, nh) == (w, h) {
        x
    } else {
        x.upsample_bilinear2d(nh, nw, false)?.round()?
    };
    // Pad around zero, then shift: the fill is the padding's value.
    let x = ((x / 255.0)? - f64::from(LETTERBOX_FILL))?
        .pad_with_zeros(2, oy, mh - nh - oy)?
        .pad_with_zeros(3, ox, mw - nw - ox)?;
    let x = (x + f64::from(LETTERBOX_FILL))?;
    Ok((
        x,
        super::frame_from_model((image.width, image.height), (nw, nh, ox, oy)),
    ))
}

/// [`letterbox`] as the pipeline's model input: the tensor stays on `device` for the detector.
pub fn prepare(
    image: &Image,
    model: (u32, u32),
    resize: Resize,
    device: &Device,
) -> Result<crate::frame::ModelInput, super::PreprocessError> {
    let (t, map) = letterbox(image, model, resize, device)?;
    Ok(crate::frame::ModelInput {
        chw: Vec::new(),
        on_device: Some(t),
        width: model.0,
        height: model.1,
        frame_from_model: map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured frame (gradients and a checkerboard) as OpenCV and as Candle letterbox it.
    #[test]
    fn agrees_with_the_opencv_letterbox_within_a_level() {
        let (w, h) = (301u32, 173u32);
        let mut bgr = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let check = if (x / 7 + y / 5) % 2 == 0 { 200 } else { 30 };
                bgr.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, check]);
            }
        }
        let image = Image {
            width: w,
            height: h,
            bgr,
        };
        for (model, resize) in [
            ((128, 128), Resize::Letterbox),
            ((160, 96), Resize::Stretch),
            ((416, 416), Resize::Letterbox),
        ] {
            let cpu = super::super::prepare(&image, model, resize).unwrap();
            let (t, map) = letterbox(&image, model, resize, &Device::Cpu).unwrap();
            assert_eq!(t.dims(), &[1, 3, model.1 as usize, model.0 as usize]);
            assert_eq!(map, cpu.frame_from_model);
            let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let worst = got
                .iter()
                .zip(&cpu.chw)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let mean = got
                .iter()
                .zip(&cpu.chw)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / got.len() as f32;
            eprintln!(
                "{model:?} {resize:?}: worst {:.3} mean {:.4} levels",
                worst * 255.0,
                mean * 255.0
            );
            assert!(
                worst <= 1.01 / 255.0 && mean < 0.1 / 255.0,
                "{model:?}: worst {} mean {} levels",
                worst * 255.0,
                mean * 255.0
            );
        }
    }
}
