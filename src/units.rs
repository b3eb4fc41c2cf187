//! Human-friendly units in pipeline files: durations (`500ms`, `30s`, `1m30s`) and sizes
//! (`512KiB`, `64MiB`, `1GB`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A duration written as `500ms`, `30s`, `2m`, `1h30m` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 500ms, 30s or 2m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s.trim())
                    .map(HumanDuration)
                    .map_err(|_| {
                        E::custom(format!(
                            "invalid duration `{s}`: write it like 500ms, 30s or 2m"
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<HumanDuration, E> {
                Err(E::custom(
                    "a duration needs a unit: write it like 500ms, 30s or 2m",
                ))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes written as `4096`, `512KiB`, `64MiB`, `1GB` (binary and decimal units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid size `{s}`: write it like 4096, 512KiB or 64MiB"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            u => {
                return Err(format!(
                    "invalid size `{s}`: unknown unit `{u}` (B, KB, MB, GB, KiB, MiB, GiB)"
                ));
            }
        };
        Ok(Self((n * mult as f64).round() as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 4096, 512KiB or 64MiB")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64MiB").unwrap(), ByteSize(64 << 20));
        assert_eq!(ByteSize::parse("1.5KB").unwrap(), ByteSize(1500));
        assert_eq!(ByteSize::parse("4096").unwrap(), ByteSize(4096));
        assert!(
            ByteSize::parse("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn durations() {
        let d: HumanDuration = serde_saphyr::from_str("500ms").unwrap();
        assert_eq!(d.0, Duration::from_millis(500));
        let d: HumanDuration = serde_saphyr::from_str("1m30s").unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        assert!(serde_saphyr::from_str::<HumanDuration>("5").is_err());
    }
}
