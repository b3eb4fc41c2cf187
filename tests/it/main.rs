//! vigil's integration tests: one binary, real GStreamer, real weights, real video.
//! Assets come from `scripts/fetch-assets` (`make test` runs it first).

// A test reads top to bottom as one scenario (start, act, check); long ones stay whole.
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom"
)]

mod analytics;
mod backbones;
mod bad_input;
mod batching;
mod cli;
mod cluster;
mod common;
mod config_corpus;
mod config_docs;
mod config_files;
mod config_fuzz;
mod console_api;
mod console_browser;
mod darknet_parity;
mod demo;
mod detect_parity;
mod detectors;
mod faults;
mod frame_sizes;
mod governor;
mod gpu_check;
mod layers;
mod live;
mod mot_metrics;
mod onnx;
mod regress;
mod service;
mod service_ops;
mod sigterm;
mod tflite;
mod trackers;
