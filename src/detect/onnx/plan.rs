//! From a parsed ONNX graph to a runnable [`Program`]: validation, topological order, one dry
//! run that resolves shapes and folds constants, Conv binding and fusion, slot assignment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::conv_fusion::{self, PStep};
use super::ops::{Op, ParseError};
use super::proto::{self, ModelProto, NodeProto};
use super::{OPSETS, OnnxError, Summary};

/// Per step: `operator\tnode\toutput shape` and seconds.
pub type StepTimes = Vec<(String, f64)>;

/// One node left to run per frame.
#[derive(Debug)]
struct Step {
    name: String,
    op_type: String,
    op: Op,
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    /// Slots whose last reader is this step.
    free: Vec<usize>,
}

/// The per-frame program.
#[derive(Debug)]
pub struct Program {
    steps: Vec<Step>,
    slots: usize,
    consts: Vec<(usize, Tensor)>,
    input_slot: usize,
    input_shape: Vec<usize>,
    outputs: Vec<usize>,
}

impl Program {
    pub fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, OnnxError> {
        self.execute(input, None)
    }

    pub fn run_profiled(&self, input: &Tensor) -> Result<(Vec<Tensor>, StepTimes), OnnxError> {
        let mut prof = Vec::with_capacity(self.steps.len());
        let out = self.execute(input, Some(&mut prof))?;
        Ok((out, prof))
    }

    fn execute(
        &self,
        input: &Tensor,
        mut prof: Option<&mut Vec<(String, f64)>>,
    ) -> Result<Vec<Tensor>, OnnxError> {
        if input.dims() != self.input_shape.as_slice() {
            return Err(OnnxError::Input(format!(
                "shape {:?}, the model was loaded for {:?}",
                input.dims(),
                self.input_shape
            )));
        }
        let mut slots: Vec<Option<Tensor>> = vec![None; self.slots];
        for (i, t) in &self.consts {
            slots[*i] = Some(t.clone());
        }
        slots[self.input_slot] = Some(
            input
                .to_dtype(DType::F32)
                .map_err(|e| OnnxError::Input(e.to_string()))?,
        );
        let mut args: Vec<Option<Tensor>> = Vec::with_capacity(8);
        for step in &self.steps {
            args.clear();
            args.extend(step.inputs.iter().map(|s| s.and_then(|s| slots[s].clone())));
            let started = prof.as_ref().map(|_| Instant::now());
            let outs = step
                .op
                .eval(&args)
                .map_err(|e| node_error(&step.name, &step.op_type, &e))?;
            for (slot, t) in step.outputs.iter().zip(outs) {
                slots[*slot] = Some(t);
            }
            if let (Some(p), Some(t0)) = (prof.as_deref_mut(), started) {
                let shape = step
                    .outputs
                    .first()
                    .and_then(|&o| slots[o].as_ref())
                    .map(|t| t.dims().to_vec())
                    .unwrap_or_default();
                p.push((
                    format!("{}\t{}\t{:?}", step.op_type, step.name, shape),
                    t0.elapsed().as_secs_f64(),
                ));
            }
            for s in &step.free {
                slots[*s] = None;
            }
        }
        self.outputs
            .iter()
            .map(|&s| {
                slots[s]
                    .clone()
                    .ok_or_else(|| OnnxError::Graph("an output was not produced".into()))
            })
            .collect()
    }
}

fn node_error(name: &str, op: &str, e: &candle_core::Error) -> OnnxError {
    OnnxError::Node {
        node: name.to_string(),
        op: op.to_string(),
        message: without_backtrace(e),
    }
}

/// Candle's message without the backtrace it attaches when `RUST_BACKTRACE` is set.
pub fn without_backtrace(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(inner),
        other => other.to_string(),
    }
}

/// The default domain's opset, checked against [`OPSETS`]; other domains are refused when used.
fn default_opset(model: &ModelProto) -> Result<i64, OnnxError> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| {
            OnnxError::Graph("the model imports no opset of the default ONNX domain".into())
        })?;
    if !OPSETS.contains(&opset) {
        return Err(OnnxError::Opset {
            domain: "ai.onnx".into(),
            opset,
        });
    }
    Ok(opset)
}

