//! Conv binding and fusion over the planned steps: constant weights are bound (and packed for
//! the fast convolution), a following BatchNormalization is folded into them, and a following
//! activation — ReLU, LeakyReLU, Sigmoid, HardSwish, or SiLU exported as `Sigmoid(y)·y` — runs
//! in the convolution's output pass instead of as separate steps.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::super::conv::Fused;
use super::ops::{Binary, Op, Unary};

/// A step before slot assignment: tensor names, which fusion rewrites.
#[derive(Debug)]
pub struct PStep {
    pub name: String,
    /// Operator (and fused activation) for profiles.
    pub label: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

type FuseError = (String, candle_core::Error);

pub fn bind_and_fuse(
    steps: &mut Vec<PStep>,
    consts: &HashMap<String, Tensor>,
    outputs: &[String],
    device: &Device,
) -> Result<(), FuseError> {
    for st in steps.iter_mut() {
        bind(st, consts, device).map_err(|e| (st.name.clone(), e))?;
    }
    let mut removed = vec![false; steps.len()];
    for c in 0..steps.len() {
        if removed[c] || !matches!(&steps[c].op, Op::Conv(conv) if conv.bound.is_some()) {
            continue;
        }
        loop {
            let readers = readers_of(steps, &removed, &steps[c].outputs[0]);
            let fused = fuse_batch_norm(steps, c, &readers, consts, outputs, device)
                .map_err(|e| (steps[c].name.clone(), e))?
                .or_else(|| fuse_activation(steps, c, &readers, outputs));
            match fused {
                Some(gone) => gone.into_iter().for_each(|g| removed[g] = true),
                None => break,
            }
        }
    }
    let mut i = 0;
    steps.retain(|_| {
        i += 1;
        !removed[i - 1]
    });
    Ok(())
}

/// Bind a Conv's constant weight and bias; the step then reads only its input.
fn bind(
    st: &mut PStep,
    consts: &HashMap<String, Tensor>,
    device: &Device,
) -> candle_core::Result<()> {
    let Op::Conv(conv) = &mut st.op else {
        return Ok(());
    };
    let Some(w) = st.inputs.get(1).and_then(|w| consts.get(w)) else {
        return Ok(());
    };
    let b = match st.inputs.get(2).filter(|b| !b.is_empty()) {
        Some(b) => match consts.get(b) {
            Some(t) => Some(t.clone()),
            None => return Ok(()),
        },
        None => None,
    };
    conv.bind(w.clone(), b, device)?;
    st.inputs.truncate(1);
    Ok(())
}

/// The live steps that read `name`.
fn readers_of(steps: &[PStep], removed: &[bool], name: &str) -> Vec<usize> {
    steps
        .iter()
        .enumerate()
        .filter(|(i, s)| !removed[*i] && s.inputs.iter().any(|x| x == name))
        .map(|(i, _)| i)
        .collect()
}

fn fuse_batch_norm(
    steps: &mut [PStep],
    c: usize,
    readers: &[usize],
    consts: &HashMap<String, Tensor>,
    outputs: &[String],
    device: &Device,
) -> candle_core::Result<Option<Vec<usize>>> {
    let y = steps[c].outputs[0].clone();
    let [bn] = readers else { return Ok(None) };
    let Op::BatchNorm { epsilon } = steps[*bn].op else {
        return Ok(None);
    };
    if outputs.contains(&y) || steps[*bn].inputs.first() != Some(&y) {
        return Ok(None);
    }
    let params: Option<Vec<&Tensor>> = steps[*bn].inputs[1..]
        .iter()
        .map(|n| consts.get(n))
        .collect();
    let Some(params) = params.filter(|p| p.len() == 4) else {
        return Ok(None);
    };
    let Op::Conv(conv) = &mut steps[c].op else {
        return Ok(None);
    };
    if conv.act != Fused::Linear {
        return Ok(None);
    }
    conv.fold_batch_norm(
        [params[0], params[1], params[2], params[3]],
        epsilon,
        device,
    )?;
    steps[c].outputs = vec![steps[*bn].outputs[0].clone()];
    steps[c].label.push_str("+BN");
    Ok(Some(vec![*bn]))
}

fn fuse_activation(
    steps: &mut [PStep],
    c: usize,
    readers: &[usize],
    outputs: &[String],
) -> Option<Vec<usize>> {
    let y = steps[c].outputs[0].clone();
    if outputs.contains(&y) || !matches!(&steps[c].op, Op::Conv(conv) if conv.act == Fused::Linear)
    {
        return None;
    }
    let (act, out, gone, label) = match readers {
        [u] => {
            let act = match steps[*u].op {
                Op::Unary(Unary::Relu) => Fused::Relu,
                Op::Unary(Unary::LeakyRelu(a)) => Fused::Leaky(a.to_bits()),
                Op::Unary(Unary::Sigmoid) => Fused::Logistic,
                Op::Unary(Unary::HardSwish) => Fused::HardSwish,
                _ => return None,
            };
            (
                act,
                steps[*u].outputs[0].clone(),
                vec![*u],
                steps[*u].label.clone(),
            )
        }
        [a, b] => {
            let (sig, mul) = if matches!(steps[*a].op, Op::Unary(Unary::Sigmoid)) {
                (*a, *b)
            } else {
                (*b, *a)
            };
            let s_out = &steps[sig].outputs[0];
            let silu = matches!(steps[sig].op, Op::Unary(Unary::Sigmoid))
                && matches!(steps[mul].op, Op::Binary(Binary::Mul))
                && !outputs.contains(s_out)
                && steps[mul].inputs.iter().any(|i| i == s_out)
                && steps[mul].inputs.contains(&y)
                && steps.iter().filter(|s| s.inputs.contains(s_out)).count() == 1;
            if !silu {
                return None;
            }
            (
                Fused::Silu,
                steps[mul].outputs[0].clone(),
                vec![sig, mul],
                "SiLU".to_string(),
            )
        }
        _ => return None,
    };
    let Op::Conv(conv) = &mut steps[c].op else {
        return None;
    };
    conv.set_activation(act);
    steps[c].outputs = vec![out];
    steps[c].label = format!("{}+{label}", steps[c].label);
    Some(gone)
}
