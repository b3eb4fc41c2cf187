//! Reading an ONNX file: the protobuf (candle-onnx's prost types, generated from upstream
//! `onnx.proto3`), its tensors and node attributes, with every size checked before anything is
//! allocated, so a damaged or hostile file is an error and never a panic or a 100 GB allocation.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx;
use prost::Message;

use super::OnnxError;

pub use onnx::{ModelProto, NodeProto, TensorProto, ValueInfoProto};

/// Largest file read (an ONNX protobuf cannot exceed 2 GiB; larger models use external data).
const MAX_FILE_BYTES: u64 = 2 << 30;
/// Largest single tensor, in elements (4 GiB of f32): a bound on what one declaration can make
/// vigil allocate.
pub const MAX_ELEMENTS: u64 = 1 << 30;

/// ONNX `TensorProto.DataType` values vigil handles.
pub mod dt {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const STRING: i32 = 8;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
}

/// The name of an ONNX element type, for messages.
pub fn dtype_name(code: i32) -> String {
    onnx::tensor_proto::DataType::try_from(code)
        .map(|d| d.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("type {code}"))
}

/// The Candle dtype an ONNX element type is computed in: floats in f32 (f16/f64 are widened or
/// narrowed at load), integers in i64, booleans and bytes in u8.
pub fn compute_dtype(code: i32) -> Option<DType> {
    match code {
        dt::FLOAT | dt::FLOAT16 | dt::DOUBLE => Some(DType::F32),
        dt::INT8 | dt::INT32 | dt::INT64 | 4..=5 | 12..=13 => Some(DType::I64),
        dt::UINT8 | dt::BOOL => Some(DType::U8),
        _ => None,
    }
}