/// Parse every node; all unsupported operators are reported together.
fn parse_nodes(nodes: &[NodeProto], opset: i64, device: &Device) -> Result<Vec<Op>, OnnxError> {
    let mut ops = Vec::with_capacity(nodes.len());
    let mut unsupported = Vec::new();
    for n in nodes {
        match Op::parse(n, opset, device) {
            Ok(op) => ops.push(op),
            Err(ParseError::Unsupported) => {
                let domain = if n.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &n.domain
                };
                unsupported.push(format!(
                    "unknown operator {} in node `{}` (domain {domain}, opset {opset})",
                    n.op_type,
                    node_name(n)
                ));
            }
            Err(ParseError::Bad(message)) => {
                return Err(OnnxError::Node {
                    node: node_name(n),
                    op: n.op_type.clone(),
                    message,
                });
            }
        }
    }
    if !unsupported.is_empty() {
        unsupported.truncate(8);
        return Err(OnnxError::Unsupported { nodes: unsupported });
    }
    Ok(ops)
}

fn node_name(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output
            .first()
            .map_or_else(|| "<unnamed>".into(), |o| format!("→{o}"))
    } else {
        n.name.clone()
    }
}

/// The graph's one real input (inputs that are also initializers are constants: old IR).
fn image_input(model: &ModelProto) -> Result<proto::Declared, OnnxError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Graph("no graph".into()))?;
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let real: Vec<proto::Declared> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(proto::declared)
        .collect();
    match real.as_slice() {
        [one] => {
            if !matches!(one.dims.len(), 3 | 4) {
                return Err(OnnxError::Input(format!(
                    "`{}` has rank {}; an image model takes one NCHW tensor (rank 4), or one CHW image (rank 3, as torchvision's detection exports do)",
                    one.name,
                    one.dims.len()
                )));
            }
            if proto::compute_dtype(one.elem_code) != Some(DType::F32) {
                return Err(OnnxError::Input(format!(
                    "`{}` is {}; vigil feeds float images",
                    one.name, one.elem_type
                )));
            }
            Ok(one.clone())
        }
        [] => Err(OnnxError::Input("the graph has no input".into())),
        many => Err(OnnxError::Input(format!(
            "the graph has {} inputs ({}); vigil runs models with one image input",
            many.len(),
            many.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Parse-level checks for `vigil check`.
pub fn check(model: &ModelProto) -> Result<proto::Declared, OnnxError> {
    let opset = default_opset(model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Graph("no graph".into()))?;
    let nodes = super::ops::with_implicit_inputs(&graph.node);
    parse_nodes(&nodes, opset, &Device::Cpu)?;
    order(&nodes, &known_names(model))?;
    if graph.output.is_empty() {
        return Err(OnnxError::Graph("the graph declares no outputs".into()));
    }
    image_input(model)
}

fn known_names(model: &ModelProto) -> HashSet<String> {
    let Some(g) = model.graph.as_ref() else {
        return HashSet::new();
    };
    g.initializer
        .iter()
        .map(|t| t.name.clone())
        .chain(g.input.iter().map(|i| i.name.clone()))
        .collect()
}

/// Nodes in dependency order (ONNX requires it; some tools do not), refusing undefined inputs,
/// tensors produced twice, and cycles.
fn order(nodes: &[NodeProto], known: &HashSet<String>) -> Result<Vec<usize>, OnnxError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.output.iter().all(String::is_empty) {
            return Err(OnnxError::Graph(format!(
                "node `{}` ({}) has no outputs",
                node_name(n),
                n.op_type
            )));
        }
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if known.contains(o) || producer.insert(o, i).is_some() {
                return Err(OnnxError::Graph(format!(
                    "tensor `{o}` is produced more than once (again by node `{}`)",
                    node_name(n)
                )));
            }
        }
    }
    let mut indegree = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            match producer.get(inp.as_str()) {
                Some(&p) => {
                    indegree[i] += 1;
                    users[p].push(i);
                }
                None if known.contains(inp) => {}
                None => {
                    return Err(OnnxError::Graph(format!(
                        "node `{}` ({}) reads `{inp}`, which is undefined (no node, initializer or input makes it)",
                        node_name(n),
                        n.op_type
                    )));
                }
            }
        }
    }
    let mut ready: std::collections::VecDeque<usize> =
        (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_front() {
        out.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.push_back(u);
            }
        }
    }
    if out.len() != nodes.len() {
        let stuck = (0..nodes.len())
            .find(|&i| indegree[i] > 0)
            .map(|i| node_name(&nodes[i]))
            .unwrap_or_default();
        return Err(OnnxError::Graph(format!(
            "the graph has a cycle (through node `{stuck}`)"
        )));
    }
    Ok(out)
}

