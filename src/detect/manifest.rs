//! Model manifests (`models/NAME.yaml`): which architecture, which files, which classes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::frame::Resize;

pub use super::Family;
use super::onnx::decode::Decoder;
use super::onnx::{Normalize, OnnxSettings};

/// What a manifest file says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSpec {
    /// Short name of the model, shown in logs and `vigil models`.
    pub name: String,
    /// Architecture family (`darknet`, `onnx`, `tflite`); inferred from an `onnx:` or `tflite:` file.
    #[serde(default)]
    pub family: Option<Family>,
    /// darknet: network description, relative to the manifest.
    #[serde(default)]
    pub cfg: Option<String>,
    /// darknet: the trained parameters.
    #[serde(default)]
    pub weights: Option<WeightsSpec>,
    /// ONNX: the model file (graph and weights), relative to the manifest.
    #[serde(default)]
    pub onnx: Option<WeightsSpec>,
    /// TensorFlow Lite: the model file, relative to the manifest (`family: tflite`).
    #[serde(default)]
    pub tflite: Option<WeightsSpec>,
    /// ONNX: how the outputs become boxes (`yolov8`, `yolox`, `rtdetr`, …).
    #[serde(default)]
    pub decoder: Option<Decoder>,
    /// ONNX: the input size `WIDTHxHEIGHT` where the file leaves it dynamic.
    #[serde(default)]
    pub input: Option<String>,
    /// ONNX: pixel normalization (default: RGB scaled to [0, 1]).
    #[serde(default)]
    pub normalize: Option<Normalize>,
    /// ONNX `yolov3` decoder: anchors per output, `[w, h, w, h, …]` in input pixels.
    #[serde(default)]
    pub anchors: Option<Vec<Vec<f32>>>,
    /// ONNX `yolox` decoder: grid strides (default 8, 16, 32).
    #[serde(default)]
    pub strides: Option<Vec<usize>>,
    /// Class names, one a line, relative to the manifest (ONNX: may be left out when the model's
    /// metadata carries `names`, as Ultralytics exports do).
    #[serde(default)]
    pub classes: Option<String>,
    /// How frames are fitted to the input: `letterbox` (default) or `stretch`.
    #[serde(default)]
    pub resize: Option<Resize>,
    /// Where the files come from and anything a user should know (licence, corrections).
    #[serde(default)]
    pub notes: Option<String>,
}

/// A weights file and how to check it (or just its path).
#[derive(Debug, Deserialize)]
#[serde(from = "WeightsForm")]
pub struct WeightsSpec {
    /// Path relative to the manifest (`scripts/fetch-assets` puts the real files under `assets/`;
    /// for models whose trained weights vigil does not ship, the official file name: pass your
    /// copy with `vigil detect --weights`).
    pub path: String,
    /// Expected SHA-256 (hex), checked when the model loads; leave out to skip the check.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Where the file is obtained (registry, package, path inside).
    #[serde(default)]
    pub source: Option<String>,
}

