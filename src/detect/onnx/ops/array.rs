//! Operators that move, select and reshape data (and the shape arithmetic exporters write).

use candle_core::{DType, Device, Result, Tensor};

use super::super::proto::{self, Attrs, NodeProto};
use super::{Op, ParseError, axis, ints, req};

pub fn parse(
    node: &NodeProto,
    opset: i64,
    a: &Attrs,
    device: &Device,
) -> std::result::Result<Op, ParseError> {
    let bad = |e: super::super::OnnxError| ParseError::Bad(e.to_string());
    Ok(match node.op_type.as_str() {
        "Where" => Op::Where,
        "Clip" => Op::Clip {
            min: (opset < 11)
                .then(|| a.float_or("min", f32::NEG_INFINITY))
                .transpose()?,
            max: (opset < 11)
                .then(|| a.float_or("max", f32::INFINITY))
                .transpose()?,
        },
        "Cast" => {
            let code = a.int("to")?.ok_or("Cast without `to`")? as i32;
            let to = proto::compute_dtype(code)
                .ok_or_else(|| format!("Cast to {} is not supported", proto::dtype_name(code)))?;
            Op::Cast {
                to,
                to_bool: code == proto::dt::BOOL,
            }
        }
        "Constant" => Op::Constant(a.constant(device).map_err(bad)?),
        "ConstantOfShape" => Op::ConstantOfShape(match a.tensor("value")? {
            Some(t) => proto::tensor(t, device)
                .map_err(bad)?
                .flatten_all()
                .map_err(|e| e.to_string())?,
            None => Tensor::new(&[0f32], device).map_err(|e| e.to_string())?,
        }),
        "Shape" => Op::Shape {
            start: a.int_or("start", 0)?,
            end: a.int("end")?,
        },
        "Size" => Op::Size,
        "Reshape" => Op::Reshape {
            allowzero: a.int_or("allowzero", 0)? != 0,
        },
        "Flatten" => Op::Flatten {
            axis: a.int_or("axis", 1)?,
        },
        "Squeeze" => Op::Squeeze {
            axes: a.ints("axes")?,
        },
        "Unsqueeze" => Op::Unsqueeze {
            axes: a.ints("axes")?,
        },
        "Transpose" => Op::Transpose {
            perm: a
                .ints("perm")?
                .map(|p| p.into_iter().map(|v| v as usize).collect()),
        },
        "Concat" => Op::Concat {
            axis: a.int("axis")?.ok_or("Concat without `axis`")?,
        },
        "Split" => Op::Split {
            axis: a.int_or("axis", 0)?,
            split: a.ints("split")?,
            outputs: node.output.len(),
        },
        "Slice" if opset < 10 => Op::SliceAttrs {
            starts: a.ints("starts")?.ok_or("Slice without `starts`")?,
            ends: a.ints("ends")?.ok_or("Slice without `ends`")?,
            axes: a.ints("axes")?,
        },
        "Slice" => Op::Slice,
        _ => return parse_indexing(node, a),
    })
}

/// Gathering, scattering and generating operators.
fn parse_indexing(node: &NodeProto, a: &Attrs) -> std::result::Result<Op, ParseError> {
    Ok(match node.op_type.as_str() {
        "Gather" => Op::Gather {
            axis: a.int_or("axis", 0)?,
        },
        "GatherElements" => Op::GatherElements {
            axis: a.int_or("axis", 0)?,
        },
        "GatherND" if a.int_or("batch_dims", 0)? != 0 => {
            return Err("GatherND with batch_dims is not supported".into());
        }
        "GatherND" => Op::GatherNd,
        "ScatterND" if a.string_or("reduction", "none")? != "none" => {
            return Err("ScatterND with a reduction is not supported".into());
        }
        "ScatterND" => Op::ScatterNd,
        "NonZero" => Op::NonZero,
        "Expand" => Op::Expand,
        "Tile" => Op::Tile,
        "Range" => Op::Range,
        _ => return Err(ParseError::Unsupported),
    })
}

