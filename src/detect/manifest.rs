//! Model manifests (`models/NAME.yaml`): which architecture, which files, which classes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::frame::Resize;

pub use super::Family;

/// What a manifest file says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSpec {
    /// Short name of the model, shown in logs and `vigil models`.
    pub name: String,
    /// Architecture family (`darknet`).
    pub family: Family,
    /// Network description, relative to the manifest.
    pub cfg: String,
    /// The trained parameters.
    pub weights: WeightsSpec,
    /// Class names, one a line, relative to the manifest.
    pub classes: String,
    /// How frames are fitted to the input: `letterbox` (default) or `stretch`.
    #[serde(default)]
    pub resize: Option<Resize>,
    /// Where the files come from and anything a user should know (licence, corrections).
    #[serde(default)]
    pub notes: Option<String>,
}

/// A weights file and how to check it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// A manifest with its paths resolved and its class list read.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub manifest: PathBuf,
    pub name: String,
    pub family: Family,
    pub cfg: PathBuf,
    pub weights: PathBuf,
    /// Checked at load when set (a `--weights` override clears it).
    pub weights_sha256: Option<String>,
    pub classes: Vec<String>,
    pub resize: Resize,
    /// Network input `(width, height)` in pixels.
    pub input: (u32, u32),
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: String,
    pub message: String,
}

impl ModelInfo {
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
        let classes_path = dir.join(&spec.classes);
        let classes: Vec<String> = std::fs::read_to_string(&classes_path)
            .map_err(|e| {
                err(format!(
                    "cannot read class names {}: {e}",
                    classes_path.display()
                ))
            })?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if classes.is_empty() {
            return Err(err(format!("{} lists no classes", classes_path.display())));
        }
        let sha = spec.weights.sha256.as_deref().map(str::to_ascii_lowercase);
        if let Some(sha) = &sha
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(err(format!("weights.sha256 `{sha}` is not 64 hex digits")));
        }
        let cfg = dir.join(&spec.cfg);
        let input = spec.family.input_size(&cfg).map_err(err)?;
        Ok(Self {
            manifest: path.to_path_buf(),
            name: spec.name,
            family: spec.family,
            cfg,
            weights: dir.join(&spec.weights.path),
            weights_sha256: sha,
            classes,
            resize: spec.resize.unwrap_or(Resize::Letterbox),
            input,
        })
    }

    /// Run with another weights file (a user's own training, or synthesized weights): the
    /// manifest's checksum no longer applies.
    pub fn with_weights(mut self, path: &Path) -> Self {
        self.weights = path.to_path_buf();
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