/// Read and decode a model file.
pub fn read(path: &Path) -> Result<ModelProto, OnnxError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| OnnxError::Read {
        path: shown.clone(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(OnnxError::Parse {
            path: shown,
            message: format!(
                "{} bytes: larger than a protobuf can be (2 GiB)",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Read {
        path: shown.clone(),
        source,
    })?;
    decode(&bytes).map_err(|message| OnnxError::Parse {
        path: shown,
        message,
    })
}

/// Decode a model from bytes (exposed for tests of damaged files).
pub fn decode(bytes: &[u8]) -> Result<ModelProto, String> {
    if bytes.is_empty() {
        return Err("empty file: not an ONNX model".into());
    }
    let model = ModelProto::decode(bytes).map_err(|e| {
        let e = e.to_string();
        if e.contains("recursion") {
            format!("messages nested too deeply to be a model vigil runs ({e})")
        } else {
            format!("not a valid ONNX protobuf (truncated or not ONNX: {e})")
        }
    })?;
    if model.graph.is_none() {
        return Err("the file holds no graph: truncated, or not an ONNX model".into());
    }
    Ok(model)
}

/// The element count a dims list declares, refusing negative dims and overflow.
pub fn element_count(name: &str, dims: &[i64]) -> Result<u64, OnnxError> {
    let mut n: u64 = 1;
    for &d in dims {
        let d = u64::try_from(d).map_err(|_| OnnxError::Tensor {
            name: name.into(),
            message: format!("negative dimension in {dims:?}"),
        })?;
        n = n.checked_mul(d).ok_or_else(|| OnnxError::Tensor {
            name: name.into(),
            message: format!("dims {dims:?} overflow"),
        })?;
    }
    if n > MAX_ELEMENTS {
        return Err(OnnxError::Tensor {
            name: name.into(),
            message: format!(
                "{dims:?} declares {n} elements ({:.1} GB as f32), more than vigil allows ({MAX_ELEMENTS})",
                n as f64 * 4.0 / 1e9
            ),
        });
    }
    Ok(n)
}

/// A `TensorProto` (initializer or constant) as a Candle tensor on `device`.
pub fn tensor(t: &TensorProto, device: &Device) -> Result<Tensor, OnnxError> {
    let name = if t.name.is_empty() {
        "<constant>"
    } else {
        &t.name
    };
    let err = |message: String| OnnxError::Tensor {
        name: name.to_string(),
        message,
    };
    if t.data_location == 1 {
        return Err(err(
            "its data is in an external file: models with external data are not supported; save the model as one file".into(),
        ));
    }
    let n = element_count(name, &t.dims)? as usize;
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let dtype = compute_dtype(t.data_type).ok_or_else(|| {
        err(format!(
            "data type {} ({}) is not supported",
            t.data_type,
            dtype_name(t.data_type)
        ))
    })?;
    let raw = !t.raw_data.is_empty() || n == 0 && t.float_data.is_empty();
    let tensor = if raw {
        from_raw(t.data_type, &t.raw_data, n, &dims, device).map_err(err)?
    } else {
        from_typed(t, n, &dims, device).map_err(err)?
    };
    debug_assert_eq!(tensor.dtype(), dtype);
    Ok(tensor)
}

/// Decode `raw_data` (little-endian, packed) after checking its length against the dims.
fn from_raw(
    code: i32,
    raw: &[u8],
    n: usize,
    dims: &[usize],
    device: &Device,
) -> Result<Tensor, String> {
    let width = match code {
        dt::FLOAT | dt::INT32 => 4,
        dt::INT64 | dt::DOUBLE => 8,
        dt::FLOAT16 | 4..=5 => 2,
        dt::UINT8 | dt::INT8 | dt::BOOL => 1,
        12 => 4,
        13 => 8,
        other => {
            return Err(format!(
                "element type {} is not supported",
                dtype_name(other)
            ));
        }
    };
    if raw.len() != n * width {
        return Err(format!(
            "raw data holds {} bytes, its dims {dims:?} need {} ({n} × {width}): truncated or mislabelled",
            raw.len(),
            n * width
        ));
    }
    let chunks = raw.chunks_exact(width);
    let t = match code {
        dt::FLOAT => Tensor::from_vec(
            chunks
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>(),
            dims,
            device,
        ),
        dt::DOUBLE => Tensor::from_vec(
            chunks.map(|c| f64_le(c) as f32).collect::<Vec<_>>(),
            dims,
            device,
        ),
        dt::FLOAT16 => Tensor::from_vec(
            chunks
                .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect::<Vec<_>>(),
            dims,
            device,
        ),
        dt::UINT8 | dt::BOOL => Tensor::from_vec(raw.to_vec(), dims, device),
        _ => Tensor::from_vec(
            chunks.map(|c| int_le(code, c)).collect::<Vec<i64>>(),
            dims,
            device,
        ),
    };
    t.map_err(|e| e.to_string())
}

fn f64_le(c: &[u8]) -> f64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(c);
    f64::from_le_bytes(b)
}

/// A little-endian integer of any ONNX integer type, widened to i64.
fn int_le(code: i32, c: &[u8]) -> i64 {
    match code {
        dt::INT8 => i64::from(c[0] as i8),
        4 => i64::from(u16::from_le_bytes([c[0], c[1]])),
        5 => i64::from(i16::from_le_bytes([c[0], c[1]])),
        dt::INT32 => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        12 => i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            i64::from_le_bytes(b)
        }
    }
}

/// IEEE 754 half → f32.
fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value = f · 2^-24.
            let v = f as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Decode the typed repeated fields (`float_data`, `int64_data`, …).
fn from_typed(
    t: &TensorProto,
    n: usize,
    dims: &[usize],
    device: &Device,
) -> Result<Tensor, String> {
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!(
                "holds {len} values, its dims {dims:?} need {n}: truncated or mislabelled"
            ))
        }
    };
    let t = match t.data_type {
        dt::FLOAT => {
            check(t.float_data.len())?;
            Tensor::from_vec(t.float_data.clone(), dims, device)
        }
        dt::DOUBLE => {
            check(t.double_data.len())?;
            Tensor::from_vec(
                t.double_data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                dims,
                device,
            )
        }
        dt::INT64 => {
            check(t.int64_data.len())?;
            Tensor::from_vec(t.int64_data.clone(), dims, device)
        }
        dt::FLOAT16 => {
            check(t.int32_data.len())?;
            Tensor::from_vec(
                t.int32_data
                    .iter()
                    .map(|&v| half_to_f32(v as u16))
                    .collect::<Vec<_>>(),
                dims,
                device,
            )
        }
        dt::UINT8 | dt::BOOL => {
            check(t.int32_data.len())?;
            Tensor::from_vec(
                t.int32_data.iter().map(|&v| v as u8).collect::<Vec<_>>(),
                dims,
                device,
            )
        }
        dt::INT32 | dt::INT8 | 4 | 5 => {
            check(t.int32_data.len())?;
            Tensor::from_vec(
                t.int32_data
                    .iter()
                    .map(|&v| i64::from(v))
                    .collect::<Vec<_>>(),
                dims,
                device,
            )
        }
        12 | 13 => {
            check(t.uint64_data.len())?;
            Tensor::from_vec(
                t.uint64_data.iter().map(|&v| v as i64).collect::<Vec<_>>(),
                dims,
                device,
            )
        }
        other => {
            return Err(format!(
                "element type {} is not supported",
                dtype_name(other)
            ));
        }
    };
    t.map_err(|e| e.to_string())
}

