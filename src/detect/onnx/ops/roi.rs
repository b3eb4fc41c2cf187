//! The two-stage detectors' operators: `RoiAlign` (the region features of Faster and Mask R-CNN)
//! and `ScatterElements` (torchvision's multi-scale RoI pooling writes each level's regions back
//! in order with it). Both run on host vectors: their sizes are set per frame by the proposals.

use candle_core::{DType, Result, Tensor};

use super::req;
use crate::detect::onnx::proto::Attrs;

/// `RoiAlign` (opset 10/16), average mode, as ONNX Runtime and torchvision compute it.
#[derive(Debug, Clone)]
pub struct RoiAlignOp {
    output: (usize, usize),
    /// Samples per bin along each axis; 0: `ceil(roi size / output size)`.
    sampling_ratio: usize,
    spatial_scale: f32,
    /// `half_pixel` (torchvision's `aligned=True`): coordinates shifted by −0.5 and regions
    /// not widened to at least one pixel.
    half_pixel: bool,
}

impl RoiAlignOp {
    pub fn parse(a: &Attrs, opset: i64) -> std::result::Result<Self, String> {
        if a.string_or("mode", "avg")? != "avg" {
            return Err("RoiAlign mode `max` is not supported (avg)".into());
        }
        let default_mode = if opset >= 16 {
            "half_pixel"
        } else {
            "output_half_pixel"
        };
        let half_pixel = match a
            .string_or("coordinate_transformation_mode", default_mode)?
            .as_str()
        {
            "half_pixel" => true,
            "output_half_pixel" => false,
            other => return Err(format!("RoiAlign coordinate_transformation_mode `{other}`")),
        };
        let positive = |name: &str, default: i64| -> std::result::Result<usize, String> {
            let v = a.int_or(name, default)?;
            usize::try_from(v)
                .ok()
                .filter(|v| *v <= 4096)
                .ok_or_else(|| format!("RoiAlign {name} {v}"))
        };
        Ok(Self {
            output: (positive("output_height", 1)?, positive("output_width", 1)?),
            sampling_ratio: positive("sampling_ratio", 0)?,
            spatial_scale: a.float_or("spatial_scale", 1.0)?,
            half_pixel,
        })
    }

