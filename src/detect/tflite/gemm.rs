//! The integer matrix product under the quantized convolutions: four pixels' patches (int16,
//! zero points already subtracted) against every output channel's weights, int32 sums.
//!
//! Weights are packed once at load in blocks of 16 output channels with the reduction dimension
//! in pairs, the layout `vpmaddwd` wants: one instruction multiplies a broadcast pair of inputs
//! with 8 channels' weight pairs and adds each pair. On CPUs with AVX2 that kernel runs; others
//! get the same arithmetic in plain Rust. Integer sums are exact, so both give equal results.

/// Output channels per packed block.
const BLOCK: usize = 16;
/// Pixels per tile.
pub const TILE: usize = 6;

/// Weights `[out][k]` repacked as `[block][k / 2][channel in block][2]`, zero-padded to whole
/// blocks and an even `k`.
#[derive(Debug)]
pub struct PackedWeights {
    pairs: usize,
    blocks: usize,
    data: Vec<i16>,
}

impl PackedWeights {
    pub fn new(weights: &[i16], out: usize, k: usize) -> Self {
        let pairs = k.div_ceil(2);
        let blocks = out.div_ceil(BLOCK);
        let mut data = vec![0i16; blocks * pairs * BLOCK * 2];
        for o in 0..out {
            let (b, lane) = (o / BLOCK, o % BLOCK);
            for (i, &w) in weights[o * k..(o + 1) * k].iter().enumerate() {
                data[((b * pairs + i / 2) * BLOCK + lane) * 2 + i % 2] = w;
            }
        }
        Self {
            pairs,
            blocks,
            data,
        }
    }

    /// Length of one patch: `k` rounded up to even (the pad is zero).
    pub fn patch_len(&self) -> usize {
        self.pairs * 2
    }

    /// Length of one pixel's sums: the output channels rounded up to whole blocks.
    pub fn sums_len(&self) -> usize {
        self.blocks * BLOCK
    }

    /// `sums[p · sums_len + o] = Σ_k patches[p · patch_len + k] · w[o][k]` for the [`TILE`] pixels.
    pub fn tile(&self, patches: &[i16], sums: &mut [i32]) {
        assert!(patches.len() >= TILE * self.patch_len() && sums.len() >= TILE * self.sums_len());
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above), and the lengths the kernel's
            // unchecked loads rely on were asserted at the top of this function.
            unsafe { self.tile_avx2(patches, sums) };
            return;
        }
        self.tile_portable(patches, sums);
    }

    fn tile_portable(&self, patches: &[i16], sums: &mut [i32]) {
        let (pl, sl) = (self.patch_len(), self.sums_len());
        for p in 0..TILE {
            let x = &patches[p * pl..(p + 1) * pl];
            let s = &mut sums[p * sl..(p + 1) * sl];
            s.fill(0);
            for b in 0..self.blocks {
                let w = &self.data[b * self.pairs * BLOCK * 2..(b + 1) * self.pairs * BLOCK * 2];
                for (kp, wp) in w.chunks_exact(BLOCK * 2).enumerate() {
                    let (x0, x1) = (x[2 * kp] as i32, x[2 * kp + 1] as i32);
                    for (lane, pair) in wp.chunks_exact(2).enumerate() {
                        s[b * BLOCK + lane] += x0 * pair[0] as i32 + x1 * pair[1] as i32;
                    }
                }
            }
        }
    }

    /// The AVX2 kernel: 6 pixels × 16 channels in twelve 8-lane accumulators (with the two
    /// weight vectors and the broadcast, 15 of the 16 registers).
    ///
    /// # Safety
    /// The CPU must have AVX2; `patches` must hold `TILE · patch_len()` values and `sums`
    /// `TILE · sums_len()`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2(&self, patches: &[i16], sums: &mut [i32]) {
        use std::arch::x86_64::*;
        let (pl, sl) = (self.patch_len(), self.sums_len());
        // Each pixel's patch read as i32 pairs (x[2k], x[2k+1]): the lane vpmaddwd multiplies
        // with one channel's two weights, broadcast from memory.
        let rows: [*const i32; TILE] = std::array::from_fn(|p| patches[p * pl..].as_ptr().cast());
        for b in 0..self.blocks {
            let w = &self.data[b * self.pairs * BLOCK * 2..(b + 1) * self.pairs * BLOCK * 2];
            let mut acc = [_mm256_setzero_si256(); 2 * TILE];
            for (kp, wp) in w.chunks_exact(BLOCK * 2).enumerate() {
                // SAFETY: `wp` holds 32 i16 (two 256-bit vectors); unaligned loads.
                let (w0, w1) = unsafe {
                    (
                        _mm256_loadu_si256(wp.as_ptr().cast()),
                        _mm256_loadu_si256(wp.as_ptr().add(16).cast()),
                    )
                };
                for (p, row) in rows.iter().enumerate() {
                    // SAFETY: pair `kp` < pairs lies inside pixel p's patch of 2 · pairs values
                    // (length asserted by the caller); unaligned read.
                    let x = _mm256_set1_epi32(unsafe { row.add(kp).read_unaligned() });
                    acc[2 * p] = _mm256_add_epi32(acc[2 * p], _mm256_madd_epi16(x, w0));
                    acc[2 * p + 1] = _mm256_add_epi32(acc[2 * p + 1], _mm256_madd_epi16(x, w1));
                }
            }
            for p in 0..TILE {
                let dst = &mut sums[p * sl + b * BLOCK..p * sl + (b + 1) * BLOCK];
                // SAFETY: `dst` holds 16 i32 (two 256-bit vectors); unaligned stores.
                unsafe {
                    _mm256_storeu_si256(dst.as_mut_ptr().cast(), acc[2 * p]);
                    _mm256_storeu_si256(dst.as_mut_ptr().add(8).cast(), acc[2 * p + 1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kernels give the plain sums for odd sizes (padding in k and in the channels).
    #[test]
    fn kernels_agree_with_the_definition() {
        let (out, k) = (21, 13);
        let w: Vec<i16> = (0..out * k)
            .map(|i| ((i * 37 % 511) as i16) - 255)
            .collect();
        let pw = PackedWeights::new(&w, out, k);
        let mut patches = vec![0i16; TILE * pw.patch_len()];
        for p in 0..TILE {
            for i in 0..k {
                patches[p * pw.patch_len() + i] = ((p * 91 + i * 53) % 511) as i16 - 255;
            }
        }
        let want: Vec<i32> = (0..TILE)
            .flat_map(|p| {
                let patches = &patches;
                let w = &w;
                (0..out).map(move |o| {
                    (0..k)
                        .map(|i| patches[p * (k + 1) + i] as i32 * w[o * k + i] as i32)
                        .sum::<i32>()
                })
            })
            .collect();
        let mut fast = vec![0i32; TILE * pw.sums_len()];
        pw.tile(&patches, &mut fast);
        let mut plain = vec![0i32; TILE * pw.sums_len()];
        pw.tile_portable(&patches, &mut plain);
        for p in 0..TILE {
            for o in 0..out {
                let at = p * pw.sums_len() + o;
                assert_eq!(
                    (fast[at], plain[at]),
                    (want[p * out + o], want[p * out + o])
                );
            }
        }
    }
}
