//! ONNX models on Candle: vigil's own graph executor (no ONNX Runtime).
//!
//! Loading ([`OnnxModel::load`]) reads the protobuf ([`proto`]), parses every node into an
//! [`ops::Op`] (an unknown operator is an error naming the node, operator and opset), fixes the
//! input's dynamic dims, and plans the graph ([`plan`]): one dry run at load resolves every shape
//! statically and folds everything that depends only on constants and shapes (the `Shape → Gather
//! → Concat → Reshape` chains exporters write); Conv weights are bound and packed for vigil's
//! fast convolution, with BatchNorm and the activation (SiLU as `Sigmoid + Mul`, ReLU, LeakyReLU,
//! HardSwish, Sigmoid) fused into it. What remains runs per frame as a flat list of steps over
//! numbered slots, each freed after its last use.
//!
//! [`decode`] turns each family's output tensors into vigil's [`super::head::Candidate`]s.

pub mod centernet;
mod conv_fusion;
pub mod decode;
pub mod detector;
pub mod efficientdet;
pub mod ops;
pub mod plan;
pub mod proto;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

pub use detector::{Normalize, OnnxDetector, OnnxSettings};
use plan::Program;

/// The opsets of the default domain vigil runs.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=19;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error(
        "opset {opset} of domain `{domain}` is not supported (vigil runs ONNX opsets 11–19; re-export with an opset in that range)"
    )]
    Opset { domain: String, opset: i64 },
    #[error("{}", .nodes.join("; "))]
    Unsupported { nodes: Vec<String> },
    #[error("node `{node}` ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
    #[error("graph: {0}")]
    Graph(String),
    #[error("input: {0}")]
    Input(String),
}

/// What `vigil model inspect` shows, gathered at load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub ir_version: i64,
    pub opsets: BTreeMap<String, i64>,
    pub producer: String,
    pub inputs: Vec<proto::Declared>,
    pub outputs: Vec<proto::Declared>,
    /// Output shapes as resolved at load, in output order.
    pub output_shapes: Vec<Vec<usize>>,
    /// Input shape the model was planned for.
    pub input_shape: Vec<usize>,
    /// Operator → node count.
    pub operators: BTreeMap<String, usize>,
    pub nodes: usize,
    /// Nodes left to run per frame after folding and fusion.
    pub steps: usize,
    pub parameters: u64,
    /// Multiply-adds × 2 of the Conv/ConvTranspose/MatMul/Gemm nodes, per inference.
    pub flops: u64,
    pub metadata: BTreeMap<String, String>,
}

/// A loaded, planned ONNX model with one image input.
#[derive(Debug)]
pub struct OnnxModel {
    program: Program,
    pub summary: Summary,
}

impl OnnxModel {
    /// Load `path`, fixing the input's batch to `batch` and, where the file leaves them dynamic,
    /// its height and width to `size` (`(width, height)`).
    pub fn load(
        path: &Path,
        batch: usize,
        size: Option<(u32, u32)>,
        device: &Device,
    ) -> Result<Self, OnnxError> {
        let model = proto::read(path)?;
        let (program, summary) = plan::plan(&model, batch, size, device)?;
        Ok(Self { program, summary })
    }

    /// Parse and check a file without planning it (`vigil check`): opsets, operators, one input.
    /// Returns the declared input.
    pub fn check(path: &Path) -> Result<proto::Declared, OnnxError> {
        let model = proto::read(path)?;
        plan::check(&model)
    }

    /// The input shape the model was planned for (`[batch, channels, height, width]`).
    pub fn input_shape(&self) -> &[usize] {
        &self.summary.input_shape
    }

    /// Run on one input tensor of [`Self::input_shape`]; every graph output, in order.
    pub fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, OnnxError> {
        self.program.run(input)
    }

    /// Run with a per-step timing profile (`vigil bench --model`): `(op type, seconds)` per step.
    pub fn run_profiled(
        &self,
        input: &Tensor,
    ) -> Result<(Vec<Tensor>, plan::StepTimes), OnnxError> {
        self.program.run_profiled(input)
    }

    pub fn output_names(&self) -> Vec<String> {
        self.summary
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }
}
