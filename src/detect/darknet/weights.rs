//! Darknet `.weights` files: a header (major, minor, revision as i32; images seen as u64 from
//! format 0.2 on, u32 before), then every layer's parameters as little-endian f32, in cfg order.

use std::path::Path;

/// Reads the parameters of a `.weights` file in order.
#[derive(Debug)]
pub struct WeightReader {
    values: Vec<f32>,
    pos: usize,
}

impl WeightReader {
    pub fn open(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        Self::from_bytes(&bytes)
    }

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
        Ok(Self { values, pos: 0 })
    }

    /// The next `n` values.
    pub fn take(&mut self, n: usize) -> Result<Vec<f32>, String> {
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
            assert_eq!(r.take(1).unwrap(), [1.5]);
            assert_eq!(r.remaining(), 0);
            assert!(r.take(1).is_err());
        }
    }
}
