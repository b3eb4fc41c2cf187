//! Object detectors. A [`Detector`] turns prepared model inputs into candidate boxes in model
//! pixels; [`postprocess`] applies the thresholds, class filter and NMS and maps boxes to the frame.
//! Every head decoder yields the same [`head::Candidate`], so NMS, tracking and outputs never
//! care which model ran.

pub mod agreement;
pub mod batch;
pub mod conv;
pub mod darknet;
pub mod head;
pub mod manifest;
pub mod nms;
pub mod onnx;
pub mod pool;
pub mod tflite;

use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::frame::Detection;
use crate::frame::ModelInput;
use head::Candidate;
use manifest::ModelInfo;
use nms::NmsParams;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The message includes the cause (deliberately not a `source`, so `{:#}` does not repeat it).
    #[error("model {model}: {cause}")]
    Darknet {
        model: String,
        cause: darknet::DarknetError,
    },
    #[error("model {model}: weights file {path}: {message}")]
    Weights {
        model: String,
        path: String,
        message: String,
    },
    /// The message includes the cause (as for darknet).
    #[error("model {model}: {cause}")]
    Onnx {
        model: String,
        cause: onnx::OnnxError,
    },
    /// The message includes the cause (as for darknet).
    #[error("model {model}: {cause}")]
    Tflite {
        model: String,
        cause: tflite::TfliteError,
    },
    #[error("device `{0}`: {1}")]
    Device(String, String),
    #[error("inference: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("inputs of {got:?} do not fit the model's {want:?}")]
    InputSize { got: (u32, u32), want: (u32, u32) },
}

impl DetectError {
    /// The device ran out of memory (CUDA's `CUDA_ERROR_OUT_OF_MEMORY`, cuBLAS's alloc failure).
    pub fn is_out_of_memory(&self) -> bool {
        let text = match self {
            Self::Candle(e) => e.to_string(),
            Self::Darknet { cause, .. } => cause.to_string(),
            Self::Onnx { cause, .. } => cause.to_string(),
            _ => return false,
        };
        text.contains("OUT_OF_MEMORY")
            || text.contains("out of memory")
            || text.contains("ALLOC_FAILED")
    }
}

/// Where inference runs, as a pipeline file or `--device` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// The GPU with this index.
    Cuda(usize),
    /// The first GPU if there is one, else the CPU.
    Auto,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| "expected cpu, cuda:N or auto".to_string()),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// The number type the detector computes in (`detector.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats: the reference.
    #[default]
    F32,
    /// 16-bit floats: half the memory traffic and tensor-core speed on a GPU, boxes within about
    /// a pixel (BENCHMARKS.md). On the CPU it runs Candle's generic kernels, far slower than f32.
    F16,
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::F16 => candle_core::DType::F16,
        }
    }
}

/// The Candle device for `choice`.
pub fn device(choice: DeviceChoice) -> Result<Device, DetectError> {
    let err = |m: &str| DetectError::Device(choice.to_string(), m.to_string());
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        DeviceChoice::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(err(
                    "this vigil was built without CUDA (cargo feature `cuda`)",
                ));
            }
            Device::new_cuda(n).map_err(|e| err(&e.to_string()))
        }
    }
}

/// A model that finds objects.
pub trait Detector: Send {
    /// Run a batch; one list of candidates (model pixels, before NMS, score ≥ `threshold`) per input.
    fn infer(
        &self,
        inputs: &[&ModelInput],
        threshold: f32,
    ) -> Result<Vec<Vec<Candidate>>, DetectError>;

    /// The GPU this detector runs on, where the pipeline then letterboxes its frames
    /// ([`crate::preprocess::on_device`]) so they cross the bus as bytes; `None` on the CPU.
    fn input_device(&self) -> Option<Device> {
        None
    }
}

/// Verify a weights file against its manifest's SHA-256.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(|e| {
        format!("cannot open ({e}); run `scripts/fetch-assets` (or `make assets`) to download it")
    })?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got = crate::hash::hex(&h.finalize());
    if got != expected {
        return Err(format!(
            "SHA-256 is {got}, the manifest expects {expected}: wrong or corrupted file"
        ));
    }
    Ok(())
}

/// Load the model a manifest describes onto `device`, computing in f32.
pub fn load(info: &ModelInfo, device: &Device) -> Result<Box<dyn Detector>, DetectError> {
    load_at(info, device, Precision::F32)
}

/// Load the model a manifest describes onto `device`, computing in `precision`.
pub fn load_at(
    info: &ModelInfo,
    device: &Device,
    precision: Precision,
) -> Result<Box<dyn Detector>, DetectError> {
    if precision != Precision::F32 && !info.family.has_precision(precision) {
        return Err(DetectError::Device(
            format!("{device:?}"),
            format!(
                "model {}: precision {precision:?} is not available for the {:?} family (f16 runs the darknet family)",
                info.name, info.family
            ),
        ));
    }
    info.family.load(info, device, precision)
}

