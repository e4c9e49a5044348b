//! Images in and out of the engine: decoding with limits, the pipeline's
//! pre-processing (as diffusers' `VaeImageProcessor` does it) and PNG output.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::TensorData;
pub use image::{GrayImage, Rgb, RgbImage};
use image::{ImageReader, Limits};

use byteedit_edit::image_file;
use byteedit_edit::pixels::{is_masked, luma};

use crate::error::{ModelError, Result};

/// Largest side accepted on input, in pixels: far above what the models are
/// trained for, low enough that a hostile header cannot exhaust memory.
pub const MAX_SIDE: u32 = 8192;
/// Most pixels accepted on input by default (64 MP).
pub const MAX_PIXELS: u64 = 64_000_000;

/// How large an image may be before its pixels are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_side: u32,
    pub max_pixels: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_side: MAX_SIDE,
            max_pixels: MAX_PIXELS,
        }
    }
}

impl Bounds {
    /// The decoder's own limits: sides, and an allocation bound of 8 bytes a
    /// pixel (16-bit RGBA, the widest layout decoded) plus slack for the
    /// decoder's buffers, so no header can make it allocate more.
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        limits.max_image_width = Some(self.max_side);
        limits.max_image_height = Some(self.max_side);
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(16 << 20));
        limits
    }
}

/// Decodes an image file of any supported format (detected from its bytes).
pub fn read_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes image bytes within the default [`Bounds`]; `name` is used in
/// error messages.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<image::DynamicImage> {
    decode_image_within(bytes, name, Bounds::default())
}

