//! Still images in and out (OpenCV imgcodecs), for `vigil detect` and tests.

use std::path::Path;

use opencv::imgcodecs;
use opencv::prelude::*;

use crate::frame::Image;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ImageError {
    pub path: String,
    pub message: String,
}

/// Read any image OpenCV decodes, as BGR.
pub fn read(path: &Path) -> Result<Image, ImageError> {
    let err = |message: String| ImageError {
        path: path.display().to_string(),
        message,
    };
    if !path.is_file() {
        return Err(err("no such file".into()));
    }
    let mat = imgcodecs::imread(path.as_os_str(), imgcodecs::IMREAD_COLOR)
        .map_err(|e| err(e.to_string()))?;
    if mat.empty() {
        return Err(err("not an image OpenCV can decode".into()));
    }
    let bgr = mat.data_bytes().map_err(|e| err(e.to_string()))?.to_vec();
    Ok(Image {
        width: mat.cols() as u32,
        height: mat.rows() as u32,
        bgr,
    })
}

/// Write `image` in the format its extension names (`.png`, `.jpg`, …).
pub fn write(path: &Path, image: &Image) -> Result<(), ImageError> {
    let err = |message: String| ImageError {
        path: path.display().to_string(),
        message,
    };
    let mat = opencv::core::Mat::new_rows_cols_with_bytes::<opencv::core::Vec3b>(
        image.height as i32,
        image.width as i32,
        &image.bgr,
    )
    .map_err(|e| err(e.to_string()))?;
    let written = imgcodecs::imwrite(path.as_os_str(), &mat, &opencv::core::Vector::new())
        .map_err(|e| err(e.to_string()))?;
    if written {
        Ok(())
    } else {
        Err(err("OpenCV could not write it (unknown extension?)".into()))
    }
}
