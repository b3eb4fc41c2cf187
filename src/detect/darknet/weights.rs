//! Darknet `.weights` files: a header (major, minor, revision as i32; images seen as u64 from
//! format 0.2 on, u32 before), then every layer's parameters as little-endian f32, in cfg order.
//!
//! The same reader can *synthesize* parameters instead of reading them ([`WeightReader::synth`]):
//! seeded, deterministic, scaled per layer so activations neither vanish nor explode through
//! 100+ layers. The values it hands out are recorded and [`WeightReader::to_bytes`] writes them
//! as a `.weights` file, so vigil and a reference tool see the same bytes.

use std::path::Path;

/// What a run of parameters is, so synthesized values get a sensible distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param {
    Bias,
    /// Batch-norm γ.
    Scale,
    /// Batch-norm running mean.
    Mean,
    /// Batch-norm running variance (kept positive).
    Variance,
    /// Kernel weights of a unit summing `fan_in` inputs; `gain` 1 keeps the variance of a linear
    /// unit, √2 that of a (leaky) ReLU.
    Kernel {
        fan_in: usize,
        gain: f32,
    },
}

/// splitmix64 (Steele et al.): tiny, fast and the same on every platform.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)` from the top 24 bits (exact in f32).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// Reads the parameters of a `.weights` file in order (or synthesizes them).
#[derive(Debug)]
pub struct WeightReader {
    values: Vec<f32>,
    pos: usize,
    synth: Option<SplitMix64>,
}

impl WeightReader {
    /// A reader that makes up parameters from `seed` instead of reading them.
    pub fn synth(seed: u64) -> Self {
        Self {
            values: Vec::new(),
            pos: 0,
            synth: Some(SplitMix64(seed)),
        }
    }

    /// The values handed out so far as a darknet `.weights` file (format 0.2: 64-bit `seen`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20 + 4 * self.values.len());
        for v in [0i32, 2, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&0u64.to_le_bytes());
        for v in &self.values {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Read a `.weights` file.
    pub fn open(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        Self::from_bytes(&bytes)
    }

    /// Parse the bytes of a `.weights` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let int = |i: usize| -> Result<i32, String> {
            bytes
                .get(i * 4..i * 4 + 4)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_le_bytes)
                .ok_or_else(|| "too short for a darknet header".to_string())
        };
        let (major, minor) = (int(0)?, int(1)?);
        let _revision = int(2)?;
        let header = if major * 10 + minor >= 2 && major < 1000 && minor < 1000 {
            20
        } else {
            16
        };
        let body = bytes
            .get(header..)
            .ok_or("too short for a darknet header")?;
        if body.len() % 4 != 0 {
            return Err(format!(
                "{} bytes after the header is not a whole number of f32 values",
                body.len()
            ));
        }
        let values = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            values,
            pos: 0,
            synth: None,
        })
    }

    /// The next `n` values (of kind `param`, which only synthesis looks at).
    pub fn take(&mut self, n: usize, param: Param) -> Result<Vec<f32>, String> {
        if let Some(rng) = &mut self.synth {
            let made: Vec<f32> = (0..n)
                .map(|_| match param {
                    Param::Bias | Param::Mean => rng.uniform(-0.1, 0.1),
                    Param::Scale => rng.uniform(0.8, 1.2),
                    Param::Variance => rng.uniform(0.5, 1.5),
                    Param::Kernel { fan_in, gain } => {
                        // uniform(−a, a) has variance a²/3 = gain²/fan_in
                        let a = gain * (3.0 / fan_in.max(1) as f32).sqrt();
                        rng.uniform(-a, a)
                    }
                })
                .collect();
            self.values.extend_from_slice(&made);
            self.pos += n;
            return Ok(made);
        }
        let end = self.pos + n;
        let out = self.values.get(self.pos..end).ok_or_else(|| {
            format!(
                "the weights file ends early: this layer needs {n} values, {} are left",
                self.values.len() - self.pos
            )
        })?;
        let out = out.to_vec();
        self.pos = end;
        Ok(out)
    }

    /// Values not yet taken.
    pub fn remaining(&self) -> usize {
        self.values.len() - self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(major: i32, minor: i32, seen64: bool) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [major, minor, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        if seen64 {
            b.extend_from_slice(&7u64.to_le_bytes());
        } else {
            b.extend_from_slice(&7u32.to_le_bytes());
        }
        b
    }

    #[test]
    fn header_size_depends_on_version() {
        for (major, minor, seen64) in [(0, 2, true), (0, 1, false)] {
            let mut b = header(major, minor, seen64);
            b.extend_from_slice(&1.5f32.to_le_bytes());
            let mut r = WeightReader::from_bytes(&b).unwrap();
            assert_eq!(r.take(1, Param::Bias).unwrap(), [1.5]);
            assert_eq!(r.remaining(), 0);
            assert!(r.take(1, Param::Bias).is_err());
        }
    }

    /// Synthesized values are deterministic per seed, in range, and read back bit for bit.
    #[test]
    fn synth_is_seeded_and_round_trips() {
        let make = |seed| {
            let mut w = WeightReader::synth(seed);
            let k = w
                .take(
                    1000,
                    Param::Kernel {
                        fan_in: 27,
                        gain: 1.0,
                    },
                )
                .unwrap();
            let v = w.take(10, Param::Variance).unwrap();
            (w, k, v)
        };
        let (w, k, v) = make(7);
        assert_eq!(k, make(7).1);
        assert_ne!(k, make(8).1);
        let a = (3.0f32 / 27.0).sqrt();
        assert!(k.iter().all(|x| x.abs() <= a));
        assert!(v.iter().all(|x| *x >= 0.5));
        let mut back = WeightReader::from_bytes(&w.to_bytes()).unwrap();
        assert_eq!(back.take(1000, Param::Bias).unwrap(), k);
        assert_eq!(back.take(10, Param::Bias).unwrap(), v);
        assert_eq!(back.remaining(), 0);
    }
}
