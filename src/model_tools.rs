//! `vigil model inspect`, `vigil model run-raw` and `vigil bench --model`: what a person reaches
//! for when a converted model misbehaves or is slow.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::detect::manifest::ModelInfo;
use crate::detect::onnx::OnnxModel;

/// A model named on the command line: an `.onnx` file, or a manifest naming one.
pub struct ModelArg {
    pub onnx: PathBuf,
    pub size: Option<(u32, u32)>,
}

impl ModelArg {
    pub fn resolve(path: &Path, size: Option<(u32, u32)>) -> Result<Self, String> {
        let is_manifest = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if !is_manifest {
            return Ok(Self {
                onnx: path.to_path_buf(),
                size,
            });
        }
        let info = ModelInfo::load(path).map_err(|e| e.to_string())?;
        if info.onnx.is_none() {
            return Err(format!(
                "{}: not an ONNX model (family {:?})",
                path.display(),
                info.family
            ));
        }
        Ok(Self {
            onnx: info.weights,
            size: size.or(Some(info.input)),
        })
    }

    fn load(&self) -> Result<OnnxModel, String> {
        OnnxModel::load(&self.onnx, 1, self.size, &Device::Cpu)
            .map_err(|e| format!("{}: {e}", self.onnx.display()))
    }
}

/// Inputs, outputs, operators, parameters and FLOPs, as a table or JSON.
pub fn inspect(model: &ModelArg, json: bool) -> Result<String, String> {
    let m = model.load()?;
    let s = &m.summary;
    if json {
        return serde_json::to_string_pretty(s).map_err(|e| e.to_string());
    }
    let mut out = String::new();
    let _ = writeln!(out, "{}", model.onnx.display());
    let _ = writeln!(
        out,
        "  producer   {}   IR {}   opsets {:?}",
        s.producer, s.ir_version, s.opsets
    );
    for i in &s.inputs {
        let _ = writeln!(
            out,
            "  input      {} {} {:?} (planned as {:?})",
            i.name,
            i.elem_type,
            dims_text(&i.dims, &i.dim_names),
            s.input_shape
        );
    }
    for (o, shape) in s.outputs.iter().zip(&s.output_shapes) {
        let _ = writeln!(
            out,
            "  output     {} {} {:?} → {:?}",
            o.name,
            o.elem_type,
            dims_text(&o.dims, &o.dim_names),
            shape
        );
    }
    let _ = writeln!(
        out,
        "  parameters {} ({:.2} M)",
        s.parameters,
        s.parameters as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "  FLOPs      {:.3} G per inference (2 × multiply-adds of Conv/ConvTranspose/MatMul/Gemm)",
        s.flops as f64 / 1e9
    );
    let _ = writeln!(
        out,
        "  nodes      {} → {} steps per frame after folding and fusion",
        s.nodes, s.steps
    );
    let ops: Vec<String> = s
        .operators
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(out, "  operators  {}", ops.join(", "));
    for (k, v) in &s.metadata {
        let v: String = v.chars().take(120).collect();
        let _ = writeln!(out, "  metadata   {k} = {v}");
    }
    Ok(out)
}

fn dims_text(dims: &[Option<i64>], names: &[Option<String>]) -> Vec<String> {
    dims.iter()
        .zip(names)
        .map(|(d, n)| {
            d.map_or_else(
                || n.clone().unwrap_or_else(|| "?".into()),
                |v| v.to_string(),
            )
        })
        .collect()
}

