//! Regression tooling: metrics that score a run against a reference.

pub mod mot;