/// The concrete input shape: declared dims, with dynamic ones fixed (batch to `batch`, H/W to
/// `size`). A rank-3 input is one CHW image (no batch dimension).
fn input_shape(
    decl: &proto::Declared,
    batch: usize,
    size: Option<(u32, u32)>,
) -> Result<Vec<usize>, OnnxError> {
    let mut dims: Vec<usize> = Vec::with_capacity(4);
    // where C sits: after the batch dimension, or first
    let c = decl.dims.len().saturating_sub(3);
    for (i, d) in decl.dims.iter().enumerate() {
        let batch_dim = c == 1 && i == 0;
        let want = match i.checked_sub(c) {
            None => Some(batch),
            Some(1) => size.map(|s| s.1 as usize),
            Some(2) => size.map(|s| s.0 as usize),
            _ => None,
        };
        let v = match (d, want) {
            (Some(d), Some(w)) if !batch_dim && *d as usize != w => {
                return Err(OnnxError::Input(format!(
                    "`{}` is fixed at {:?} in the file; {w} was asked for dim {i}",
                    decl.name, decl.dims
                )));
            }
            (Some(d), _) if !batch_dim => *d as usize,
            (_, Some(w)) => w,
            (Some(d), None) => *d as usize,
            (None, None) => {
                return Err(OnnxError::Input(format!(
                    "`{}` dim {i} is dynamic ({}): give the model's input size (`input: WxH` in the manifest)",
                    decl.name,
                    decl.dim_names[i].as_deref().unwrap_or("unnamed")
                )));
            }
        };
        dims.push(v);
    }
    let declared: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    proto::element_count(&decl.name, &declared)?;
    Ok(dims)
}

/// Plan a model for `batch` images of `size`.
pub fn plan(
    model: &ModelProto,
    batch: usize,
    size: Option<(u32, u32)>,
    device: &Device,
) -> Result<(Program, Summary), OnnxError> {
    let opset = default_opset(model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Graph("no graph".into()))?;
    let decl = image_input(model)?;
    let shape = input_shape(&decl, batch, size)?;
    // `If` nodes with the outer tensors their branches read as explicit inputs
    let nodes = super::ops::with_implicit_inputs(&graph.node);
    let mut ops = parse_nodes(&nodes, opset, device)?;
    let sorted = order(&nodes, &known_names(model))?;
    if graph.output.is_empty() {
        return Err(OnnxError::Graph("the graph declares no outputs".into()));
    }
    let mut consts: HashMap<String, Tensor> = HashMap::new();
    let mut parameters = 0u64;
    for t in &graph.initializer {
        let v = proto::tensor(t, device)?;
        parameters += v.elem_count() as u64;
        consts.insert(t.name.clone(), v);
    }
    let output_names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let dry = DryRun::run(
        &nodes,
        &mut ops,
        &sorted,
        &mut consts,
        &decl.name,
        &shape,
        &output_names,
        device,
    )?;
    let flops = count_flops(&nodes, &dry.shapes, &consts);
    let kept: Vec<usize> = sorted
        .iter()
        .copied()
        .filter(|i| !dry.folded.contains(i))
        .collect();
    let mut steps: Vec<PStep> = kept
        .iter()
        .map(|&i| PStep {
            name: node_name(&nodes[i]),
            label: nodes[i].op_type.clone(),
            op: ops[i].clone(),
            inputs: nodes[i].input.clone(),
            outputs: nodes[i].output.clone(),
        })
        .collect();
    conv_fusion::bind_and_fuse(&mut steps, &consts, &output_names, device)
        .map_err(|(node, e)| node_error(&node, "Conv", &e))?;
    let program = assemble(steps, &consts, &decl.name, shape.clone(), &output_names)?;
    let summary = Summary {
        inputs: vec![decl],
        outputs: graph.output.iter().map(proto::declared).collect(),
        output_shapes: output_names
            .iter()
            .map(|n| dry.shapes.get(n).cloned().unwrap_or_default())
            .collect(),
        input_shape: shape,
        steps: program.steps.len(),
        parameters,
        flops,
        ..describe(model)
    };
    Ok((program, summary))
}

