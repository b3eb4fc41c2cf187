//! Control flow. `If`: two subgraphs, one run per frame as the condition says. Exporters emit it
//! for checks the model makes on its own data (torchvision's `batched_nms` skips NMS when no box
//! is left). `Loop`: one subgraph run once per iteration, as many times as the model's data says
//! (torchvision's Mask R-CNN pastes each detection's mask into the image in one).
//!
//! A subgraph reads tensors of the enclosing graph by name. The planner schedules by explicit
//! inputs only, so [`with_implicit_inputs`] appends every outer name a subgraph reads to its
//! node's inputs: ordering, slot lifetimes and constant folding then hold as for any operator,
//! and the subgraph finds those values by position.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Device, Result, Tensor};
use candle_onnx::onnx::GraphProto;

use super::{Op, ParseError};
use crate::detect::onnx::proto::{self, NodeProto};

/// One subgraph: its operators in file order (ONNX requires subgraphs sorted), its constants and
/// the names of its formal inputs (a `Loop` body's) and outputs.
#[derive(Debug, Clone)]
pub struct Branch {
    nodes: Vec<(Op, Vec<String>, Vec<String>)>,
    consts: HashMap<String, Tensor>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct IfOp {
    then_branch: Branch,
    else_branch: Branch,
    /// The outer tensors the branches read, in the order they follow the condition in the
    /// node's inputs.
    outer: Vec<String>,
}

/// Names a graph reads that it neither computes nor holds (its nested `If`s' included), in
/// first-use order.
fn implicit_inputs(g: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    defined.extend(g.input.iter().map(|i| i.name.as_str()));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for n in &g.node {
        let nested = branches(n).into_iter().flat_map(implicit_inputs);
        for name in n.input.iter().cloned().chain(nested) {
            if !name.is_empty() && !defined.contains(name.as_str()) && seen.insert(name.clone()) {
                out.push(name);
            }
        }
        defined.extend(n.output.iter().map(String::as_str));
    }
    out
}

/// The subgraphs of a node's graph attributes (`then_branch`, `else_branch`, …).
fn branches(n: &NodeProto) -> Vec<&GraphProto> {
    n.attribute.iter().filter_map(|a| a.g.as_ref()).collect()
}

/// The outer names an `If` node's branches read, deduplicated, in first-use order.
fn outer_names(n: &NodeProto) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for g in branches(n) {
        for name in implicit_inputs(g) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Whether `n` is a control-flow node whose subgraphs may read the enclosing graph.
fn has_subgraphs(n: &NodeProto) -> bool {
    matches!(n.op_type.as_str(), "If" | "Loop")
}

/// `nodes` with each `If` and `Loop` node's implicit inputs appended to its explicit ones.
pub fn with_implicit_inputs(nodes: &[NodeProto]) -> Vec<NodeProto> {
    nodes
        .iter()
        .map(|n| {
            let mut n = n.clone();
            if has_subgraphs(&n) {
                let extra = outer_names(&n);
                n.input.extend(extra);
            }
            n
        })
        .collect()
}

impl Branch {
    fn parse(g: &GraphProto, opset: i64, device: &Device) -> std::result::Result<Self, ParseError> {
        let mut consts = HashMap::new();
        for t in &g.initializer {
            let v = proto::tensor(t, device).map_err(|e| ParseError::Bad(e.to_string()))?;
            consts.insert(t.name.clone(), v);
        }
        let nodes = with_implicit_inputs(&g.node)
            .into_iter()
            .map(|n| {
                let op = Op::parse(&n, opset, device).map_err(|e| match e {
                    ParseError::Unsupported => ParseError::Bad(format!(
                        "its branch uses `{}`, which vigil does not run",
                        n.op_type
                    )),
                    other => other,
                })?;
                Ok((op, n.input, n.output))
            })
            .collect::<std::result::Result<_, ParseError>>()?;
        Ok(Self {
            nodes,
            consts,
            inputs: g.input.iter().map(|i| i.name.clone()).collect(),
            outputs: g.output.iter().map(|o| o.name.clone()).collect(),
        })
    }

    fn run(&self, mut values: HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
        for (op, inputs, outputs) in &self.nodes {
            let args: Vec<Option<Tensor>> = inputs
                .iter()
                .map(|i| values.get(i).or(self.consts.get(i)).cloned())
                .collect();
            for (name, t) in outputs.iter().zip(op.eval(&args)?) {
                values.insert(name.clone(), t);
            }
        }
        self.outputs
            .iter()
            .map(|o| {
                values
                    .get(o)
                    .or(self.consts.get(o))
                    .cloned()
                    .ok_or_else(|| {
                        candle_core::Error::Msg(format!("branch output `{o}` was not computed"))
                    })
            })
            .collect()
    }
}

impl IfOp {
    pub fn parse(
        node: &NodeProto,
        opset: i64,
        device: &Device,
    ) -> std::result::Result<Self, ParseError> {
        let graph = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.g.as_ref())
                .ok_or_else(|| ParseError::Bad(format!("`If` without `{name}`")))
        };
        let (then_g, else_g) = (graph("then_branch")?, graph("else_branch")?);
        let then_branch = Branch::parse(then_g, opset, device)?;
        let else_branch = Branch::parse(else_g, opset, device)?;
        if then_branch.outputs.len() != else_branch.outputs.len() {
            return Err(ParseError::Bad(
                "`If` branches with different output counts".into(),
            ));
        }
        // the order `with_implicit_inputs` appended them after the condition
        let outer = outer_names(node);
        Ok(Self {
            then_branch,
            else_branch,
            outer,
        })
    }