/// `None` when `op` is not one of this module's.
pub fn eval(op: &Op, inputs: &[Option<Tensor>]) -> Option<Result<Vec<Tensor>>> {
    let r = match op {
        Op::Constant(t) => Ok(t.clone()),
        Op::ConstantOfShape(v) => constant_of_shape(v, req_ok(inputs)),
        Op::Shape { start, end } => shape_of(inputs, *start, *end),
        Op::Size => req(inputs, 0).and_then(|x| Tensor::new(x.elem_count() as i64, x.device())),
        Op::Reshape { allowzero } => reshape(inputs, *allowzero),
        Op::Flatten { axis: a } => flatten(inputs, *a),
        Op::Squeeze { axes } => squeeze(inputs, axes.as_deref()),
        Op::Unsqueeze { axes } => unsqueeze(inputs, axes.as_deref()),
        Op::Transpose { perm } => transpose(inputs, perm.as_deref()),
        Op::Concat { axis: a } => concat(inputs, *a),
        Op::Split {
            axis: a,
            split,
            outputs,
        } => return Some(split_op(inputs, *a, split.as_deref(), *outputs)),
        Op::Slice => slice(inputs),
        Op::SliceAttrs { starts, ends, axes } => {
            req(inputs, 0).and_then(|x| slice_with(x, starts, ends, axes.as_deref(), None))
        }
        Op::Gather { axis: a } => gather(inputs, *a),
        Op::GatherElements { axis: a } => gather_elements(inputs, *a),
        Op::GatherNd => gather_nd(inputs),
        Op::ScatterNd => scatter_nd(inputs),
        Op::NonZero => non_zero(inputs),
        Op::Expand => expand(inputs),
        Op::Tile => tile(inputs),
        Op::Range => range(inputs),
        _ => return None,
    };
    Some(r.map(|t| vec![t]))
}

fn req_ok(inputs: &[Option<Tensor>]) -> Result<&Tensor> {
    req(inputs, 0)
}

fn constant_of_shape(value: &Tensor, shape: Result<&Tensor>) -> Result<Tensor> {
    let dims = to_dims(&ints(shape?)?)?;
    value.reshape(())?.broadcast_as(dims)?.contiguous()
}

/// Refuse an output shape over the element bound before anything is allocated for it.
pub fn bounded(dims: &[usize]) -> Result<()> {
    let v: Vec<i64> = dims
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect();
    proto::element_count("output", &v).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    Ok(())
}

/// Dims from i64 values, refusing negatives and sizes over the element bound.
pub fn to_dims(v: &[i64]) -> Result<Vec<usize>> {
    proto::element_count("shape", v).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    Ok(v.iter().map(|&d| d as usize).collect())
}

fn shape_of(inputs: &[Option<Tensor>], start: i64, end: Option<i64>) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let dims: Vec<i64> = x.dims().iter().map(|&d| d as i64).collect();
    let r = dims.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clampi(start), clampi(end.unwrap_or(r)));
    let v = dims[s..e.max(s)].to_vec();
    Tensor::new(v, x.device())
}

fn reshape(inputs: &[Option<Tensor>], allowzero: bool) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let spec = ints(req(inputs, 1)?)?;
    let mut dims = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            0 if !allowzero => dims.push(*x.dims().get(i).ok_or_else(|| {
                candle_core::Error::Msg(format!("Reshape: 0 at {i} copies a dim the input lacks"))
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            d if d < 0 => candle_core::bail!("Reshape: bad target {spec:?}"),
            d => dims.push(d as usize),
        }
    }
    if let Some(i) = infer {
        let known: usize = dims.iter().product();
        if known == 0 || x.elem_count() % known != 0 {
            candle_core::bail!("Reshape: cannot reshape {:?} into {spec:?}", x.dims());
        }
        dims[i] = x.elem_count() / known;
    }
    if dims.iter().product::<usize>() != x.elem_count() {
        candle_core::bail!(
            "Reshape: cannot reshape {:?} ({} elements) into {spec:?}",
            x.dims(),
            x.elem_count()
        );
    }
    x.reshape(dims)
}

fn flatten(inputs: &[Option<Tensor>], a: i64) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let r = x.rank() as i64;
    let a = if a < 0 { a + r } else { a }.clamp(0, r) as usize;
    let outer: usize = x.dims()[..a].iter().product();
    x.reshape((outer, x.elem_count() / outer.max(1)))
}

/// Axes from the attribute (opset < 13) or input 1.
fn axes_of(inputs: &[Option<Tensor>], attr: Option<&[i64]>) -> Result<Option<Vec<i64>>> {
    if let Some(a) = attr {
        return Ok(Some(a.to_vec()));
    }
    inputs.get(1).and_then(Option::as_ref).map(ints).transpose()
}