/// What the file says of itself (the rest of [`Summary`] comes from planning).
fn describe(model: &ModelProto) -> Summary {
    let nodes = model.graph.as_ref().map_or(&[][..], |g| &g.node[..]);
    Summary {
        ir_version: model.ir_version,
        opsets: model
            .opset_import
            .iter()
            .map(|o| {
                let domain = if o.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &o.domain
                };
                (domain.to_string(), o.version)
            })
            .collect(),
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        output_shapes: Vec::new(),
        input_shape: Vec::new(),
        operators: nodes.iter().fold(BTreeMap::new(), |mut m, n| {
            *m.entry(n.op_type.clone()).or_insert(0) += 1;
            m
        }),
        nodes: nodes.len(),
        steps: 0,
        parameters: 0,
        flops: 0,
        metadata: model
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
    }
}

/// The load-time run: every node evaluated once on a zero input; outputs that depend only on
/// constants or shapes become constants.
struct DryRun {
    folded: HashSet<usize>,
    shapes: HashMap<String, Vec<usize>>,
}

impl DryRun {
    #[allow(clippy::too_many_arguments)]
    fn run(
        nodes: &[NodeProto],
        ops: &mut [Op],
        sorted: &[usize],
        consts: &mut HashMap<String, Tensor>,
        input_name: &str,
        shape: &[usize],
        outputs: &[String],
        device: &Device,
    ) -> Result<Self, OnnxError> {
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (pos, &i) in sorted.iter().enumerate() {
            for inp in &nodes[i].input {
                last_use.insert(inp.as_str(), pos);
            }
        }
        // A pattern in [0, 1), not zeros: a blank image sends detectors with data-dependent
        // post-processing down their empty paths, which some exports cannot take (torchvision's
        // RetinaNet reshapes an empty level to `[0, -1]`, an error in ONNX Runtime too). Folding
        // never depends on the input's values, only on which tensors derive from it.
        let n: usize = shape.iter().product();
        let pattern: Vec<f32> = (0..n as u64)
            .map(|i| ((i * 2_654_435_761) % (1 << 32)) as f32 / 4_294_967_296.0)
            .collect();
        let dummy = Tensor::from_vec(pattern, shape, device)
            .map_err(|e| OnnxError::Input(e.to_string()))?;
        let mut live: HashMap<String, Tensor> = HashMap::new();
        live.insert(input_name.to_string(), dummy);
        let mut folded = HashSet::new();
        let mut shapes = HashMap::new();
        shapes.insert(input_name.to_string(), shape.to_vec());
        // Tensors whose shape depends on the data (NonZero, NMS, and what follows them): their
        // `Shape` is not a constant.
        let mut data_shaped: HashSet<&str> = HashSet::new();
        for (pos, &i) in sorted.iter().enumerate() {
            let n = &nodes[i];
            let mut args = Vec::with_capacity(n.input.len());
            let mut all_const = true;
            let mut values_shape_output = false;
            for (k, inp) in n.input.iter().enumerate() {
                if inp.is_empty() {
                    args.push(None);
                } else if let Some(c) = consts.get(inp) {
                    args.push(Some(c.clone()));
                } else {
                    all_const = false;
                    values_shape_output |= ops[i].shape_from_input(k);
                    args.push(live.get(inp).cloned());
                }
            }
            let outs = ops[i]
                .eval(&args)
                .map_err(|e| node_error(&node_name(n), &n.op_type, &e))?;
            let input_data_shaped = n.input.iter().any(|x| data_shaped.contains(x.as_str()));
            let fold = all_const || (ops[i].is_shape_of() && !input_data_shaped);
            if !fold && (input_data_shaped || values_shape_output || ops[i].data_dependent_shape())
            {
                data_shaped.extend(n.output.iter().map(String::as_str));
            }
            for (name, t) in n.output.iter().zip(outs) {
                shapes.insert(name.clone(), t.dims().to_vec());
                if fold {
                    consts.insert(name.clone(), t);
                } else {
                    live.insert(name.clone(), t);
                }
            }
            if fold {
                folded.insert(i);
            }
            live.retain(|k, _| {
                last_use.get(k.as_str()).is_some_and(|&p| p > pos) || outputs.contains(k)
            });
        }
        Ok(Self { folded, shapes })
    }
}

