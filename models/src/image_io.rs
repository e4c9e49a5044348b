//! Images in and out of the engine: decoding with limits, the pipeline's
//! pre-processing (as diffusers' `VaeImageProcessor` does it) and PNG output.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::TensorData;
pub use image::{GrayImage, Rgb, RgbImage};
use image::{ImageReader, Limits};

use crate::error::{ModelError, Result};

/// Largest side accepted on input, in pixels: far above what the models are
/// trained for, low enough that a hostile header cannot exhaust memory.
pub const MAX_SIDE: u32 = 8192;

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    limits
}

/// Decodes an image file of any supported format (detected from its bytes).
pub fn read_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes image bytes; `name` is used in error messages.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<image::DynamicImage> {
    let bad = |message: String| ModelError::Image {
        path: name.to_string(),
        message,
    };
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    if reader.format().is_none() {
        return Err(bad("unknown format: use PNG, JPEG or WebP".into()));
    }
    reader.limits(limits());
    reader.decode().map_err(|e| bad(e.to_string()))
}

/// RGB, alpha dropped, as PIL's `convert("RGB")`.
pub fn to_rgb(image: &image::DynamicImage) -> RgbImage {
    match image {
        image::DynamicImage::ImageRgb8(rgb) => rgb.clone(),
        other => other.to_rgb8(),
    }
}

/// Greyscale with PIL's `convert("L")` weights (ITU-R 601-2, rounded), so a
/// coloured mask binarises exactly as it would in diffusers.
pub fn to_luma(image: &image::DynamicImage) -> GrayImage {
    // Grey stays grey under these weights; skipping the RGB round trip saves
    // most of the time on large masks.
    if let image::DynamicImage::ImageLuma8(grey) = image {
        return grey.clone();
    }
    let rgb = image.to_rgb8();
    GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        let l = (r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16;
        image::Luma([l as u8])
    })
}

/// Without a mask file, transparent pixels mark the region to edit (as in
/// other editing APIs): the mask is the inverted alpha. `None` for images
/// without an alpha channel.
pub fn alpha_mask(image: &image::DynamicImage) -> Option<GrayImage> {
    if !image.color().has_alpha() {
        return None;
    }
    let rgba = image.to_rgba8();
    Some(GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        image::Luma([255 - rgba.get_pixel(x, y).0[3]])
    }))
}

/// `[1, 3, H, W]` in [-1, 1].
pub fn image_to_tensor<B: Backend>(image: &RgbImage, device: &B::Device) -> Tensor<B, 4> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut chw = vec![0f32; 3 * h * w];
    for (x, y, p) in image.enumerate_pixels() {
        for c in 0..3 {
            chw[c * h * w + y as usize * w + x as usize] = 2.0 * (p.0[c] as f32 / 255.0) - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(chw, [1, 3, h, w]), device)
}

/// The mask binarised at 0.5: 1 where the model should paint, row-major.
pub fn binarize_mask(mask: &GrayImage) -> Vec<f32> {
    mask.pixels()
        .map(|p| {
            if p.0[0] as f32 / 255.0 < 0.5 {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

/// Nearest-neighbour resize of a row-major plane, with PyTorch's
/// `F.interpolate(mode="nearest")` index rule: `src = floor(dst * in / out)`.
pub fn resize_nearest(plane: &[f32], (w, h): (usize, usize), (ow, oh): (usize, usize)) -> Vec<f32> {
    let (sx, sy) = (w as f32 / ow as f32, h as f32 / oh as f32);
    let mut out = Vec::with_capacity(ow * oh);
    for y in 0..oh {
        let src_y = ((y as f32 * sy).floor() as usize).min(h - 1);
        for x in 0..ow {
            let src_x = ((x as f32 * sx).floor() as usize).min(w - 1);
            out.push(plane[src_y * w + src_x]);
        }
    }
    out
}

/// HWC floats in [0, 1] (as diffusers' `output_type="np"`) to 8-bit RGB,
/// rounding as `numpy_to_pil` does.
pub fn to_rgb8(pixels: &[f32], width: u32, height: u32) -> RgbImage {
    let bytes = pixels
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    RgbImage::from_raw(width, height, bytes).unwrap_or_else(|| RgbImage::new(width, height))
}

/// Writes a PNG (the folder must exist).
pub fn write_png(image: &RgbImage, path: &Path) -> Result<()> {
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| match e {
            image::ImageError::IoError(io) => ModelError::io(path, io),
            other => ModelError::ImageWrite {
                path: path.display().to_string(),
                message: other.to_string(),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_downsample_takes_top_left_of_each_cell() {
        let plane: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(
            resize_nearest(&plane, (4, 4), (2, 2)),
            vec![0.0, 2.0, 8.0, 10.0]
        );
    }

    #[test]
    fn mask_binarises_at_half() {
        let mask = GrayImage::from_raw(3, 1, vec![127, 128, 255]).unwrap();
        assert_eq!(binarize_mask(&mask), vec![0.0, 1.0, 1.0]);
    }

    #[test]
    fn luma_matches_pil_weights() {
        let img =
            image::DynamicImage::ImageRgb8(RgbImage::from_raw(1, 1, vec![255, 0, 0]).unwrap());
        assert_eq!(to_luma(&img).get_pixel(0, 0).0[0], 76);
    }

    #[test]
    fn grey_masks_read_as_their_rgb_conversion_would() {
        let grey = GrayImage::from_fn(256, 1, |x, _| image::Luma([x as u8]));
        let via_rgb = to_luma(&image::DynamicImage::ImageRgb8(
            image::DynamicImage::ImageLuma8(grey.clone()).to_rgb8(),
        ));
        assert_eq!(
            to_luma(&image::DynamicImage::ImageLuma8(grey.clone())),
            via_rgb
        );
        assert_eq!(via_rgb, grey);
    }

    #[test]
    fn garbage_bytes_are_a_clear_error() {
        let err = decode_image(b"not an image", "upload").unwrap_err();
        assert!(err.to_string().contains("upload"), "{err}");
    }
}