fn squeeze(inputs: &[Option<Tensor>], attr: Option<&[i64]>) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let axes = match axes_of(inputs, attr)? {
        Some(a) => a
            .iter()
            .map(|&v| axis(v, x.rank()))
            .collect::<Result<Vec<_>>>()?,
        None => (0..x.rank()).filter(|&i| x.dims()[i] == 1).collect(),
    };
    let dims: Vec<usize> = x
        .dims()
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| *d)
        .collect();
    for &i in &axes {
        if x.dims()[i] != 1 {
            candle_core::bail!("Squeeze: axis {i} of {:?} is not 1", x.dims());
        }
    }
    x.reshape(dims)
}

fn unsqueeze(inputs: &[Option<Tensor>], attr: Option<&[i64]>) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let axes = axes_of(inputs, attr)?
        .ok_or_else(|| candle_core::Error::Msg("Unsqueeze without axes".into()))?;
    let out_rank = x.rank() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&v| axis(v, out_rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    let mut dims = x.dims().to_vec();
    for a in axes {
        dims.insert(a.min(dims.len()), 1);
    }
    x.reshape(dims)
}

fn transpose(inputs: &[Option<Tensor>], perm: Option<&[usize]>) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..x.rank()).rev().collect(),
    };
    if perm.len() != x.rank() {
        candle_core::bail!("Transpose: perm {perm:?} for rank {}", x.rank());
    }
    x.permute(perm)?.contiguous()
}

fn concat(inputs: &[Option<Tensor>], a: i64) -> Result<Tensor> {
    let all: Vec<&Tensor> = inputs.iter().flatten().collect();
    let first = *all
        .first()
        .ok_or_else(|| candle_core::Error::Msg("Concat of nothing".into()))?;
    let ax = axis(a, first.rank())?;
    // Zero-length parts (empty shape tensors) are legal in ONNX; Candle refuses some.
    let parts: Vec<&Tensor> = all.iter().copied().filter(|t| t.elem_count() > 0).collect();
    if parts.is_empty() {
        // All empty: still the concatenated shape (a frame with no candidates in an end-to-end
        // NMS graph concatenates [0, 2] and [0, 2] into [0, 4]).
        let mut dims = first.dims().to_vec();
        dims[ax] = all
            .iter()
            .map(|t| t.dims().get(ax).copied().unwrap_or(0))
            .sum();
        return Tensor::zeros(dims, first.dtype(), first.device());
    }
    Tensor::cat(&parts, ax)
}