/// 2 × multiply-adds of the heavy operators, from the resolved shapes.
fn count_flops(
    nodes: &[NodeProto],
    shapes: &HashMap<String, Vec<usize>>,
    consts: &HashMap<String, Tensor>,
) -> u64 {
    let dims = |name: &str| {
        shapes
            .get(name)
            .cloned()
            .or_else(|| consts.get(name).map(|t| t.dims().to_vec()))
    };
    let mut total = 0u64;
    for n in nodes {
        let out = n.output.first().and_then(|o| dims(o));
        let (Some(out), Some(w)) = (out, n.input.get(1).and_then(|w| dims(w))) else {
            continue;
        };
        let out_elems: u64 = out.iter().map(|&d| d as u64).product();
        total += match n.op_type.as_str() {
            "Conv" if w.len() == 4 => 2 * out_elems * (w[1] * w[2] * w[3]) as u64,
            "ConvTranspose" if w.len() == 4 => {
                let x = n.input.first().and_then(|x| dims(x)).unwrap_or_default();
                2 * x.iter().map(|&d| d as u64).product::<u64>() * (w[1] * w[2] * w[3]) as u64
            }
            "MatMul" | "Gemm" => {
                let a = n.input.first().and_then(|x| dims(x)).unwrap_or_default();
                let k = if n.op_type == "Gemm"
                    && n.attribute.iter().any(|a| a.name == "transA" && a.i != 0)
                {
                    a.first().copied().unwrap_or(0)
                } else {
                    a.last().copied().unwrap_or(0)
                };
                2 * out_elems * k as u64
            }
            _ => 0,
        };
    }
    total
}

/// Number the tensors the steps touch, preload the constants they read, and compute when each
/// slot is last read.
fn assemble(
    steps: Vec<PStep>,
    consts: &HashMap<String, Tensor>,
    input_name: &str,
    input_shape: Vec<usize>,
    outputs: &[String],
) -> Result<Program, OnnxError> {
    let mut slot_of: HashMap<String, usize> = HashMap::new();
    let mut next = 0usize;
    let mut slot = |name: &str, slot_of: &mut HashMap<String, usize>| -> usize {
        *slot_of.entry(name.to_string()).or_insert_with(|| {
            next += 1;
            next - 1
        })
    };
    let input_slot = slot(input_name, &mut slot_of);
    let mut built = Vec::with_capacity(steps.len());
    let mut const_slots = Vec::new();
    for st in steps {
        let mut inputs = Vec::with_capacity(st.inputs.len());
        for inp in &st.inputs {
            if inp.is_empty() {
                inputs.push(None);
                continue;
            }
            let fresh = !slot_of.contains_key(inp);
            let s = slot(inp, &mut slot_of);
            if fresh && let Some(c) = consts.get(inp) {
                const_slots.push((s, c.clone()));
            }
            inputs.push(Some(s));
        }
        let outputs_slots = st.outputs.iter().map(|o| slot(o, &mut slot_of)).collect();
        built.push(Step {
            name: st.name,
            op_type: st.label,
            op: st.op,
            inputs,
            outputs: outputs_slots,
            free: Vec::new(),
        });
    }
    let mut out_slots = Vec::with_capacity(outputs.len());
    for o in outputs {
        let fresh = !slot_of.contains_key(o);
        let s = slot(o, &mut slot_of);
        if fresh {
            let c = consts.get(o).ok_or_else(|| {
                OnnxError::Graph(format!("output `{o}` is not produced by any node"))
            })?;
            const_slots.push((s, c.clone()));
        }
        out_slots.push(s);
    }
    mark_frees(&mut built, &out_slots, input_slot);
    Ok(Program {
        steps: built,
        slots: next,
        consts: const_slots,
        input_slot,
        input_shape,
        outputs: out_slots,
    })
}

/// Each activation slot is dropped after its last reader (constants and outputs are kept).
fn mark_frees(steps: &mut [Step], outputs: &[usize], input_slot: usize) {
    let mut last: HashMap<usize, usize> = HashMap::new();
    let mut produced: HashSet<usize> = HashSet::from([input_slot]);
    for (i, s) in steps.iter().enumerate() {
        for inp in s.inputs.iter().flatten() {
            last.insert(*inp, i);
        }
        produced.extend(s.outputs.iter().copied());
    }
    for (slot, i) in last {
        if produced.contains(&slot) && !outputs.contains(&slot) {
            steps[i].free.push(slot);
        }
    }
}
