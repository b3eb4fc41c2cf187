//! The `tflite` model family: a quantized TensorFlow Lite detector ending in
//! `TFLite_Detection_PostProcess` (the SSD exports of the TF Object Detection API, the models
//! NVRs run on CPUs and Coral sticks). The input takes 8-bit pixels as they are, RGB, as those
//! models were trained; boxes come back in normalized `[ymin, xmin, ymax, xmax]`.

use std::path::Path;

use candle_core::Device;

use super::schema::DType;
use super::{Data, TfliteError, TfliteModel};
use crate::detect::head::Candidate;
use crate::detect::manifest::ModelInfo;
use crate::detect::{DetectError, Detector, ModelFamily, check_weights};
use crate::frame::{BoxInModel, ModelInput, Xyxy};

#[derive(Debug)]
pub struct TfliteDetector {
    info: ModelInfo,
    model: TfliteModel,
}

/// The `(width, height)` of a `[1, H, W, 3]` 8-bit input, or why the model cannot be a detector.
fn detector_input(model: &TfliteModel) -> Result<(u32, u32), String> {
    let input = model.input();
    let (h, w) = match input.shape[..] {
        [1, h, w, 3] => (h, w),
        _ => {
            return Err(format!(
                "input `{}` has shape {:?}; expected [1, H, W, 3]",
                input.name, input.shape
            ));
        }
    };
    if !matches!(input.dtype, DType::U8 | DType::I8) {
        return Err(format!(
            "input `{}` is {:?}; vigil's TFLite path runs quantized models (uint8/int8 input)",
            input.name, input.dtype
        ));
    }
    if model.output_defs().count() != 4 {
        return Err("the model must end in TFLite_Detection_PostProcess (4 outputs: boxes, classes, scores, count)".into());
    }
    Ok((w as u32, h as u32))
}

impl ModelFamily for TfliteDetector {
    fn input_size(network: &Path, declared: Option<(u32, u32)>) -> Result<(u32, u32), String> {
        let model =
            TfliteModel::load(network).map_err(|e| format!("{}: {e}", network.display()))?;
        let size = detector_input(&model).map_err(|e| format!("{}: {e}", network.display()))?;
        match declared {
            Some(d) if d != size => Err(format!(
                "{}: the file fixes the input at {}x{}, the manifest says {}x{}",
                network.display(),
                size.0,
                size.1,
                d.0,
                d.1
            )),
            _ => Ok(size),
        }
    }

    fn load(
        info: &ModelInfo,
        device: &Device,
        _precision: crate::detect::Precision,
    ) -> Result<Box<dyn Detector>, DetectError> {
        if !device.is_cpu() {
            // Its integer kernels are CPU code; refusing beats a silent run on the host.
            return Err(DetectError::Device(
                format!("{device:?}"),
                format!(
                    "model {}: the tflite family runs on the CPU only (8-bit integer kernels): use `device: cpu`",
                    info.name
                ),
            ));
        }
        Ok(Box::new(Self::load_concrete(info)?))
    }
}

impl TfliteDetector {
    pub fn load_concrete(info: &ModelInfo) -> Result<Self, DetectError> {
        let err = |cause: TfliteError| DetectError::Tflite {
            model: info.name.clone(),
            cause,
        };
        check_weights(info)?;
        let model = TfliteModel::load(&info.weights).map_err(err)?;
        detector_input(&model).map_err(|m| err(TfliteError::Unsupported(m)))?;
        Ok(Self {
            info: info.clone(),
            model,
        })
    }

    pub fn model(&self) -> &TfliteModel {
        &self.model
    }

    /// The model's input for one prepared frame: 8-bit RGB pixels, NHWC (int8 models: minus 128).
    pub fn input_data(&self, input: &ModelInput) -> Result<Data, DetectError> {
        let want = self.info.input;
        if (input.width, input.height) != want {
            return Err(DetectError::InputSize {
                got: (input.width, input.height),
                want,
            });
        }
        let plane = (want.0 * want.1) as usize;
        let chw = input.host_chw()?;
        let chw: &[f32] = &chw;
        let pixels = (0..plane)
            .flat_map(|i| (0..3).map(move |c| (chw[c * plane + i] * 255.0).round() as u8));
        Ok(match self.model.input().dtype {
            DType::I8 => Data::I8(pixels.map(|p| (p as i16 - 128) as i8).collect()),
            _ => Data::U8(pixels.collect()),
        })
    }

    /// Run on one prepared frame: the post-process op's detections, boxes in model pixels.
    pub fn run(&self, input: &ModelInput) -> Result<Vec<Candidate>, DetectError> {
        let err = |cause: TfliteError| DetectError::Tflite {
            model: self.info.name.clone(),
            cause,
        };
        let outputs = self.model.run(self.input_data(input)?).map_err(err)?;
        let f32s = |i: usize| match outputs.get(i) {
            Some(Data::F32(v)) => Ok(v.as_slice()),
            _ => Err(err(TfliteError::Format(format!(
                "output {i} is not float32"
            )))),
        };
        let (boxes, classes, scores, count) = (f32s(0)?, f32s(1)?, f32s(2)?, f32s(3)?);
        let n = (count.first().copied().unwrap_or(0.0).max(0.0) as usize)
            .min(scores.len())
            .min(classes.len())
            .min(boxes.len() / 4);
        let (w, h) = (self.info.input.0 as f32, self.info.input.1 as f32);
        Ok((0..n)
            .map(|i| {
                let b = &boxes[4 * i..4 * i + 4];
                Candidate {
                    class_id: classes[i].max(0.0) as u32,
                    score: scores[i],
                    box_in_model: BoxInModel(Xyxy {
                        x1: b[1] * w,
                        y1: b[0] * h,
                        x2: b[3] * w,
                        y2: b[2] * h,
                    }),
                    mask: None,
                }
            })
            .collect())
    }
}

impl Detector for TfliteDetector {
    fn infer(
        &self,
        inputs: &[&ModelInput],
        threshold: f32,
    ) -> Result<Vec<Vec<Candidate>>, DetectError> {
        inputs
            .iter()
            .map(|input| {
                Ok(self
                    .run(input)?
                    .into_iter()
                    .filter(|c| c.score >= threshold)
                    .collect())
            })
            .collect()
    }
}