    pub fn eval(&self, inputs: &[Option<Tensor>]) -> Result<Tensor> {
        let x = req(inputs, 0)?;
        let rois: Vec<f32> = req(inputs, 1)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let batch: Vec<i64> = req(inputs, 2)?
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1()?;
        let (n, c, h, w) = x.dims4()?;
        let data: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let (oh, ow) = self.output;
        let count = rois.len() / 4;
        if batch.len() != count {
            candle_core::bail!("RoiAlign: {count} regions, {} batch indices", batch.len());
        }
        let mut out = vec![0f32; count * c * oh * ow];
        for (r, (roi, &b)) in rois.chunks_exact(4).zip(&batch).enumerate() {
            let b = usize::try_from(b).ok().filter(|b| *b < n).ok_or_else(|| {
                candle_core::Error::Msg(format!("RoiAlign: batch index {b} of {n}"))
            })?;
            // the samples' neighbours and weights are the same for every channel: once per region
            let samples = self.samples((h, w), roi);
            let per_bin = samples.len() / (oh * ow);
            let scale = 1.0 / per_bin as f32;
            for ch in 0..c {
                let plane = &data[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                let dst = &mut out[(r * c + ch) * oh * ow..(r * c + ch + 1) * oh * ow];
                for (d, bin) in dst.iter_mut().zip(samples.chunks_exact(per_bin)) {
                    let sum: f32 = bin
                        .iter()
                        .map(|(at, wt)| (0..4).map(|k| wt[k] * plane[at[k]]).sum::<f32>())
                        .sum();
                    *d = sum * scale;
                }
            }
        }
        Tensor::from_vec(out, (count, c, oh, ow), x.device())?.to_dtype(x.dtype())
    }

    /// Every bin's sample points of one region, bin by bin: the four neighbours' offsets in a
    /// channel plane and their bilinear weights (zero outside the plane).
    fn samples(&self, (h, w): (usize, usize), roi: &[f32]) -> Vec<([usize; 4], [f32; 4])> {
        let offset = if self.half_pixel { 0.5 } else { 0.0 };
        let [x1, y1, x2, y2] =
            [roi[0], roi[1], roi[2], roi[3]].map(|v| v * self.spatial_scale - offset);
        let (mut rw, mut rh) = (x2 - x1, y2 - y1);
        if !self.half_pixel {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (oh, ow) = self.output;
        let (bin_h, bin_w) = (rh / oh as f32, rw / ow as f32);
        let grid = |size: f32, bins: usize| match self.sampling_ratio {
            0 => ((size / bins as f32).ceil() as usize).clamp(1, 64),
            s => s,
        };
        let (gh, gw) = (grid(rh, oh), grid(rw, ow));
        let mut out = Vec::with_capacity(oh * ow * gh * gw);
        for ph in 0..oh {
            for pw in 0..ow {
                for iy in 0..gh {
                    let y = y1 + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / gh as f32;
                    for ix in 0..gw {
                        let x = x1 + pw as f32 * bin_w + (ix as f32 + 0.5) * bin_w / gw as f32;
                        out.push(bilinear(h, w, y, x));
                    }
                }
            }
        }
        out
    }
}

/// The four neighbours of `(y, x)` and their weights; all weights zero outside `[-1, size]`.
fn bilinear(h: usize, w: usize, y: f32, x: f32) -> ([usize; 4], [f32; 4]) {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 || h == 0 || w == 0 {
        return ([0; 4], [0.0; 4]);
    }
    let axis = |v: f32, size: usize| -> (usize, usize, f32) {
        let v = v.max(0.0);
        let low = v.floor() as usize;
        if low >= size - 1 {
            (size - 1, size - 1, 0.0)
        } else {
            (low, low + 1, v - low as f32)
        }
    };
    let (y0, y1, ly) = axis(y, h);
    let (x0, x1, lx) = axis(x, w);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    (
        [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1],
        [hy * hx, hy * lx, ly * hx, ly * lx],
    )
}

/// `ScatterElements` with no reduction: `data` with `updates` written where `indices` point
/// along `axis`.
pub fn scatter_elements(inputs: &[Option<Tensor>], axis: i64) -> Result<Tensor> {
    let data = req(inputs, 0)?;
    let idx = req(inputs, 1)?;
    let upd = req(inputs, 2)?;
    let rank = data.rank();
    let ax = super::axis(axis, rank)?;
    if idx.dims() != upd.dims() || idx.rank() != rank {
        candle_core::bail!(
            "ScatterElements: indices {:?}, updates {:?}, data {:?}",
            idx.dims(),
            upd.dims(),
            data.dims()
        );
    }
    let dtype = data.dtype();
    if ax == 0
        && dtype == DType::F32
        && let Some(t) = scatter_rows(data, idx, upd)?
    {
        return Ok(t);
    }
    let mut out: Vec<f64> = data.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let indices: Vec<i64> = idx.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
    let updates: Vec<f64> = upd.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let (dd, id) = (data.dims(), idx.dims());
    let dim = dd[ax] as i64;
    for (flat, (&i, &u)) in indices.iter().zip(&updates).enumerate() {
        let i = if i < 0 { i + dim } else { i };
        if !(0..dim).contains(&i) {
            candle_core::bail!("ScatterElements: index {i} out of range for {dim}");
        }
        // the element's coordinates in `indices`, with the axis one replaced by the index
        let (mut rem, mut at, mut stride) = (flat, 0usize, 1usize);
        for d in (0..rank).rev() {
            let coord = rem % id[d];
            rem /= id[d];
            let coord = if d == ax { i as usize } else { coord };
            if coord >= dd[d] {
                candle_core::bail!("ScatterElements: indices larger than data at dim {d}");
            }
            at += coord * stride;
            stride *= dd[d];
        }
        out[at] = u;
    }
    Tensor::from_vec(out, dd, data.device())?.to_dtype(dtype)
}

/// The common case of torchvision's RoI pooling: along axis 0, each row of `indices` one index
/// repeated (an index expanded over the other dims), updates as wide as the data's rows: whole
/// rows copied. `None` when the case does not apply.
fn scatter_rows(data: &Tensor, idx: &Tensor, upd: &Tensor) -> Result<Option<Tensor>> {
    let (dd, id) = (data.dims(), idx.dims());
    if dd[1..] != id[1..] {
        return Ok(None);
    }
    let row = dd[1..].iter().product::<usize>();
    let indices: Vec<i64> = idx.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
    let dim = dd[0] as i64;
    let mut targets = Vec::with_capacity(id[0]);
    for r in indices.chunks_exact(row.max(1)) {
        let i = if r[0] < 0 { r[0] + dim } else { r[0] };
        if !(0..dim).contains(&i) || r.iter().any(|&v| v != r[0]) {
            return Ok(None);
        }
        targets.push(i as usize);
    }
    let mut out: Vec<f32> = data.flatten_all()?.to_vec1()?;
    let updates: Vec<f32> = upd.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    for (t, src) in targets.iter().zip(updates.chunks_exact(row.max(1))) {
        out[t * row..(t + 1) * row].copy_from_slice(src);
    }
    Ok(Some(Tensor::from_vec(out, dd, data.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn roi_align_of_a_ramp_averages_its_samples() {
        // x = column index: the mean over a region is its centre column
        let ramp: Vec<f32> = (0..8 * 8).map(|i| (i % 8) as f32).collect();
        let x = Tensor::from_vec(ramp, (1, 1, 8, 8), &Device::Cpu).unwrap();
        let rois = Tensor::new(&[[1f32, 1.0, 5.0, 5.0]], &Device::Cpu).unwrap();
        let batch = Tensor::new(&[0i64], &Device::Cpu).unwrap();
        let op = RoiAlignOp {
            output: (2, 2),
            sampling_ratio: 2,
            spatial_scale: 1.0,
            half_pixel: true,
        };
        let y = op.eval(&[Some(x), Some(rois), Some(batch)]).unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        // half_pixel: the region spans x 0.5..4.5, bins centred at 1.5 and 3.5
        assert_eq!(v, vec![1.5, 3.5, 1.5, 3.5]);
    }

    #[test]
    fn scatter_elements_writes_along_the_axis() {
        let data = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        let idx = Tensor::new(&[[2i64, 0], [0, 1]], &Device::Cpu).unwrap();
        let upd = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let y = scatter_elements(&[Some(data), Some(idx), Some(upd)], 0).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            vec![vec![3.0, 2.0], vec![0.0, 4.0], vec![1.0, 0.0]]
        );
    }
}
