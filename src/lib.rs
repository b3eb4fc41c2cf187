//! vigil: a real-time video analytics daemon. See `ARCHITECTURE.md` for the module map.

pub mod analytics;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod density;
pub mod detect;
pub mod event;
pub mod fault;
pub mod flow;
pub mod frame;
pub mod hash;
pub mod image_io;
pub mod ingest;
pub mod lifecycle;
pub mod model_tools;
pub mod output;
pub mod paths;
pub mod preprocess;
pub mod regress;
pub mod retry;
pub mod runtime;
pub mod service;
pub mod track;
pub mod units;
