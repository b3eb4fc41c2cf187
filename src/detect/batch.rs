//! How the detector gathers frames into one forward pass: `detector.batch` in a pipeline file.
//!
//! A batch takes the frames already waiting (from any stream) up to `max`; with a `wait`, the
//! detector holds the first frame up to that long for more to arrive. On a GPU a batch of 8 costs
//! little more than a batch of 1, so a few milliseconds of waiting buys throughput; on the CPU the
//! cost grows with the batch and waiting only adds latency (the default is not to wait).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::units::HumanDuration;

/// The largest batch a pipeline may ask for.
pub const MAX_BATCH: usize = 64;
/// The longest a batch may hold its first frame.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// `batch: 8` (up to 8 frames, whatever is waiting) or `batch: {max: 8, wait: 5ms}` (hold the
/// first frame up to 5 ms for the batch to fill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpec {
    /// Frames per forward pass at most (1..=64), from one or several streams.
    pub max: usize,
    /// How long the first frame of a batch may wait for more (at most 1 s); none by default.
    pub wait: Option<Duration>,
}

/// The batching the detector stage runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max: usize,
    /// Zero: take only what is already waiting.
    pub wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max: 1,
            wait: Duration::ZERO,
        }
    }
}

impl BatchSpec {
    /// Checked: `max` in 1..=64, `wait` at most 1 s and only with `max` > 1.
    pub fn resolve(self) -> Result<Batching, String> {
        if self.max == 0 || self.max > MAX_BATCH {
            return Err(format!(
                "detector.batch must be 1..={MAX_BATCH}, got {}",
                self.max
            ));
        }
        let wait = self.wait.unwrap_or(Duration::ZERO);
        if wait > MAX_WAIT {
            return Err(format!(
                "detector.batch.wait must be at most 1s, got {}",
                humantime::format_duration(wait)
            ));
        }
        if self.max == 1 && !wait.is_zero() {
            return Err(
                "detector.batch.wait needs a max above 1 (a batch of one never waits)".into(),
            );
        }
        Ok(Batching {
            max: self.max,
            wait,
        })
    }
}

impl<'de> Deserialize<'de> for BatchSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The long form's keys.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            max: usize,
            #[serde(default)]
            wait: Option<HumanDuration>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BatchSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of frames, or {max: N, wait: 5ms}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BatchSpec, E> {
                Ok(BatchSpec {
                    max: usize::try_from(v).unwrap_or(usize::MAX),
                    wait: None,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BatchSpec, E> {
                u64::try_from(v)
                    .map_err(|_| {
                        E::custom(format!("detector.batch must be 1..={MAX_BATCH}, got {v}"))
                    })
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BatchSpec, A::Error> {
                let full = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(BatchSpec {
                    max: full.max,
                    wait: full.wait.map(|w| w.0),
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Batching, String> {
        serde_saphyr::from_str::<BatchSpec>(y)
            .map_err(|e| e.to_string())?
            .resolve()
    }

    #[test]
    fn short_and_long_forms() {
        assert_eq!(
            parse("4").unwrap(),
            Batching {
                max: 4,
                wait: Duration::ZERO
            }
        );
        assert_eq!(
            parse("{max: 8, wait: 5ms}").unwrap(),
            Batching {
                max: 8,
                wait: Duration::from_millis(5)
            }
        );
        assert_eq!(parse("{max: 2}").unwrap().wait, Duration::ZERO);
    }

    #[test]
    fn out_of_range_and_unknown_keys_are_refused() {
        assert!(parse("0").unwrap_err().contains("1..=64, got 0"));
        assert!(parse("65").is_err());
        assert!(parse("-1").is_err());
        assert!(
            parse("{max: 4, wait: 2s}")
                .unwrap_err()
                .contains("at most 1s")
        );
        assert!(
            parse("{max: 1, wait: 5ms}")
                .unwrap_err()
                .contains("needs a max above 1")
        );
        assert!(
            parse("{max: 4, wiat: 5ms}")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse("{max: 4, wait: 5}")
                .unwrap_err()
                .contains("needs a unit")
        );
    }
}
