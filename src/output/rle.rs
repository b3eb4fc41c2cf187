//! Instance masks in the metadata as COCO's uncompressed run-length encoding: `{"size": [height,
//! width], "counts": [...]}` over the whole frame, column-major (x outer, y inner), runs
//! alternating unset/set and starting with an unset run (0 when the first pixel is set).
//! `pycocotools.mask.frPyObjects(rle, h, w)` and every COCO tool read it as it is.

use serde::{Deserialize, Serialize};

use crate::frame::{BitMask, MaskInFrame};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rle {
    /// `[height, width]` of the frame.
    pub size: [u32; 2],
    pub counts: Vec<u32>,
}

impl Rle {
    /// The RLE of `mask` in a `width × height` frame (mask pixels outside it are dropped).
    pub fn encode(mask: &MaskInFrame, width: u32, height: u32) -> Self {
        let m = &mask.0;
        let mut counts = Vec::new();
        let mut run = 0u32;
        let mut current = 0u8;
        let mut push = |bit: u8, n: u32| {
            if bit == current {
                run += n;
            } else {
                counts.push(run);
                current = bit;
                run = n;
            }
        };
        let x_end = (m.x + m.width).min(width);
        let y_end = (m.y + m.height).min(height);
        let y_start = m.y.min(y_end);
        for x in 0..width {
            if x < m.x || x >= x_end {
                push(0, height);
                continue;
            }
            push(0, y_start);
            for y in y_start..y_end {
                push(m.bits[((y - m.y) * m.width + (x - m.x)) as usize], 1);
            }
            push(0, height - y_end);
        }
        counts.push(run);
        Self {
            size: [height, width],
            counts,
        }
    }

    /// The frame-sized mask this encodes (`height × width` bytes, row-major, 0 or 1), or why the
    /// counts do not cover the frame exactly.
    pub fn decode(&self) -> Result<BitMask, String> {
        let [height, width] = self.size;
        let total = u64::from(height) * u64::from(width);
        let sum: u64 = self.counts.iter().map(|&c| u64::from(c)).sum();
        if sum != total {
            return Err(format!(
                "RLE counts sum to {sum}, the frame has {total} pixels"
            ));
        }
        let mut bits = vec![0u8; total as usize];
        let mut i = 0u64;
        for (k, &c) in self.counts.iter().enumerate() {
            if k % 2 == 1 {
                for j in i..i + u64::from(c) {
                    let (x, y) = (j / u64::from(height), j % u64::from(height));
                    bits[(y * u64::from(width) + x) as usize] = 1;
                }
            }
            i += u64::from(c);
        }
        Ok(BitMask {
            x: 0,
            y: 0,
            width,
            height,
            bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_encodes_column_major_and_decodes_back() {
        // 2×2 mask at (1, 1) in a 4×3 frame: pixels (1,1), (2,1), (2,2) set
        let mask = MaskInFrame(BitMask {
            x: 1,
            y: 1,
            width: 2,
            height: 2,
            bits: vec![1, 1, 0, 1],
        });
        let rle = Rle::encode(&mask, 4, 3);
        // columns: x=0 000, x=1 010, x=2 011, x=3 000 → 0000 1 00 11 000 → runs 4,1,2,2,3
        assert_eq!(rle.counts, [4, 1, 2, 2, 3]);
        assert_eq!(rle.size, [3, 4]);
        let back = rle.decode().unwrap();
        for y in 0..3i64 {
            for x in 0..4i64 {
                assert_eq!(back.get(x, y), mask.0.get(x, y), "({x}, {y})");
            }
        }
    }

    #[test]
    fn a_mask_set_at_the_first_pixel_starts_with_an_empty_run() {
        let mask = MaskInFrame(BitMask {
            x: 0,
            y: 0,
            width: 1,
            height: 1,
            bits: vec![1],
        });
        assert_eq!(Rle::encode(&mask, 2, 2).counts, [0, 1, 3]);
        let bad = Rle {
            size: [2, 2],
            counts: vec![1, 1],
        };
        assert!(bad.decode().unwrap_err().contains("sum to 2"));
    }
}