/// `weights:`/`onnx:` as a plain path or with its checksum and source.
#[derive(Deserialize)]
#[serde(untagged)]
enum WeightsForm {
    Path(String),
    Full(WeightsFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsFull {
    path: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

impl From<WeightsForm> for WeightsSpec {
    fn from(f: WeightsForm) -> Self {
        match f {
            WeightsForm::Path(path) => Self {
                path,
                sha256: None,
                source: None,
            },
            WeightsForm::Full(WeightsFull {
                path,
                sha256,
                source,
            }) => Self {
                path,
                sha256,
                source,
            },
        }
    }
}

/// A manifest with its paths resolved and its class list read.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub manifest: PathBuf,
    pub name: String,
    pub family: Family,
    /// The network description: the darknet cfg, or the ONNX file.
    pub cfg: PathBuf,
    /// The trained parameters: the darknet weights, or the ONNX file.
    pub weights: PathBuf,
    /// Checked at load when set (a `--weights` override clears it).
    pub weights_sha256: Option<String>,
    pub classes: Vec<String>,
    pub resize: Resize,
    /// Network input `(width, height)` in pixels.
    pub input: (u32, u32),
    /// ONNX models: decoder and normalization.
    pub onnx: Option<OnnxSettings>,
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: String,
    pub message: String,
}

impl ModelInfo {
    /// Whether the model suppresses overlapping boxes itself (torchvision exports, end-to-end
    /// YOLO and RT-DETR, TFLite's detection post-processing): vigil's NMS then keeps what it
    /// gives unless a pipeline asks for an IoU.
    pub fn nms_in_graph(&self) -> bool {
        self.family == super::Family::Tflite
            || self.onnx.as_ref().is_some_and(|o| o.decoder.nms_in_graph())
    }

    /// Read and resolve a manifest. Does not read the weights (that happens at load, with the checksum).
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let err = |message: String| ManifestError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read model manifest: {e}")))?;
        let opts = serde_saphyr::options! { with_snippet: false };
        let spec: ManifestSpec =
            serde_saphyr::from_str_with_options(&text, opts).map_err(|e| err(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let files = Files::of(&spec, dir).map_err(err)?;
        let classes = match &spec.classes {
            Some(c) => read_classes(&dir.join(c)).map_err(err)?,
            None if files.family == Family::Onnx => {
                super::onnx::detector::classes_from_metadata(&files.weights).map_err(err)?
            }
            None => {
                return Err(err(
                    "`classes:` is required (a file of class names, one a line)".into(),
                ));
            }
        };
        let sha = files.sha256.map(|s| s.to_ascii_lowercase());
        if let Some(sha) = &sha
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(err(format!("sha256 `{sha}` is not 64 hex digits")));
        }
        let declared = spec
            .input
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(err)?;
        let input = files.family.input_size(&files.cfg, declared).map_err(err)?;
        let onnx = (files.family == Family::Onnx).then(|| OnnxSettings {
            decoder: spec.decoder.unwrap_or(Decoder::Raw),
            normalize: spec.normalize.clone().unwrap_or_default(),
            anchors: spec.anchors.clone().unwrap_or_default(),
            strides: spec.strides.clone().unwrap_or_else(|| vec![8, 16, 32]),
        });
        Ok(Self {
            manifest: path.to_path_buf(),
            name: spec.name,
            family: files.family,
            cfg: files.cfg,
            weights: files.weights,
            weights_sha256: sha,
            classes,
            resize: spec.resize.unwrap_or(Resize::Letterbox),
            input,
            onnx,
        })
    }

    /// Run with another weights file (a user's own training, or synthesized weights): the
    /// manifest's checksum no longer applies.
    pub fn with_weights(mut self, path: &Path) -> Self {
        self.weights = path.to_path_buf();
        if matches!(self.family, Family::Onnx | Family::Tflite) {
            self.cfg = path.to_path_buf();
        }
        self.weights_sha256 = None;
        self
    }

    /// The class id of `name`, if the model has it.
    pub fn class_id(&self, name: &str) -> Option<u32> {
        self.classes
            .iter()
            .position(|c| c == name)
            .map(|i| i as u32)
    }
}

/// The family and files a manifest names, checked for a consistent combination.
struct Files {
    family: Family,
    cfg: PathBuf,
    weights: PathBuf,
    sha256: Option<String>,
}

impl Files {
    fn of(spec: &ManifestSpec, dir: &Path) -> Result<Self, String> {
        let family = spec.family.unwrap_or(if spec.onnx.is_some() {
            Family::Onnx
        } else if spec.tflite.is_some() {
            Family::Tflite
        } else {
            Family::Darknet
        });
        match family {
            Family::Darknet => {
                let cfg = spec.cfg.as_ref().ok_or("a darknet model needs `cfg:`")?;
                let w = spec
                    .weights
                    .as_ref()
                    .ok_or("a darknet model needs `weights:`")?;
                if spec.onnx.is_some() || spec.decoder.is_some() || spec.tflite.is_some() {
                    return Err(
                        "`onnx:`/`decoder:` are for `family: onnx`, `tflite:` for `family: tflite`"
                            .into(),
                    );
                }
                Ok(Self {
                    family,
                    cfg: dir.join(cfg),
                    weights: dir.join(&w.path),
                    sha256: w.sha256.clone(),
                })
            }
            Family::Onnx => {
                let o = spec
                    .onnx
                    .as_ref()
                    .ok_or("an ONNX model needs `onnx: FILE.onnx`")?;
                if spec.cfg.is_some() || spec.weights.is_some() {
                    return Err("an ONNX model takes `onnx:`, not `cfg:`/`weights:`".into());
                }
                if spec.decoder.is_none() {
                    return Err(format!(
                        "an ONNX model needs `decoder:` (one of {})",
                        "yolov3, yolov5, yolov6, yolov7, yolov8, yolox, damo_yolo, rtdetr, nms_included, torchvision, raw"
                    ));
                }
                Ok(Self {
                    family,
                    cfg: dir.join(&o.path),
                    weights: dir.join(&o.path),
                    sha256: o.sha256.clone(),
                })
            }
            Family::Tflite => {
                let t = spec
                    .tflite
                    .as_ref()
                    .ok_or("a TensorFlow Lite model needs `tflite: FILE.tflite`")?;
                if spec.cfg.is_some()
                    || spec.weights.is_some()
                    || spec.onnx.is_some()
                    || spec.decoder.is_some()
                {
                    return Err("a TensorFlow Lite model takes `tflite:` only (its decoding is the graph's TFLite_Detection_PostProcess)".into());
                }
                Ok(Self {
                    family,
                    cfg: dir.join(&t.path),
                    weights: dir.join(&t.path),
                    sha256: t.sha256.clone(),
                })
            }
        }
    }
}

/// Class names, one a line; or, when every line is `ID  name` (the TFLite/Coral label files,
/// whose ids have gaps), each name at its id, the gaps named `#ID`.
fn read_classes(path: &Path) -> Result<Vec<String>, String> {
    let lines: Vec<String> = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read class names {}: {e}", path.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if lines.is_empty() {
        return Err(format!("{} lists no classes", path.display()));
    }
    let numbered: Option<Vec<(usize, &str)>> = lines
        .iter()
        .map(|l| {
            let (id, name) = l.split_once(char::is_whitespace)?;
            Some((id.parse().ok().filter(|i| *i < 100_000)?, name.trim()))
        })
        .collect();
    let Some(numbered) = numbered else {
        return Ok(lines);
    };
    let len = numbered.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
    let mut classes: Vec<String> = (0..len).map(|i| format!("#{i}")).collect();
    for (id, name) in numbered {
        classes[id] = name.to_string();
    }
    Ok(classes)
}

/// `640x480` → `(640, 480)`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("input `{s}`: expected WIDTHxHEIGHT, e.g. 640x640");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h): (u32, u32) = (
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    if w == 0 || h == 0 || w > 8192 || h > 8192 {
        return Err(bad());
    }
    Ok((w, h))
}
