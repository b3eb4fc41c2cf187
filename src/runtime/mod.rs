//! The stage graph: one thread per stage, bounded edges with a full-policy, end of stream in-band.

pub mod edge;
pub mod error;
pub mod events;
pub mod governor;
pub mod metrics;
pub mod pipeline;
pub mod stages;
pub mod supervise;

pub use pipeline::{RunOptions, RunReport, run};
