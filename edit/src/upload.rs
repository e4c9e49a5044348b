//! The images of a request, as the validation sees them: their size and
//! colour type from the header, their pixels only when a rule needs them.
//! [`Uploads`] reads bytes (the API: the format comes from the bytes, never
//! the file name or Content-Type, and nothing is decoded before the header
//! passed the limits); [`Decoded`] wraps images already decoded (the CLI).

use std::io::Cursor;

use bytes::Bytes;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::error::EditError;
use crate::pixels;

/// How large an image or canvas may be (the deployment's setting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanvasLimits {
    /// Each side at most this many pixels.
    pub max_side: u32,
    /// At most this many megapixels.
    pub max_megapixels: f64,
}

impl Default for CanvasLimits {
    fn default() -> Self {
        Self {
            max_side: 4096,
            max_megapixels: 16.0,
        }
    }
}

impl CanvasLimits {
    /// Decoder limits: the side bound, and an allocation bound of 8 bytes a
    /// pixel (16-bit RGBA) of the largest accepted image plus slack.
    pub fn decoder_limits(&self) -> Limits {
        let mut limits = Limits::default();
        limits.max_image_width = Some(self.max_side);
        limits.max_image_height = Some(self.max_side);
        let pixels = (self.max_megapixels.max(0.0) * 1e6) as u64;
        limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(16 << 20));
        limits
    }

    /// Checks a `width`x`height` image or canvas; `what` says which, and
    /// `cause` (when not empty) the field that made it that large.
    pub fn check(
        &self,
        field: &'static str,
        what: &str,
        cause: &str,
        (width, height): (u32, u32),
    ) -> Result<(), EditError> {
        let cause = if cause.is_empty() {
            String::new()
        } else {
            format!(" (from {cause})")
        };
        let max_side = self.max_side;
        if width > max_side || height > max_side {
            return Err(EditError::ImageTooLarge {
                field,
                message: format!(
                    "{what} is {width}x{height}{cause}; each side must be at most {max_side} pixels"
                ),
            });
        }
        let megapixels = width as f64 * height as f64 / 1e6;
        if megapixels > self.max_megapixels {
            return Err(EditError::ImageTooLarge {
                field,
                message: format!(
                    "{what} is {width}x{height}{cause} ({megapixels:.1} MP); at most {} MP is accepted",
                    self.max_megapixels
                ),
            });
        }
        Ok(())
    }
}

/// What an image's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub has_alpha: bool,
}

impl Header {
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

/// The images a validation reads. `image` and `mask` are the fields'
/// headers (`None`: not sent); the pixel checks decode on demand.
pub trait Images {
    fn image(&self) -> Result<Option<Header>, EditError>;
    fn mask(&self) -> Result<Option<Header>, EditError>;
    /// Some mask pixel is 50 % grey or more.
    fn mask_marked(&self) -> Result<bool, EditError>;
    /// Some image pixel is less than 50 % opaque.
    fn alpha_marked(&self) -> Result<bool, EditError>;
}

/// Uploaded files, read from their bytes within `limits`.
pub struct Uploads<'a> {
    pub image: Option<&'a Bytes>,
    pub mask: Option<&'a Bytes>,
    pub limits: CanvasLimits,
}

fn unreadable(field: &'static str, why: String) -> EditError {
    EditError::InvalidImage {
        field,
        message: format!("`{field}` is not a readable PNG, JPEG or WebP image: {why}"),
    }
}

/// A reader whose format is read from the bytes. Reading its header
/// allocates next to nothing (the image crate's default limits apply).
fn reader<'b>(
    field: &'static str,
    bytes: &'b [u8],
) -> Result<ImageReader<Cursor<&'b [u8]>>, EditError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(field, e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => Ok(reader),
        Some(other) => Err(EditError::InvalidImage {
            field,
            message: format!("`{field}` is {other:?}; send PNG, JPEG or WebP"),
        }),
        None => Err(unreadable(field, "unknown format".into())),
    }
}

/// Reads an image's size and colour type from its header, without decoding
/// the pixels (microseconds for any upload, so a decompression bomb is
/// refused by the limits right after, before any pixel is decoded).
pub fn header(field: &'static str, bytes: &[u8]) -> Result<Header, EditError> {
    let decoder = reader(field, bytes)?
        .into_decoder()
        .map_err(|e| unreadable(field, e.to_string()))?;
    let (width, height) = decoder.dimensions();
    Ok(Header {
        width,
        height,
        has_alpha: decoder.color_type().has_alpha(),
    })
}

/// Decodes an upload within `limits` (which bound the allocation too).
pub fn decode(
    field: &'static str,
    bytes: &[u8],
    limits: &CanvasLimits,
) -> Result<DynamicImage, EditError> {
    // A decoder refusing the limits says so: that is the caller's image
    // being too large, not unreadable.
    let refused = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => EditError::ImageTooLarge {
            field,
            message: format!(
                "`{field}` is larger than accepted: each side at most {} pixels, at most {} MP ({e})",
                limits.max_side, limits.max_megapixels
            ),
        },
        other => unreadable(field, other.to_string()),
    };
    let mut reader = reader(field, bytes)?;
    reader.limits(limits.decoder_limits());
    let decoder = reader.into_decoder().map_err(refused)?;
    DynamicImage::from_decoder(decoder).map_err(refused)
}

impl Images for Uploads<'_> {
    fn image(&self) -> Result<Option<Header>, EditError> {
        self.image.map(|b| header("image", b)).transpose()
    }
    fn mask(&self) -> Result<Option<Header>, EditError> {
        self.mask.map(|b| header("mask", b)).transpose()
    }
    fn mask_marked(&self) -> Result<bool, EditError> {
        match self.mask {
            Some(b) => Ok(pixels::any_marked(&decode("mask", b, &self.limits)?, false)),
            None => Ok(false),
        }
    }
    fn alpha_marked(&self) -> Result<bool, EditError> {
        match self.image {
            Some(b) => Ok(pixels::any_marked(&decode("image", b, &self.limits)?, true)),
            None => Ok(false),
        }
    }
}

/// Images already decoded (the CLI reads its files first, to name the
/// path in any decoding error).
pub struct Decoded<'a> {
    pub image: &'a DynamicImage,
    pub mask: Option<&'a DynamicImage>,
}

fn header_of(image: &DynamicImage) -> Header {
    Header {
        width: image.width(),
        height: image.height(),
        has_alpha: image.color().has_alpha(),
    }
}

impl Images for Decoded<'_> {
    fn image(&self) -> Result<Option<Header>, EditError> {
        Ok(Some(header_of(self.image)))
    }
    fn mask(&self) -> Result<Option<Header>, EditError> {
        Ok(self.mask.map(header_of))
    }
    fn mask_marked(&self) -> Result<bool, EditError> {
        Ok(self.mask.is_some_and(|m| pixels::any_marked(m, false)))
    }
    fn alpha_marked(&self) -> Result<bool, EditError> {
        Ok(pixels::any_marked(self.image, true))
    }
}
