//! The `onnx` model family: a manifest's `onnx:` file run by vigil's executor, its input
//! normalized as the model was trained, its outputs decoded by the manifest's `decoder:`.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::decode::{self, DecodeParams, Decoder};
use super::{OnnxError, OnnxModel};
use crate::detect::head::Candidate;
use crate::detect::manifest::ModelInfo;
use crate::detect::{DetectError, Detector, ModelFamily, check_weights};
use crate::frame::ModelInput;

/// Channel order the model was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    #[default]
    Rgb,
    Bgr,
}

/// How 8-bit pixels become the model's input: `(pixel · scale − mean) / std`, per channel in
/// the model's channel order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Multiplies the 0–255 pixel value first (default 1/255: inputs in [0, 1]).
    #[serde(default = "Normalize::default_scale")]
    pub scale: f32,
    #[serde(default)]
    pub mean: [f32; 3],
    #[serde(default = "Normalize::default_std")]
    pub std: [f32; 3],
    #[serde(default)]
    pub channels: Channels,
}

impl Normalize {
    fn default_scale() -> f32 {
        1.0 / 255.0
    }
    fn default_std() -> [f32; 3] {
        [1.0; 3]
    }
}

impl Default for Normalize {
    fn default() -> Self {
        Self {
            scale: Self::default_scale(),
            mean: [0.0; 3],
            std: Self::default_std(),
            channels: Channels::Rgb,
        }
    }
}

/// What an ONNX manifest adds to [`ModelInfo`].
#[derive(Debug, Clone)]
pub struct OnnxSettings {
    pub decoder: Decoder,
    pub normalize: Normalize,
    pub anchors: Vec<Vec<f32>>,
    pub strides: Vec<usize>,
}

/// An ONNX detector.
#[derive(Debug)]
pub struct OnnxDetector {
    info: ModelInfo,
    settings: OnnxSettings,
    /// What the decoder needs besides the tensors, made once at load.
    params: DecodeParams,
    model: OnnxModel,
    device: Device,
}

impl ModelFamily for OnnxDetector {
    fn input_size(network: &Path, declared: Option<(u32, u32)>) -> Result<(u32, u32), String> {
        let input = OnnxModel::check(network).map_err(|e| format!("{}: {e}", network.display()))?;
        // NCHW, or CHW (torchvision's detection exports)
        let (w_at, h_at) = if input.dims.len() == 3 {
            (2, 1)
        } else {
            (3, 2)
        };
        let fixed = match (
            input.dims.get(w_at).copied().flatten(),
            input.dims.get(h_at).copied().flatten(),
        ) {
            (Some(w), Some(h)) => Some((w as u32, h as u32)),
            _ => None,
        };
        match (fixed, declared) {
            (Some(f), Some(d)) if f != d => Err(format!(
                "{}: the file fixes the input at {}x{}, the manifest says {}x{}",
                network.display(),
                f.0,
                f.1,
                d.0,
                d.1
            )),
            (Some(f), _) => Ok(f),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!(
                "{}: the input size is dynamic; give it as `input: WIDTHxHEIGHT` in the manifest",
                network.display()
            )),
        }
    }

    fn load(
        info: &ModelInfo,
        device: &Device,
        _precision: crate::detect::Precision,
    ) -> Result<Box<dyn Detector>, DetectError> {
        Ok(Box::new(Self::load_concrete(info, device)?))
    }
}

impl OnnxDetector {
    pub fn load_concrete(info: &ModelInfo, device: &Device) -> Result<Self, DetectError> {
        let settings = info.onnx.clone().ok_or_else(|| DetectError::Onnx {
            model: info.name.clone(),
            cause: OnnxError::Graph("the manifest has no `onnx:` settings".into()),
        })?;
        check_weights(info)?;
        let model =
            OnnxModel::load(&info.weights, 1, Some(info.input), device).map_err(|cause| {
                DetectError::Onnx {
                    model: info.name.clone(),
                    cause,
                }
            })?;
        decode::check(
            settings.decoder,
            &model.summary.output_shapes,
            info.classes.len(),
        )
        .map_err(|message| DetectError::Onnx {
            model: info.name.clone(),
            cause: OnnxError::Graph(message),
        })?;
        if !device.is_cpu() {
            warn_of_host_ops(info, &model, device);
        }
        let params = DecodeParams {
            classes: info.classes.len(),
            input: (info.input.0 as usize, info.input.1 as usize),
            anchors: settings.anchors.clone(),
            strides: settings.strides.clone(),
        };
        Ok(Self {
            info: info.clone(),
            settings,
            params,
            model,
            device: device.clone(),
        })
    }

    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// The model's input tensor for one prepared frame.
    pub fn input_tensor(&self, input: &ModelInput) -> Result<Tensor, DetectError> {
        let want = self.info.input;
        if (input.width, input.height) != want {
            return Err(DetectError::InputSize {
                got: (input.width, input.height),
                want,
            });
        }
        let n = &self.settings.normalize;
        if let Some(t) = input
            .on_device
            .as_ref()
            .filter(|t| t.device().same_device(&self.device))
        {
            return self.normalize_on_device(t);
        }
        let chw = input.host_chw()?;
        let plane = (want.0 * want.1) as usize;
        let mut data = Vec::with_capacity(3 * plane);
        for c in 0..3 {
            // ModelInput planes are R, G, B in [0, 1].
            let src = match n.channels {
                Channels::Rgb => c,
                Channels::Bgr => 2 - c,
            };
            let (k, m, s) = (255.0 * n.scale, n.mean[c], n.std[c]);
            data.extend(
                chw[src * plane..(src + 1) * plane]
                    .iter()
                    .map(|v| (v * k - m) / s),
            );
        }
        // torchvision's detection exports take one CHW image, the rest a batch of one
        let shape: Vec<usize> = if self.model.summary.input_shape.len() == 3 {
            vec![3, want.1 as usize, want.0 as usize]
        } else {
            vec![1, 3, want.1 as usize, want.0 as usize]
        };
        Ok(Tensor::from_vec(data, shape, &self.device)?)
    }

