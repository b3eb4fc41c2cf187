//! The darknet cfg interpreter: the YOLO line (v1–v4) described by `.cfg` files with `.weights`.

pub mod cfg;
pub mod layers;
pub mod net;
pub mod weights;

pub use net::{DarknetError, DarknetNet};