/// A node's attributes, looked up by name with their types checked.
pub struct Attrs<'a> {
    node: &'a NodeProto,
}

/// `AttributeProto.AttributeType` values.
pub(crate) mod at {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto) -> Self {
        Self { node }
    }

    fn get(&self, name: &str, want: i32) -> Result<Option<&'a onnx::AttributeProto>, String> {
        let Some(a) = self.node.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        // Old exporters leave the type unset; trust the field that holds a value then.
        if a.r#type != 0 && a.r#type != want {
            return Err(format!(
                "attribute `{name}` has type {}, expected {}",
                attr_type_name(a.r#type),
                attr_type_name(want)
            ));
        }
        Ok(Some(a))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.get(name, at::INT)?.map(|a| a.i))
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self.get(name, at::FLOAT)?.map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.get(name, at::INTS)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        Ok(self.get(name, at::FLOATS)?.map(|a| a.floats.clone()))
    }

    pub fn string_or(&self, name: &str, default: &str) -> Result<String, String> {
        Ok(self.get(name, at::STRING)?.map_or_else(
            || default.to_string(),
            |a| String::from_utf8_lossy(&a.s).into_owned(),
        ))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, String> {
        Ok(self.get(name, at::TENSOR)?.and_then(|a| a.t.as_ref()))
    }

    /// `Constant`'s value, whichever of its attribute forms the exporter used.
    pub fn constant(&self, device: &Device) -> Result<Tensor, OnnxError> {
        let bad = |message: String| OnnxError::Tensor {
            name: self.node.output.first().cloned().unwrap_or_default(),
            message,
        };
        if let Some(t) = self.tensor("value").map_err(bad)? {
            return tensor(t, device);
        }
        let made = if let Some(v) = self.get("value_float", at::FLOAT).map_err(bad)? {
            Tensor::new(v.f, device)
        } else if let Some(v) = self.get("value_int", at::INT).map_err(bad)? {
            Tensor::new(v.i, device)
        } else if let Some(v) = self.floats("value_floats").map_err(bad)? {
            Tensor::new(v, device)
        } else if let Some(v) = self.ints("value_ints").map_err(bad)? {
            Tensor::new(v, device)
        } else {
            return Err(bad(
                "Constant without a value (sparse and string constants are not supported)".into(),
            ));
        };
        made.map_err(|e| bad(e.to_string()))
    }
}

fn attr_type_name(t: i32) -> &'static str {
    onnx::attribute_proto::AttributeType::try_from(t)
        .map(|a| a.as_str_name())
        .unwrap_or("unknown")
}

/// One graph input or output as declared: name, element type, dims (`None` for a symbolic or
/// missing dim).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Declared {
    pub name: String,
    pub elem_type: String,
    pub dims: Vec<Option<i64>>,
    /// Symbolic names of dims (`batch`, `height`…), where the file gives them.
    pub dim_names: Vec<Option<String>>,
    #[serde(skip)]
    pub elem_code: i32,
}

pub fn declared(v: &ValueInfoProto) -> Declared {
    use onnx::tensor_shape_proto::dimension::Value as Dim;
    let (elem, dims) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(onnx::type_proto::Value::TensorType(t)) => {
            let dims = t.shape.as_ref().map_or_else(Vec::new, |s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(Dim::DimValue(v)) if *v > 0 => (Some(*v), None),
                        Some(Dim::DimParam(p)) => (None, Some(p.clone())),
                        _ => (None, None),
                    })
                    .collect()
            });
            (t.elem_type, dims)
        }
        _ => (0, Vec::new()),
    };
    Declared {
        name: v.name.clone(),
        elem_type: dtype_name(elem),
        dims: dims.iter().map(|d| d.0).collect(),
        dim_names: dims.into_iter().map(|d| d.1).collect(),
        elem_code: elem,
    }
}