    /// The manifest's normalization of a `(1, 3, h, w)` RGB input already on the device, in the
    /// host path's order of operations (`(v · 255·scale − mean) / std` per channel).
    fn normalize_on_device(&self, t: &Tensor) -> Result<Tensor, DetectError> {
        let n = &self.settings.normalize;
        let t = match n.channels {
            Channels::Rgb => t.clone(),
            Channels::Bgr => t.index_select(&Tensor::new(&[2u32, 1, 0], &self.device)?, 1)?,
        };
        let per_channel = |v: [f32; 3]| Tensor::from_vec(v.to_vec(), (1, 3, 1, 1), &self.device);
        let t = (t * f64::from(255.0 * n.scale))?
            .broadcast_sub(&per_channel(n.mean)?)?
            .broadcast_div(&per_channel(n.std)?)?;
        Ok(if self.model.summary.input_shape.len() == 3 {
            t.squeeze(0)?
        } else {
            t
        })
    }
}

impl Detector for OnnxDetector {
    fn input_device(&self) -> Option<Device> {
        (!self.device.is_cpu()).then(|| self.device.clone())
    }

    fn infer(
        &self,
        inputs: &[&ModelInput],
        threshold: f32,
    ) -> Result<Vec<Vec<Candidate>>, DetectError> {
        let mut all = Vec::with_capacity(inputs.len());
        for input in inputs {
            let outputs = self
                .model
                .run(&self.input_tensor(input)?)
                .map_err(|cause| DetectError::Onnx {
                    model: self.info.name.clone(),
                    cause,
                })?;
            all.push(decode::decode(
                self.settings.decoder,
                &outputs,
                0,
                threshold,
                &self.params,
            )?);
        }
        Ok(all)
    }
}

/// Says which of the model's operators run on the host on `device` (their inputs cross the
/// bus every frame), once at load.
fn warn_of_host_ops(info: &ModelInfo, model: &OnnxModel, device: &Device) {
    let host: Vec<String> = model
        .summary
        .operators
        .iter()
        .filter(|(op, _)| super::ops::HOST_OPS.contains(&op.as_str()))
        .map(|(op, n)| format!("{op} ×{n}"))
        .collect();
    if !host.is_empty() {
        tracing::warn!(
            model = %info.name,
            device = ?device,
            ops = %host.join(", "),
            "these operators run on the host: their inputs are copied from the device and back every frame"
        );
    }
}

/// Class names from a model's metadata: Ultralytics writes `names` as a Python dict literal
/// (`{0: 'person', 1: 'bicycle'}`).
pub fn classes_from_metadata(path: &Path) -> Result<Vec<String>, String> {
    let model = super::proto::read(path).map_err(|e| e.to_string())?;
    let names = model
        .metadata_props
        .iter()
        .find(|p| p.key == "names")
        .ok_or_else(|| {
            format!(
                "{} has no `names` metadata: give `classes:` in the manifest",
                path.display()
            )
        })?;
    parse_names(&names.value)
        .ok_or_else(|| format!("{}: cannot read its `names` metadata", path.display()))
}

/// `{0: 'a', 1: "b's"}` → `["a", "b's"]`, in key order.
pub fn parse_names(s: &str) -> Option<Vec<String>> {
    let body = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once(':')?;
        let key: usize = key.trim().parse().ok()?;
        let after = after.trim_start();
        let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let end = after[1..].find(quote)? + 1;
        out.push((key, after[1..end].to_string()));
        rest = after[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    out.sort_by_key(|(k, _)| *k);
    out.iter()
        .enumerate()
        .all(|(i, (k, _))| i == *k)
        .then(|| out.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ultralytics_names_metadata_parses_in_key_order() {
        let names =
            parse_names("{1: 'bicycle', 0: \"person\", 2: 'traffic light', 3: \"o'clock\"}");
        assert_eq!(
            names.unwrap(),
            vec!["person", "bicycle", "traffic light", "o'clock"]
        );
        assert!(
            parse_names("{0: 'a', 2: 'c'}").is_none(),
            "a gap in the keys"
        );
        assert!(parse_names("['a', 'b']").is_none());
        assert!(parse_names("{0: 'unterminated}").is_none());
    }
}
