//! Fine-tuning data: images with captions, from JSON Lines
//! (`{"image", "caption"}`, optionally `"mask"` — used as it is — or
//! `"instance_mask"` — masks are drawn around the instance; paths relative
//! to the file) or from a folder of images, each with its caption in a
//! `.txt` of the same name (none: an empty caption, as unprompted
//! outpainting has). Images are resized (shorter side) and centre-cropped
//! to the training resolution once, at load.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, RgbImage};
use serde::Deserialize;

use crate::error::{Result, TrainError};

/// One training image at the training resolution.
#[derive(Debug, Clone)]
pub struct Example {
    pub image: RgbImage,
    pub caption: String,
    /// A mask to use as it is (white = repaint).
    pub mask: Option<GrayImage>,
    /// An object's mask to draw editing masks around.
    pub instance_mask: Option<GrayImage>,
    /// The file it came from, for messages.
    pub source: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    image: String,
    #[serde(default)]
    caption: String,
    mask: Option<String>,
    instance_mask: Option<String>,
}

const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Reads the dataset at `path` (a `.jsonl` file or a folder) at `size`×`size`.
pub fn read_dataset(path: &Path, size: u32) -> Result<Vec<Example>> {
    let examples = if path.is_dir() {
        read_folder(path, size)?
    } else {
        read_lines(path, size)?
    };
    if examples.is_empty() {
        return Err(TrainError::NoData(format!(
            "{}: no images to fine-tune on (the dataset is empty)",
            path.display()
        )));
    }
    Ok(examples)
}

fn read_lines(path: &Path, size: u32) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Input {
        path: path.to_owned(),
        message: format!("cannot read the data file: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, raw) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = |message: String| TrainError::Input {
            path: path.to_owned(),
            message: format!("line {}: {message}", n + 1),
        };
        let line: Line = serde_json::from_str(raw).map_err(|e| {
            at(format!(
                "fine-tuning lines are {{\"image\", \"caption\"}} with an optional \"mask\" or \"instance_mask\": {e}"
            ))
        })?;
        if line.mask.is_some() && line.instance_mask.is_some() {
            return Err(at("give \"mask\" or \"instance_mask\", not both".into()));
        }
        let image_path = base.join(&line.image);
        let original = open(&image_path)?;
        let dims = (original.width(), original.height());
        let read_mask = |name: &str| -> Result<GrayImage> {
            let mask_path = base.join(name);
            let mask = open(&mask_path)?;
            if (mask.width(), mask.height()) != dims {
                return Err(at(format!(
                    "the mask `{name}` is {}x{} but its image is {}x{}",
                    mask.width(),
                    mask.height(),
                    dims.0,
                    dims.1
                )));
            }
            Ok(fit_mask(&mask.to_luma8(), size))
        };
        let mask = line.mask.as_deref().map(read_mask).transpose()?;
        let instance_mask = line.instance_mask.as_deref().map(read_mask).transpose()?;
        out.push(Example {
            image: fit_image(&original, size),
            caption: line.caption,
            mask,
            instance_mask,
            source: image_path,
        });
    }
    Ok(out)
}

fn read_folder(dir: &Path, size: u32) -> Result<Vec<Example>> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::Input {
        path: dir.to_owned(),
        message: format!("cannot list the folder: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let caption = std::fs::read_to_string(path.with_extension("txt"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_default();
            Ok(Example {
                image: fit_image(&open(&path)?, size),
                caption,
                mask: None,
                instance_mask: None,
                source: path,
            })
        })
        .collect()
}

fn open(path: &Path) -> Result<DynamicImage> {
    image::open(path).map_err(|e| TrainError::Input {
        path: path.to_owned(),
        message: format!("cannot read the image: {e}"),
    })
}

/// The crop box of a centre crop to a square after resizing the shorter side.
fn square_crop(width: u32, height: u32, size: u32) -> (u32, u32, u32, u32) {
    let scale = size as f64 / width.min(height) as f64;
    let (rw, rh) = (
        ((width as f64 * scale).round() as u32).max(size),
        ((height as f64 * scale).round() as u32).max(size),
    );
    (rw, rh, (rw - size) / 2, (rh - size) / 2)
}

pub fn fit_image(image: &DynamicImage, size: u32) -> RgbImage {
    let (rw, rh, x, y) = square_crop(image.width(), image.height(), size);
    let resized = image.resize_exact(rw, rh, FilterType::Triangle).to_rgb8();
    image::imageops::crop_imm(&resized, x, y, size, size).to_image()
}

/// Masks are resized with nearest neighbours: they stay binary.
pub fn fit_mask(mask: &GrayImage, size: u32) -> GrayImage {
    let (rw, rh, x, y) = square_crop(mask.width(), mask.height(), size);
    let resized = image::imageops::resize(mask, rw, rh, FilterType::Nearest);
    image::imageops::crop_imm(&resized, x, y, size, size).to_image()
}
