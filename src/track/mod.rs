//! Multi-object tracking.

pub mod assign;