/// Every graph output for the tensor in `input` (`.npy`, float32/float64/uint8), into an `.npz`
/// keyed by output name.
pub fn run_raw(model: &ModelArg, input: &Path, out: &Path) -> Result<String, String> {
    let file = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{}: not a .npy file: {e}", input.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = match npy.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4 => {
            npy.into_vec::<f32>()
        }
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => {
            npy.into_vec::<f64>()
                .map(|v| v.into_iter().map(|x| x as f32).collect())
        }
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Uint && t.size_field() == 1 => {
            npy.into_vec::<u8>()
                .map(|v| v.into_iter().map(f32::from).collect())
        }
        other => {
            return Err(format!(
                "{}: dtype {} (use float32, float64 or uint8)",
                input.display(),
                other.descr()
            ));
        }
    }
    .map_err(|e| format!("{}: {e}", input.display()))?;
    let size = match shape.as_slice() {
        [_, _, h, w] | [_, h, w] => Some((*w as u32, *h as u32)),
        _ => {
            return Err(format!(
                "{}: shape {shape:?}; expected NCHW (or CHW for a model that takes one image)",
                input.display()
            ));
        }
    };
    let m =
        OnnxModel::load(&model.onnx, shape[0], size, &Device::Cpu).map_err(|e| e.to_string())?;
    let x = Tensor::from_vec(data, shape, &Device::Cpu).map_err(|e| e.to_string())?;
    let outputs = m.run(&x).map_err(|e| e.to_string())?;
    write_npz(out, &m.output_names(), &outputs)?;
    let mut report = String::new();
    for (n, t) in m.output_names().iter().zip(&outputs) {
        let _ = writeln!(report, "{n} {:?}", t.dims());
    }
    let _ = write!(report, "wrote {}", out.display());
    Ok(report)
}

fn write_npz(path: &Path, names: &[String], tensors: &[Tensor]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(|e| err(&e))?;
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, t) in names.iter().zip(tensors) {
        let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
        let data: Vec<f32> = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .map_err(|e| err(&e))?;
        let mut bytes = Vec::new();
        {
            use npyz::WriterBuilder;
            let mut w = npyz::WriteOptions::<f32>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut bytes)
                .begin_nd()
                .map_err(|e| err(&e))?;
            w.extend(data).map_err(|e| err(&e))?;
            w.finish().map_err(|e| err(&e))?;
        }
        // numpy names an array by its file name: keep it a plain file name.
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        zip.start_file(format!("{safe}.npy"), opts)
            .map_err(|e| err(&e))?;
        zip.write_all(&bytes).map_err(|e| err(&e))?;
    }
    zip.finish().map_err(|e| err(&e))?;
    Ok(())
}

/// vigil's executor against ONNX Runtime (CPU, 2 threads) on the same model, in the same run.
pub fn bench(
    model: &ModelArg,
    repeats: usize,
    ort_python: &Path,
    ort_script: &Path,
) -> Result<String, String> {
    let m = model.load()?;
    let x = Tensor::rand(0f32, 1f32, m.input_shape(), &Device::Cpu).map_err(|e| e.to_string())?;
    for _ in 0..3 {
        m.run(&x).map_err(|e| e.to_string())?;
    }
    let mut times = Vec::with_capacity(repeats);
    let mut profile: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    let mut per_step: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        let (_, prof) = m.run_profiled(&x).map_err(|e| e.to_string())?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        for (step, s) in prof {
            let ms = s * 1e3 / repeats.max(1) as f64;
            let op = step.split('\t').next().unwrap_or_default().to_string();
            *profile.entry(op).or_insert(0.0) += ms;
            *per_step.entry(step).or_insert(0.0) += ms;
        }
    }
    let vigil_ms = median(&mut times);
    let ort = ort_median(model, ort_python, ort_script, repeats, m.input_shape());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {} input {:?}, {} repeats after 3 warm-ups, {} rayon threads",
        model.onnx.display(),
        m.input_shape(),
        repeats,
        rayon::current_num_threads()
    );
    let _ = writeln!(
        out,
        "| runtime | median ms | ratio |\n| --- | ---: | ---: |"
    );
    let _ = writeln!(
        out,
        "| vigil (Candle, fused conv) | {vigil_ms:.1} | {} |",
        ort.as_ref()
            .map_or("-".into(), |o| format!("{:.2}×", vigil_ms / o))
    );
    match &ort {
        Ok(o) => {
            let _ = writeln!(out, "| ONNX Runtime 2 threads | {o:.1} | 1.00× |");
        }
        Err(e) => {
            let _ = writeln!(out, "| ONNX Runtime | not run: {e} | |");
        }
    }
    let mut by_op: Vec<(String, f64)> = profile.into_iter().collect();
    by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(out, "\nvigil per operator (ms per inference):");
    for (op, ms) in by_op.iter().take(12) {
        let _ = writeln!(out, "  {op:<24} {ms:8.2}");
    }
    let mut steps: Vec<(String, f64)> = per_step.into_iter().collect();
    steps.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(out, "\nslowest steps (operator, node, output shape, ms):");
    for (step, ms) in steps.iter().take(15) {
        let _ = writeln!(out, "  {ms:7.2}  {}", step.replace('\t', "  "));
    }
    Ok(out)
}