/// One architecture family: how a manifest's network file is checked (at `vigil check`, without
/// reading weights) and how the model loads. A family is one module implementing this plus one
/// line in the [`families!`] registration.
pub trait ModelFamily {
    /// Check the network description `network` and read its input size `(width, height)`
    /// (`declared`: the manifest's `input:`, for models whose file leaves it open).
    fn input_size(network: &Path, declared: Option<(u32, u32)>) -> Result<(u32, u32), String>;
    /// Load the model onto `device`, computing in `precision` (one of [`Self::PRECISIONS`]).
    fn load(
        info: &ModelInfo,
        device: &Device,
        precision: Precision,
    ) -> Result<Box<dyn Detector>, DetectError>;
    /// The precisions the family computes in besides f32.
    const PRECISIONS: &'static [Precision] = &[];
}

/// The registered families: `"name" => Variant(Type)`, one line each; generates [`Family`] (the
/// manifest's `family:` key) and its dispatch.
macro_rules! families {
    ($($name:literal => $variant:ident($ty:ty)),* $(,)?) => {
        /// The architecture family a manifest names (`family:`), which picks the model
        /// definition and head decoder.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
        pub enum Family {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Family {
            pub fn input_size(self, network: &Path, declared: Option<(u32, u32)>) -> Result<(u32, u32), String> {
                match self {
                    $(Self::$variant => <$ty as ModelFamily>::input_size(network, declared),)*
                }
            }

            pub fn load(self, info: &ModelInfo, device: &Device, precision: Precision) -> Result<Box<dyn Detector>, DetectError> {
                match self {
                    $(Self::$variant => <$ty as ModelFamily>::load(info, device, precision),)*
                }
            }

            /// Whether the family computes in `precision`.
            pub fn has_precision(self, precision: Precision) -> bool {
                match self {
                    $(Self::$variant => precision == Precision::F32 || <$ty as ModelFamily>::PRECISIONS.contains(&precision),)*
                }
            }
        }
    };
}

families! {
    "darknet" => Darknet(DarknetDetector),
    "onnx" => Onnx(onnx::OnnxDetector),
    "tflite" => Tflite(tflite::detector::TfliteDetector),
}

/// The YOLOv1–v4 line: a darknet `.cfg` + `.weights` pair, run by the cfg interpreter.
impl ModelFamily for DarknetDetector {
    fn input_size(cfg: &Path, _declared: Option<(u32, u32)>) -> Result<(u32, u32), String> {
        let parsed = darknet::cfg::Cfg::load(cfg).map_err(|e| e.to_string())?;
        let net = parsed
            .sections
            .first()
            .ok_or_else(|| format!("{} has no [net] section", cfg.display()))?;
        darknet::net::check_sections(&parsed).map_err(|e| e.to_string())?;
        let f = parsed.file.as_str();
        let w: u32 = net.require(f, "width").map_err(|e| e.to_string())?;
        let h: u32 = net.require(f, "height").map_err(|e| e.to_string())?;
        Ok((w, h))
    }

    fn load(
        info: &ModelInfo,
        device: &Device,
        precision: Precision,
    ) -> Result<Box<dyn Detector>, DetectError> {
        let mut d = load_darknet(info, device)?;
        d.net = d
            .net
            .with_dtype(precision.dtype())
            .map_err(|cause| DetectError::Darknet {
                model: info.name.clone(),
                cause,
            })?;
        Ok(Box::new(d))
    }

    const PRECISIONS: &'static [Precision] = &[Precision::F16];
}

/// The manifest's weights file (darknet weights or ONNX file) is there and, where the manifest
/// gives a checksum, is the file it names.
pub fn check_weights(info: &ModelInfo) -> Result<(), DetectError> {
    if !info.weights.is_file() {
        return Err(DetectError::Weights {
            model: info.name.clone(),
            path: info.weights.display().to_string(),
            message: if info.weights_sha256.is_some() {
                "not found: run `scripts/fetch-assets` (or `make assets`) to download it".into()
            } else {
                format!(
                    "not found: put the trained weights there or pass `--weights` (the manifest {} says where they come from)",
                    info.manifest.display()
                )
            },
        });
    }
    if let Some(sha) = &info.weights_sha256 {
        verify_sha256(&info.weights, sha).map_err(|message| DetectError::Weights {
            model: info.name.clone(),
            path: info.weights.display().to_string(),
            message,
        })?;
    }
    Ok(())
}

/// Load a darknet-family model as its concrete type (tests reach its raw heads).
pub fn load_darknet(info: &ModelInfo, device: &Device) -> Result<DarknetDetector, DetectError> {
    check_weights(info)?;
    let net = darknet::DarknetNet::load(&info.cfg, &info.weights, device).map_err(|cause| {
        DetectError::Darknet {
            model: info.name.clone(),
            cause,
        }
    })?;
    Ok(DarknetDetector {
        info: info.clone(),
        net,
        device: device.clone(),
    })
}

/// A darknet network with its heads (`[yolo]`, `[region]` or `[detection]`).
#[derive(Debug)]
pub struct DarknetDetector {
    info: ModelInfo,
    net: darknet::DarknetNet,
    device: Device,
}

impl DarknetDetector {
    /// The network (its heads decode the raw outputs).
    pub fn net(&self) -> &darknet::DarknetNet {
        &self.net
    }

    /// The raw head tensors for a batch, `(batch, channels, h, w)` each (for parity tests).
    pub fn raw_heads(&self, inputs: &[&ModelInput]) -> Result<Vec<Tensor>, DetectError> {
        Ok(self.net.forward(&self.batch_tensor(inputs)?)?)
    }

    /// The same through Candle's stock convolution (the fused path's reference).
    pub fn raw_heads_reference(&self, inputs: &[&ModelInput]) -> Result<Vec<Tensor>, DetectError> {
        Ok(self.net.forward_reference(&self.batch_tensor(inputs)?)?)
    }

    fn batch_tensor(&self, inputs: &[&ModelInput]) -> Result<Tensor, DetectError> {
        let want = self.info.input;
        if let Some(i) = inputs.iter().find(|i| (i.width, i.height) != want) {
            return Err(DetectError::InputSize {
                got: (i.width, i.height),
                want,
            });
        }
        // Letterboxed on this GPU already: one concatenation there.
        let on_device: Option<Vec<Tensor>> = inputs
            .iter()
            .map(|i| {
                i.on_device
                    .clone()
                    .filter(|t| t.device().same_device(&self.device))
            })
            .collect();
        if let Some(parts) = on_device {
            return Ok(Tensor::cat(&parts, 0)?);
        }
        let mut data = Vec::with_capacity(inputs.len() * 3 * (want.0 * want.1) as usize);
        for i in inputs {
            data.extend_from_slice(&i.host_chw()?);
        }
        Ok(Tensor::from_vec(
            data,
            (inputs.len(), 3, want.1 as usize, want.0 as usize),
            &self.device,
        )?)
    }
}

impl Detector for DarknetDetector {
    fn input_device(&self) -> Option<Device> {
        (!self.device.is_cpu()).then(|| self.device.clone())
    }

    fn infer(
        &self,
        inputs: &[&ModelInput],
        threshold: f32,
    ) -> Result<Vec<Vec<Candidate>>, DetectError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let heads = self.raw_heads(inputs)?;
        let mut out = vec![Vec::new(); inputs.len()];
        for (head, t) in self.net.heads().iter().zip(&heads) {
            let (b, _, gh, gw) = t.dims4()?;
            let flat: Vec<f32> = t
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?;
            let per = flat.len() / b.max(1);
            for (i, cands) in out.iter_mut().enumerate() {
                head.decode(&flat[i * per..(i + 1) * per], (gh, gw), threshold, cands);
            }
        }
        Ok(out)
    }
}

/// Thresholds and filters applied after the network.
#[derive(Debug, Clone)]
pub struct PostParams {
    pub confidence: f32,
    /// `Some(mask)`: keep class `i` only where `mask[i]`.
    pub classes: Option<Vec<bool>>,
    pub nms: NmsParams,
}

/// Class filter, NMS, and back to frame pixels.
pub fn postprocess(cands: Vec<Candidate>, p: &PostParams, input: &ModelInput) -> Vec<Detection> {
    let cands: Vec<Candidate> = cands
        .into_iter()
        .filter(|c| c.score >= p.confidence)
        .collect();
    let cands: Vec<Candidate> = match &p.classes {
        None => cands,
        Some(mask) => cands
            .into_iter()
            .filter(|c| mask.get(c.class_id as usize).copied().unwrap_or(false))
            .collect(),
    };
    nms::nms(cands, &p.nms)
        .into_iter()
        .map(|c| Detection {
            class_id: c.class_id,
            score: c.score,
            box_in_frame: input.frame_from_model.apply(c.box_in_model),
            track_id: None,
            mask: c
                .mask
                .as_deref()
                .map(|m| std::sync::Arc::new(input.frame_from_model.apply_mask(m))),
        })
        .collect()
}