    pub fn outputs(&self) -> usize {
        self.then_branch.outputs.len()
    }

    pub fn eval(&self, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
        let cond = super::req(inputs, 0)?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let [c] = cond[..] else {
            return Err(candle_core::Error::Msg(format!(
                "`If` condition of {} elements",
                cond.len()
            )));
        };
        let values: HashMap<String, Tensor> = self
            .outer
            .iter()
            .zip(inputs.iter().skip(1))
            .filter_map(|(name, t)| Some((name.clone(), t.clone()?)))
            .collect();
        if c != 0.0 {
            self.then_branch.run(values)
        } else {
            self.else_branch.run(values)
        }
    }
}

/// `Loop`: `body(iteration, cond, v…) → (cond, v…, scan…)` run while the iteration is below
/// the trip count `M` (when given) and the condition holds (when given). Outputs: the carried
/// values after the last iteration, then each scan output's values stacked on a new first axis.
#[derive(Debug, Clone)]
pub struct LoopOp {
    body: Branch,
    /// Loop-carried values (`v_initial` inputs after `M` and `cond`).
    carried: usize,
    /// The outer tensors the body reads, in the order they follow the carried values in the
    /// node's inputs.
    outer: Vec<String>,
}

/// No exported model loops longer than this; a corrupt trip count must not spin forever.
const MAX_ITERATIONS: i64 = 1 << 20;

impl LoopOp {
    pub fn parse(
        node: &NodeProto,
        opset: i64,
        device: &Device,
    ) -> std::result::Result<Self, ParseError> {
        let g = node
            .attribute
            .iter()
            .find(|a| a.name == "body")
            .and_then(|a| a.g.as_ref())
            .ok_or_else(|| ParseError::Bad("`Loop` without `body`".into()))?;
        let body = Branch::parse(g, opset, device)?;
        let carried = body.inputs.len().checked_sub(2).ok_or_else(|| {
            ParseError::Bad("`Loop` body without its iteration and condition inputs".into())
        })?;
        if body.outputs.len() < 1 + carried {
            return Err(ParseError::Bad(format!(
                "`Loop` body gives {} outputs for {carried} carried values",
                body.outputs.len()
            )));
        }
        Ok(Self {
            body,
            carried,
            outer: outer_names(node),
        })
    }