/// The TensorFlow Lite file `path` names: a `.tflite` file, or a manifest of `family: tflite`.
pub fn tflite_file(path: &Path) -> Option<PathBuf> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("tflite") => Some(path.to_path_buf()),
        Some("yaml" | "yml") => ModelInfo::load(path)
            .ok()
            .filter(|i| i.family == crate::detect::Family::Tflite)
            .map(|i| i.weights),
        _ => None,
    }
}

/// vigil's TFLite executor against the LiteRT interpreter (XNNPACK, 2 threads) on the same model
/// and input pattern, in the same run.
pub fn bench_tflite(
    path: &Path,
    repeats: usize,
    python: &Path,
    script: &Path,
) -> Result<String, String> {
    use crate::detect::tflite::{Data, TfliteModel, schema::DType as T};
    let m = TfliteModel::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = m.input().elements();
    // the pattern litert_bench.py feeds: element i is (i · 7919) mod 251
    let pattern = (0..n).map(|i| ((i as u64 * 7919) % 251) as u8);
    let input = match m.input().dtype {
        T::I8 => Data::I8(pattern.map(|v| (v as i16 - 128) as i8).collect()),
        _ => Data::U8(pattern.collect()),
    };
    let names = m.step_names();
    let mut per_op: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    let mut times = Vec::with_capacity(repeats);
    for i in 0..repeats.max(1) + 3 {
        let t0 = Instant::now();
        let mut last = Instant::now();
        m.run_observed(input.clone(), |step, _| {
            if i >= 3 {
                *per_op.entry(names[step]).or_insert(0.0) +=
                    last.elapsed().as_secs_f64() * 1e3 / repeats.max(1) as f64;
            }
            last = Instant::now();
        })
        .map_err(|e| e.to_string())?;
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let vigil_ms = median(&mut times);
    let litert = baseline_median(
        python,
        script,
        path,
        &["--repeats", &repeats.to_string(), "--threads", "2"],
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {} input {:?}, {repeats} repeats after 3 warm-ups, {} rayon threads",
        path.display(),
        m.input().shape,
        rayon::current_num_threads()
    );
    let _ = writeln!(
        out,
        "| runtime | median ms | ratio |\n| --- | ---: | ---: |"
    );
    let ratio = litert
        .as_ref()
        .map_or("-".into(), |o| format!("{:.2}×", vigil_ms / o));
    let _ = writeln!(out, "| vigil (integer kernels) | {vigil_ms:.1} | {ratio} |");
    let _ = match &litert {
        Ok(o) => writeln!(out, "| LiteRT (XNNPACK) 2 threads | {o:.1} | 1.00× |"),
        Err(e) => writeln!(out, "| LiteRT | not run: {e} | |"),
    };
    let mut by_op: Vec<(&str, f64)> = per_op.into_iter().collect();
    by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    let _ = writeln!(out, "\nvigil per operator (ms per inference):");
    for (op, ms) in by_op {
        let _ = writeln!(out, "  {op:<30} {ms:8.2}");
    }
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// ONNX Runtime's median latency from the reference script (a test oracle, never linked).
fn ort_median(
    model: &ModelArg,
    python: &Path,
    script: &Path,
    repeats: usize,
    shape: &[usize],
) -> Result<f64, String> {
    if !python.exists() {
        return Err(format!(
            "{} is missing (scripts/reference/onnx-venv builds it)",
            python.display()
        ));
    }
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let dims = dims.join(",");
    let repeats = repeats.to_string();
    let args = ["--repeats", &repeats, "--threads", "2", "--shape", &dims];
    baseline_median(python, script, &model.onnx, &args)
}

/// A baseline script's `median_ms` (ONNX Runtime, LiteRT: test oracles, never linked).
fn baseline_median(
    python: &Path,
    script: &Path,
    model: &Path,
    args: &[&str],
) -> Result<f64, String> {
    if !python.exists() {
        return Err(format!(
            "{} is missing (scripts/reference/ builds the oracle venvs)",
            python.display()
        ));
    }
    let out = Command::new(python)
        .arg(script)
        .arg(model)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_string());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("median_ms ")?.trim().parse().ok())
        .ok_or_else(|| format!("no `median_ms` line from {}", script.display()))
}