/// Decodes image bytes whose format (PNG, JPEG, WebP) is read from the bytes
/// themselves. The header is read by the edit crate's own reader (not the
/// decoders', which misread some sizes) and checked against `bounds` before
/// any pixel is decoded, so a decompression bomb (a tiny file declaring a
/// huge canvas) costs microseconds and no memory. A file that ends before
/// its image does is refused (decoders would fill the rest in grey); bytes
/// after the image are not read.
pub fn decode_image_within(
    bytes: &[u8],
    name: &str,
    bounds: Bounds,
) -> Result<image::DynamicImage> {
    let bad = |message: String| ModelError::Image {
        path: name.to_string(),
        message,
    };
    let info = image_file::header(bytes).map_err(|e| bad(e.to_string()))?;
    let (width, height) = (info.width, info.height);
    if width > bounds.max_side || height > bounds.max_side {
        return Err(bad(format!(
            "{width}x{height} has a side above the {} pixels allowed",
            bounds.max_side
        )));
    }
    if width as u64 * height as u64 > bounds.max_pixels {
        return Err(bad(format!(
            "{width}x{height} is more than the {} pixels allowed",
            bounds.max_pixels
        )));
    }
    let len = image_file::image_len(bytes).map_err(|e| bad(e.to_string()))?;
    let mut reader = ImageReader::with_format(
        std::io::Cursor::new(&bytes[..len]),
        info.format.image_format(),
    );
    reader.limits(bounds.limits());
    let image = reader.decode().map_err(|e| bad(e.to_string()))?;
    if (image.width(), image.height()) != (width, height) {
        return Err(bad(format!(
            "its header says {width}x{height} but it decodes to {}x{}",
            image.width(),
            image.height()
        )));
    }
    Ok(image)
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
        image::Luma([luma(rgb.get_pixel(x, y).0)])
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
        .map(|p| if is_masked(p.0[0]) { 1.0 } else { 0.0 })
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
/// rounding as `numpy_to_pil` does. A buffer of the wrong length is an
/// error (never a black picture).
pub fn to_rgb8(pixels: &[f32], width: u32, height: u32) -> Result<RgbImage> {
    let bytes = pixels
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    RgbImage::from_raw(width, height, bytes).ok_or_else(|| {
        ModelError::InvalidInput(format!(
            "{} values cannot be a {width}x{height} RGB image ({} expected)",
            pixels.len(),
            width as u64 * height as u64 * 3
        ))
    })
}

/// The largest difference of any channel of any pixel, in 8-bit levels (how
/// references are compared: "within 1 level"). Images of different sizes
/// compare only their common bytes: check the sizes first.
pub fn max_level_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
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

/// A PNG whose header declares `w`x`h` (8-bit grey) with almost no pixel
/// data: a decompression bomb's first bytes. For the tests of the decoding
/// limits here, in the API and in the service.
#[doc(hidden)]
pub fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        let mut body = kind.to_vec();
        body.extend(data);
        let mut crc = !0u32;
        for &b in &body {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(body);
        out.extend((!crc).to_be_bytes());
    }
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    // A zlib stream that inflates to a few bytes, where a real bomb's would
    // inflate to the whole declared canvas.
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
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
    fn a_buffer_of_the_wrong_size_is_an_error_not_a_black_image() {
        let err = to_rgb8(&[0.5; 11], 2, 2).unwrap_err().to_string();
        assert!(err.contains("11 values") && err.contains("2x2"), "{err}");
        assert_eq!(
            to_rgb8(&[1.0; 12], 2, 2).unwrap().get_pixel(1, 1).0,
            [255; 3]
        );
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
    fn a_header_declaring_a_huge_canvas_is_refused_before_decoding() {
        let bomb = png_header(100_000, 100_000);
        assert!(bomb.len() < 200, "{} bytes", bomb.len());
        let err = decode_image(&bomb, "bomb").unwrap_err().to_string();
        assert!(err.contains("bomb"), "{err}");
        // Within the side limit but above the pixel bound.
        let bounds = Bounds {
            max_side: 8192,
            max_pixels: 1_000_000,
        };
        let wide = png_header(2000, 1000);
        let err = decode_image_within(&wide, "wide", bounds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2000x1000"), "{err}");
    }

    #[test]
    fn the_format_comes_from_the_bytes() {
        let mut png = Vec::new();
        image::DynamicImage::ImageLuma8(GrayImage::new(3, 2))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode_image(&png, "x.jpg").unwrap().width(), 3);
    }

    fn encoded(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut out), format)
            .unwrap();
        out
    }

    #[test]
    fn a_truncated_file_is_refused_and_bytes_after_the_image_are_ignored() {
        let image = image::DynamicImage::ImageRgb8(RgbImage::from_fn(32, 24, |x, y| {
            Rgb([x as u8 * 8, y as u8 * 10, 128])
        }));
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Jpeg,
            image::ImageFormat::WebP,
        ] {
            let bytes = encoded(&image, format);
            // zune-jpeg would decode the JPEG's first half and fill the rest.
            let err = decode_image(&bytes[..bytes.len() / 2], "cut")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("cut") && err.contains("truncated"),
                "{format:?}: {err}"
            );
            let mut junk = bytes.clone();
            junk.extend([0xAB; 1000]);
            let decoded = decode_image(&junk, "junk").unwrap();
            assert_eq!((decoded.width(), decoded.height()), (32, 24), "{format:?}");
        }
    }

    #[test]
    fn the_bounds_hold_for_sizes_the_decoders_misread() {
        // A lossless WebP header declaring 16384x16384, which image-webp
        // 0.2.4 reads as 0x0.
        let webp = b"\x52\x49\x46\x46\x18\x00\x00\x00\x57\x45\x42\x50\x56\x50\x38\x4c\x0c\x00\x00\x00\x2f\xff\xff\xff\x1f\x28\x60\x15\x4a\xd1\xff\x00";
        let err = decode_image(webp, "webp").unwrap_err().to_string();
        assert!(err.contains("16384x16384"), "{err}");
    }

    #[test]
    fn garbage_bytes_are_a_clear_error() {
        let err = decode_image(b"not an image", "upload").unwrap_err();
        assert!(err.to_string().contains("upload"), "{err}");
    }
}
