//! darknet's max-pool on the CPU as a Candle custom op: windows may hang over the edge by
//! `pad_lo` before and `pad_hi` after (size 2 / stride 1 pads right and bottom only); values
//! outside the input never win. Parallel over channels.
//!
//! Input `(batch, c, h, w)` f32 contiguous → `(batch, c, (h + pad − size)/stride + 1, …)`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy)]
pub struct MaxPool {
    pub size: usize,
    pub stride: usize,
    pub pad_lo: usize,
    pub pad_hi: usize,
}

impl MaxPool {
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let pad = self.pad_lo + self.pad_hi;
        (
            (h + pad - self.size) / self.stride + 1,
            (w + pad - self.size) / self.stride + 1,
        )
    }

    pub fn run(&self, x: &[f32], (b, c, h, w): (usize, usize, usize, usize)) -> Vec<f32> {
        let (oh, ow) = self.out_hw(h, w);
        let mut out = vec![0f32; b * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(plane_index, dst)| {
                let src = &x[plane_index * h * w..(plane_index + 1) * h * w];
                for oy in 0..oh {
                    let y0 = (oy * self.stride) as isize - self.pad_lo as isize;
                    let ys =
                        y0.max(0) as usize..((y0 + self.size as isize).min(h as isize)) as usize;
                    for ox in 0..ow {
                        let x0 = (ox * self.stride) as isize - self.pad_lo as isize;
                        let xs = x0.max(0) as usize
                            ..((x0 + self.size as isize).min(w as isize)) as usize;
                        let mut m = f32::NEG_INFINITY;
                        for y in ys.clone() {
                            for v in &src[y * w + xs.start..y * w + xs.end] {
                                m = m.max(*v);
                            }
                        }
                        dst[oy * ow + ox] = m;
                    }
                }
            });
        out
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "vigil-darknet-maxpool"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        if h + self.pad_lo + self.pad_hi < self.size || w + self.pad_lo + self.pad_hi < self.size {
            candle_core::bail!(
                "maxpool: {h}x{w} input is smaller than the window {}",
                self.size
            );
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("maxpool: only f32 is supported");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("maxpool: input must be contiguous");
        };
        let (oh, ow) = self.out_hw(h, w);
        Ok((
            CpuStorage::F32(self.run(&data[start..end], (b, c, h, w))),
            Shape::from((b, c, oh, ow)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Matches Candle's max_pool2d on an edge-replicated input (the plain path) for darknet's two
    /// yolov3-tiny shapes and an odd one.
    #[test]
    fn matches_padded_candle_maxpool() {
        for (size, stride, h, w) in [(2, 2, 8, 8), (2, 1, 13, 13), (3, 2, 9, 7)] {
            let padding = size - 1;
            let p = MaxPool {
                size,
                stride,
                pad_lo: padding / 2,
                pad_hi: padding - padding / 2,
            };
            let n = 2 * 3 * h * w;
            let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
            let x = Tensor::from_vec(data, (2, 3, h, w), &Device::Cpu).unwrap();
            let fast = x.apply_op1_no_bwd(&p).unwrap();
            let plain = x
                .pad_with_same(2, p.pad_lo, p.pad_hi)
                .unwrap()
                .pad_with_same(3, p.pad_lo, p.pad_hi)
                .unwrap()
                .max_pool2d_with_stride(size, stride)
                .unwrap();
            assert_eq!(fast.dims(), plain.dims());
            let a: Vec<f32> = fast.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = plain.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "size {size} stride {stride} {h}x{w}");
        }
    }
}