fn split_op(
    inputs: &[Option<Tensor>],
    a: i64,
    attr: Option<&[i64]>,
    outputs: usize,
) -> Result<Vec<Tensor>> {
    let x = req(inputs, 0)?;
    let ax = axis(a, x.rank())?;
    let total = x.dims()[ax];
    let sizes: Vec<usize> = match axes_of(inputs, attr)? {
        Some(s) if !s.is_empty() => s.iter().map(|&v| v.max(0) as usize).collect(),
        _ => {
            // Equal parts; with opset 18's num_outputs the last may be smaller.
            let n = outputs.max(1);
            let each = total.div_ceil(n);
            (0..n)
                .map(|i| each.min(total.saturating_sub(i * each)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != total {
        candle_core::bail!("Split: sizes {sizes:?} do not add up to {total}");
    }
    let mut out = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for s in sizes {
        out.push(x.narrow(ax, start, s)?.contiguous()?);
        start += s;
    }
    Ok(out)
}

fn slice(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let starts = ints(req(inputs, 1)?)?;
    let ends = ints(req(inputs, 2)?)?;
    let axes = inputs
        .get(3)
        .and_then(Option::as_ref)
        .map(ints)
        .transpose()?;
    let steps = inputs
        .get(4)
        .and_then(Option::as_ref)
        .map(ints)
        .transpose()?;
    slice_with(x, &starts, &ends, axes.as_deref(), steps.as_deref())
}

/// ONNX slicing: clamped starts/ends, negative indices and steps.
fn slice_with(
    x: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Tensor> {
    let n = starts.len();
    if ends.len() != n || axes.is_some_and(|a| a.len() != n) || steps.is_some_and(|s| s.len() != n)
    {
        candle_core::bail!("Slice: starts, ends, axes and steps differ in length");
    }
    let mut t = x.clone();
    for (i, (&s, &e)) in starts.iter().zip(ends).enumerate() {
        let ax = axis(axes.map_or(i as i64, |a| a[i]), x.rank())?;
        let step = steps.map_or(1, |s| s[i]);
        if step == 0 {
            candle_core::bail!("Slice: step 0");
        }
        let dim = x.dims()[ax] as i64;
        let norm = |v: i64| if v < 0 { v + dim } else { v };
        let (s, e) = (norm(s), norm(e));
        let idx: Vec<i64> = if step > 0 {
            let (s, e) = (s.clamp(0, dim), e.clamp(0, dim));
            if step == 1 {
                t = t.narrow(ax, s as usize, (e - s).max(0) as usize)?;
                continue;
            }
            (s..e).step_by(step as usize).collect()
        } else {
            if dim == 0 {
                continue;
            }
            let (s, e) = (s.clamp(0, dim - 1), e.clamp(-1, dim - 1));
            let mut v = Vec::new();
            let mut k = s;
            while k > e {
                v.push(k);
                k += step;
            }
            v
        };
        let idx = Tensor::new(idx, x.device())?;
        t = t.contiguous()?.index_select(&idx, ax)?;
    }
    t.contiguous()
}

fn gather(inputs: &[Option<Tensor>], a: i64) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let idx = req(inputs, 1)?;
    let ax = axis(a, x.rank())?;
    let dim = x.dims()[ax] as i64;
    let flat: Vec<i64> = ints(idx)?
        .into_iter()
        .map(|v| if v < 0 { v + dim } else { v })
        .collect();
    if let Some(bad) = flat.iter().find(|&&v| v < 0 || v >= dim) {
        candle_core::bail!("Gather: index {bad} out of range for {dim}");
    }
    let picked = x
        .contiguous()?
        .index_select(&Tensor::new(flat, x.device())?, ax)?;
    let mut dims = x.dims()[..ax].to_vec();
    dims.extend_from_slice(idx.dims());
    dims.extend_from_slice(&x.dims()[ax + 1..]);
    picked.reshape(dims)
}

fn gather_elements(inputs: &[Option<Tensor>], a: i64) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let idx = req(inputs, 1)?;
    let ax = axis(a, x.rank())?;
    let dim = x.dims()[ax] as i64;
    let fixed: Vec<i64> = ints(idx)?
        .into_iter()
        .map(|v| if v < 0 { v + dim } else { v })
        .collect();
    if fixed.iter().any(|&v| v < 0 || v >= dim) {
        candle_core::bail!("GatherElements: index out of range for {dim}");
    }
    // Candle's gather wants the source's other dims to match the indices': narrow them first.
    let mut src = x.clone();
    for (d, (&n, &m)) in idx.dims().iter().zip(x.dims()).enumerate() {
        if d != ax && n < m {
            src = src.narrow(d, 0, n)?;
        }
    }
    let idx = Tensor::from_vec(fixed, idx.dims(), x.device())?;
    src.contiguous()?.gather(&idx, ax)
}

fn expand(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let want = to_dims(&ints(req(inputs, 1)?)?)?;
    let shape = x
        .shape()
        .broadcast_shape_binary_op(&candle_core::Shape::from(want), "Expand")?;
    bounded(shape.dims())?;
    x.broadcast_as(shape)?.contiguous()
}

fn tile(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let reps = to_dims(&ints(req(inputs, 1)?)?)?;
    if reps.len() != x.rank() {
        candle_core::bail!("Tile: {} repeats for rank {}", reps.len(), x.rank());
    }
    bounded(
        &x.dims()
            .iter()
            .zip(&reps)
            .map(|(d, r)| d * r)
            .collect::<Vec<_>>(),
    )?;
    x.repeat(reps)
}

fn range(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let start = req(inputs, 0)?;
    let dev = start.device();
    if start.dtype() == DType::F32 {
        let v = |i| super::floats(req(inputs, i)?).map(|v| v[0]);
        let (s, l, d) = (v(0)?, v(1)?, v(2)?);
        let n = ((l - s) / d).ceil();
        if !n.is_finite() {
            candle_core::bail!("Range: start {s}, limit {l}, delta {d} give no finite length");
        }
        let n = to_dims(&[n.max(0.0) as i64])?[0];
        return Tensor::new((0..n).map(|i| s + i as f32 * d).collect::<Vec<_>>(), dev);
    }
    let v = |i| ints(req(inputs, i)?).map(|v| v[0]);
    let (s, l, d) = (v(0)?, v(1)?, v(2)?);
    if d == 0 {
        candle_core::bail!("Range: delta 0");
    }
    let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as i64;
    to_dims(&[n])?;
    Tensor::new((0..n).map(|i| s + i * d).collect::<Vec<_>>(), dev)?.to_dtype(start.dtype())
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The flat offsets the last axis of `indices` (each a `k`-tuple into `dims`) points at.
fn nd_offsets(indices: &[i64], k: usize, dims: &[usize]) -> Result<Vec<usize>> {
    let st = strides(dims);
    indices
        .chunks_exact(k.max(1))
        .map(|ix| {
            ix.iter().enumerate().try_fold(0usize, |acc, (d, &v)| {
                let n = dims[d] as i64;
                let v = if v < 0 { v + n } else { v };
                if v < 0 || v >= n {
                    candle_core::bail!("index {v} out of range for dim {d} of {dims:?}");
                }
                Ok(acc + v as usize * st[d])
            })
        })
        .collect()
}

/// `GatherND` (batch_dims 0): slices of `data` picked by the index tuples on `indices`' last axis.
fn gather_nd(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let data = req(inputs, 0)?;
    let idx = req(inputs, 1)?;
    if idx.rank() == 0 {
        candle_core::bail!("GatherND: indices must have rank ≥ 1");
    }
    let k = *idx.dims().last().unwrap_or(&0);
    if k > data.rank() {
        candle_core::bail!("GatherND: index tuples of {k} into rank {}", data.rank());
    }
    let slice: usize = data.dims()[k..].iter().product();
    let offsets = nd_offsets(&ints(idx)?, k, &data.dims()[..k])?;
    let flat = data.flatten_all()?;
    let picks: Vec<i64> = offsets
        .iter()
        .flat_map(|&o| (o * slice..(o + 1) * slice).map(|v| v as i64))
        .collect();
    let mut dims = idx.dims()[..idx.rank() - 1].to_vec();
    dims.extend_from_slice(&data.dims()[k..]);
    flat.index_select(&Tensor::new(picks, data.device())?, 0)?
        .reshape(dims)
}

/// `ScatterND` (no reduction): a copy of `data` with the indexed slices replaced by `updates`.
fn scatter_nd(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let data = req(inputs, 0)?;
    let idx = req(inputs, 1)?;
    let updates = req(inputs, 2)?;
    if idx.rank() == 0 {
        candle_core::bail!("ScatterND: indices must have rank ≥ 1");
    }
    let k = *idx.dims().last().unwrap_or(&0);
    if k > data.rank() {
        candle_core::bail!("ScatterND: index tuples of {k} into rank {}", data.rank());
    }
    let slice: usize = data.dims()[k..].iter().product();
    let offsets = nd_offsets(&ints(idx)?, k, &data.dims()[..k])?;
    if updates.elem_count() != offsets.len() * slice {
        candle_core::bail!(
            "ScatterND: {} updates for {} slices of {slice}",
            updates.elem_count(),
            offsets.len()
        );
    }
    let dtype = data.dtype();
    if dtype == DType::I64 {
        let mut v = ints(data)?;
        let u = ints(updates)?;
        for (i, &o) in offsets.iter().enumerate() {
            v[o * slice..(o + 1) * slice].copy_from_slice(&u[i * slice..(i + 1) * slice]);
        }
        return Tensor::from_vec(v, data.dims(), data.device());
    }
    let mut v = data.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let u = updates
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    for (i, &o) in offsets.iter().enumerate() {
        v[o * slice..(o + 1) * slice].copy_from_slice(&u[i * slice..(i + 1) * slice]);
    }
    Tensor::from_vec(v, data.dims(), data.device())?.to_dtype(dtype)
}

/// `NonZero`: `[rank, count]` indices of the non-zero elements, row-major.
fn non_zero(inputs: &[Option<Tensor>]) -> Result<Tensor> {
    let x = req(inputs, 0)?;
    let dims = x.dims().to_vec();
    let st = strides(&dims);
    let nz: Vec<usize> = x
        .ne(0f64)?
        .flatten_all()?
        .to_vec1::<u8>()?
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0)
        .map(|(i, _)| i)
        .collect();
    let rank = dims.len().max(1);
    let mut out = vec![0i64; rank * nz.len()];
    for (j, &flat) in nz.iter().enumerate() {
        for d in 0..dims.len() {
            out[d * nz.len() + j] = ((flat / st[d]) % dims[d]) as i64;
        }
    }
    Tensor::from_vec(out, (rank, nz.len()), x.device())
}
