//! Regression testing on recorded video: compare a run's metadata with golden metadata, per
//! frame, and write a report a person can look at.

pub mod compare;
pub mod mot;
pub mod replay;
pub mod report;

pub use compare::{SourceDiff, Tolerances, compare};