    pub fn eval(&self, inputs: &[Option<Tensor>]) -> Result<Vec<Tensor>> {
        let scalar = |t: &Tensor| -> Result<f64> {
            let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            v.first().copied().ok_or_else(|| {
                candle_core::Error::Msg("`Loop`: empty trip count or condition".into())
            })
        };
        let trips = match inputs.first().and_then(Option::as_ref) {
            Some(m) => scalar(m)? as i64,
            None => MAX_ITERATIONS,
        };
        if trips > MAX_ITERATIONS {
            candle_core::bail!("`Loop` of {trips} iterations (more than {MAX_ITERATIONS})");
        }
        let mut cond = match inputs.get(1).and_then(Option::as_ref) {
            Some(c) => scalar(c)? != 0.0,
            None => true,
        };
        let mut carried: Vec<Tensor> = (0..self.carried)
            .map(|k| super::req(inputs, 2 + k).cloned())
            .collect::<Result<_>>()?;
        let outer: Vec<(String, Tensor)> = self
            .outer
            .iter()
            .zip(inputs.iter().skip(2 + self.carried))
            .filter_map(|(name, t)| Some((name.clone(), t.clone()?)))
            .collect();
        let device = carried
            .first()
            .map(|t| t.device().clone())
            .unwrap_or(Device::Cpu);
        let mut scans: Vec<Vec<Tensor>> = Vec::new();
        let mut i = 0i64;
        while i < trips && cond {
            let mut values: HashMap<String, Tensor> = outer.iter().cloned().collect();
            let formal = [
                Tensor::new(i, &device)?,
                Tensor::new(u8::from(cond), &device)?,
            ];
            for (name, t) in self
                .body
                .inputs
                .iter()
                .zip(formal.into_iter().chain(carried))
            {
                values.insert(name.clone(), t);
            }
            let mut out = self.body.run(values)?.into_iter();
            cond = out.next().map(|c| scalar(&c)).transpose()?.unwrap_or(0.0) != 0.0;
            carried = out.by_ref().take(self.carried).collect();
            let scan: Vec<Tensor> = out.collect();
            scans.resize_with(scan.len(), Vec::new);
            for (all, t) in scans.iter_mut().zip(scan) {
                all.push(t);
            }
            i += 1;
        }
        let scan_count = self.body.outputs.len() - 1 - self.carried;
        let mut result = carried;
        for k in 0..scan_count {
            result.push(match scans.get(k) {
                Some(ts) if !ts.is_empty() => Tensor::stack(ts, 0)?,
                _ => Tensor::zeros(0, DType::F32, &device)?,
            });
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_onnx::onnx::{AttributeProto, ValueInfoProto};

    fn node(op: &str, input: &[&str], output: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            output: output.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn branch(name: &str, nodes: Vec<NodeProto>, out: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            g: Some(GraphProto {
                node: nodes,
                output: vec![ValueInfoProto {
                    name: out.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `If(c)`: then `x + x`, else `-x`; the branches read `x` from the enclosing graph.
    fn if_node() -> NodeProto {
        let mut n = node("If", &["c"], &["y"]);
        n.attribute = vec![
            branch("then_branch", vec![node("Add", &["x", "x"], &["t"])], "t"),
            branch("else_branch", vec![node("Neg", &["x"], &["e"])], "e"),
        ];
        n
    }

    #[test]
    fn branches_read_outer_tensors_through_appended_inputs() {
        let n = if_node();
        let planned = with_implicit_inputs(std::slice::from_ref(&n));
        assert_eq!(planned[0].input, vec!["c", "x"]);
        let op = IfOp::parse(&planned[0], 17, &Device::Cpu).unwrap();
        let x = Tensor::new(&[1f32, -2.0], &Device::Cpu).unwrap();
        for (c, want) in [(1u8, [2f32, -4.0]), (0, [-1.0, 2.0])] {
            let cond = Tensor::new(&[c], &Device::Cpu).unwrap();
            let out = op.eval(&[Some(cond), Some(x.clone())]).unwrap();
            assert_eq!(out[0].to_vec1::<f32>().unwrap(), want);
        }
    }

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            ..Default::default()
        }
    }

    /// `n` with the integer attribute `name = i`.
    fn with_int(mut n: NodeProto, name: &str, i: i64) -> NodeProto {
        n.attribute.push(AttributeProto {
            name: name.into(),
            i,
            r#type: proto::at::INT,
            ..Default::default()
        });
        n
    }

    /// `Loop(M, "", acc)`: each iteration appends `x · i` to `acc` (a carried value that grows,
    /// as torchvision's mask paste does) and scans out `i`; `x` comes from the enclosing graph.
    fn loop_node() -> NodeProto {
        let mut n = node("Loop", &["m", "", "acc0"], &["acc", "scan"]);
        let body = GraphProto {
            node: vec![
                with_int(
                    node("Cast", &["i"], &["fi"]),
                    "to",
                    i64::from(proto::dt::FLOAT),
                ),
                node("Mul", &["x", "fi"], &["xi"]),
                with_int(node("Concat", &["acc_in", "xi"], &["acc_out"]), "axis", 0),
                node("Identity", &["c_in"], &["c_out"]),
                node("Identity", &["i"], &["i_out"]),
            ],
            input: vec![value("i"), value("c_in"), value("acc_in")],
            output: vec![value("c_out"), value("acc_out"), value("i_out")],
            ..Default::default()
        };
        n.attribute = vec![AttributeProto {
            name: "body".into(),
            g: Some(body),
            ..Default::default()
        }];
        n
    }

    #[test]
    fn a_loop_carries_growing_values_and_stacks_its_scan_outputs() {
        let planned = with_implicit_inputs(std::slice::from_ref(&loop_node()));
        assert_eq!(planned[0].input, vec!["m", "", "acc0", "x"]);
        let op = LoopOp::parse(&planned[0], 17, &Device::Cpu).unwrap();
        let dev = Device::Cpu;
        let x = Tensor::new(&[1f32, 10.0], &dev).unwrap();
        let acc0 = Tensor::zeros(0, DType::F32, &dev).unwrap();
        let m = Tensor::new(3i64, &dev).unwrap();
        let out = op.eval(&[Some(m), None, Some(acc0), Some(x)]).unwrap();
        assert_eq!(
            out[0].to_vec1::<f32>().unwrap(),
            [0.0, 0.0, 1.0, 10.0, 2.0, 20.0]
        );
        assert_eq!(out[1].to_vec1::<i64>().unwrap(), [0, 1, 2]);
    }

    #[test]
    fn an_unknown_operator_inside_a_branch_is_a_clear_error() {
        let mut n = if_node();
        n.attribute[1] = branch("else_branch", vec![node("Frobnicate", &["x"], &["e"])], "e");
        let err = IfOp::parse(&n, 17, &Device::Cpu).unwrap_err();
        assert!(
            matches!(err, ParseError::Bad(ref m) if m.contains("Frobnicate")),
            "{err:?}"
        );
    }
}
