//! The darknet cfg interpreter: YOLOv3-style networks described by `.cfg` files with `.weights`.

pub mod cfg;
pub mod net;
pub mod weights;

pub use net::{DarknetError, DarknetNet};
