//! The images of a request, as the validation sees them: their size and
//! colour type from the header, then the whole file once the size passed.
//! [`Uploads`] reads bytes (the API: the format comes from the bytes, never
//! the file name or Content-Type; the header is read by our own reader and
//! nothing is decoded before it passed the limits; each file is then walked
//! to its end and decoded once); [`Decoded`] wraps images already decoded
//! (the CLI).

use std::cell::OnceCell;
use std::io::Cursor;

use bytes::Bytes;
use image::{DynamicImage, ImageReader, Limits};

use crate::error::EditError;
use crate::image_file::{self, FileError};
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
    /// Every file is read whole (its structure to its end, its pixels), so
    /// that a truncated or corrupt file is refused now rather than failing
    /// its job. Called once the headers passed the limits.
    fn complete(&self) -> Result<(), EditError> {
        Ok(())
    }
}

/// Uploaded files, read from their bytes within `limits`. Each file is
/// decoded at most once; only what the rules need of its pixels is kept.
pub struct Uploads<'a> {
    image: Option<Upload<'a>>,
    mask: Option<Upload<'a>>,
    limits: CanvasLimits,
}

/// One uploaded file, and what reading it whole found (once read).
struct Upload<'a> {
    field: &'static str,
    bytes: &'a Bytes,
    /// Marked pixels are transparent ones (the image), else white (a mask).
    from_alpha: bool,
    read: OnceCell<Result<Read, EditError>>,
}

/// What a file read whole is to the rules.
#[derive(Debug, Clone, Copy)]
struct Read {
    /// The image's length: bytes after it are not the image's.
    len: usize,
    marked: bool,
}

impl Upload<'_> {
    fn read(&self, limits: &CanvasLimits) -> Result<Read, EditError> {
        self.read
            .get_or_init(|| {
                let whole = decode(self.field, self.bytes, limits)?;
                let marked = if self.from_alpha {
                    whole.image.color().has_alpha() && pixels::any_marked(&whole.image, true)
                } else {
                    pixels::any_marked(&whole.image, false)
                };
                Ok(Read {
                    len: whole.len,
                    marked,
                })
            })
            .clone()
    }
}

impl<'a> Uploads<'a> {
    pub fn new(image: Option<&'a Bytes>, mask: Option<&'a Bytes>, limits: CanvasLimits) -> Self {
        let upload = |field, bytes, from_alpha| Upload {
            field,
            bytes,
            from_alpha,
            read: OnceCell::new(),
        };
        Self {
            image: image.map(|b| upload("image", b, true)),
            mask: mask.map(|b| upload("mask", b, false)),
            limits,
        }
    }

    /// The files as they are to be stored: each cut at its image's end, so
    /// bytes sent after the image are not kept (nor read by a worker).
    pub fn stored(&self) -> Result<(Option<Bytes>, Option<Bytes>), EditError> {
        let cut = |upload: &Option<Upload<'_>>| -> Result<Option<Bytes>, EditError> {
            upload
                .as_ref()
                .map(|u| Ok(u.bytes.slice(..u.read(&self.limits)?.len)))
                .transpose()
        };
        Ok((cut(&self.image)?, cut(&self.mask)?))
    }
}

fn unreadable(field: &'static str, why: String) -> EditError {
    EditError::InvalidImage {
        field,
        message: format!("`{field}` is not a readable PNG, JPEG or WebP image: {why}"),
    }
}

/// A file that cannot be read, as the caller's error.
fn file_error(field: &'static str, bytes: &[u8], error: FileError) -> EditError {
    match error {
        // Name what it is when it is another format.
        FileError::UnknownFormat => match image::guess_format(bytes) {
            Ok(other) => EditError::InvalidImage {
                field,
                message: format!("`{field}` is {other:?}; send PNG, JPEG or WebP"),
            },
            Err(_) => unreadable(field, "unknown format".into()),
        },
        FileError::Malformed(why) => unreadable(field, why),
        FileError::Truncated(why) => EditError::InvalidImage {
            field,
            message: format!("`{field}` looks truncated: {why}; upload the complete file"),
        },
    }
}

/// Reads an image's format, size and transparency from its header, by our
/// own reader (see [`image_file`]): no decoder sees the file before its
/// size passed the limits, so a decompression bomb costs microseconds.
fn info(field: &'static str, bytes: &[u8]) -> Result<image_file::Info, EditError> {
    image_file::header(bytes).map_err(|e| file_error(field, bytes, e))
}

/// Reads an image's size and colour type from its header, without decoding
/// the pixels.
pub fn header(field: &'static str, bytes: &[u8]) -> Result<Header, EditError> {
    let info = info(field, bytes)?;
    Ok(Header {
        width: info.width,
        height: info.height,
        has_alpha: info.has_alpha,
    })
}

/// An upload read whole.
pub struct Whole {
    pub image: DynamicImage,
    /// The image's length in the bytes (what follows is not the image's).
    pub len: usize,
}

/// Reads an upload whole within `limits`: the header's size against the
/// limits first, then the structure to the image's end (a truncated file is
/// refused: decoders would fill it in), then the pixels, with the decoder's
/// own limits bounding the allocation.
pub fn decode(
    field: &'static str,
    bytes: &[u8],
    limits: &CanvasLimits,
) -> Result<Whole, EditError> {
    let info = info(field, bytes)?;
    let size = (info.width, info.height);
    limits.check(field, &format!("`{field}`"), "", size)?;
    let len = image_file::image_len(bytes).map_err(|e| file_error(field, bytes, e))?;
    let mut reader =
        ImageReader::with_format(Cursor::new(&bytes[..len]), info.format.image_format());
    reader.limits(limits.decoder_limits());
    let image = reader.decode().map_err(|e| match e {
        // Within the limits by its header, but not in memory: still the
        // caller's image being too large.
        image::ImageError::Limits(_) => EditError::ImageTooLarge {
            field,
            message: format!(
                "`{field}` needs more memory to decode than accepted: each side at most {} pixels, at most {} MP ({e})",
                limits.max_side, limits.max_megapixels
            ),
        },
        other => unreadable(field, other.to_string()),
    })?;
    // Our reader and the decoder must agree on the size the limits passed.
    if (image.width(), image.height()) != size {
        return Err(unreadable(
            field,
            format!(
                "its header says {}x{} but it decodes to {}x{}",
                size.0,
                size.1,
                image.width(),
                image.height()
            ),
        ));
    }
    Ok(Whole { image, len })
}

impl Images for Uploads<'_> {
    fn image(&self) -> Result<Option<Header>, EditError> {
        self.image
            .as_ref()
            .map(|u| header(u.field, u.bytes))
            .transpose()
    }
    fn mask(&self) -> Result<Option<Header>, EditError> {
        self.mask
            .as_ref()
            .map(|u| header(u.field, u.bytes))
            .transpose()
    }
    fn mask_marked(&self) -> Result<bool, EditError> {
        match &self.mask {
            Some(u) => Ok(u.read(&self.limits)?.marked),
            None => Ok(false),
        }
    }
    fn alpha_marked(&self) -> Result<bool, EditError> {
        match &self.image {
            Some(u) => Ok(u.read(&self.limits)?.marked),
            None => Ok(false),
        }
    }
    fn complete(&self) -> Result<(), EditError> {
        for upload in [&self.image, &self.mask].into_iter().flatten() {
            upload.read(&self.limits)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_file::fixtures::*;
    use crate::{Context, EditForm, ModelInfo, ValidEdit, validate};

    fn model() -> ModelInfo {
        ModelInfo {
            name: "tiny".into(),
            vae_scale_factor: 8,
            default_steps: 20,
            max_steps: 100,
            default_guidance_scale: 7.5,
            default_scheduler: "ddim".into(),
            schedulers: vec!["ddim".into()],
            native_size: 64,
            erase_negative_prompt: String::new(),
        }
    }

    /// Validates an upload as the API does (`mask`: a mask file to send).
    fn submit(
        image: &[u8],
        mask: Option<&[u8]>,
        fields: &[(&str, &str)],
        limits: CanvasLimits,
    ) -> Result<(ValidEdit, Option<Bytes>), EditError> {
        let mut form = EditForm::default();
        for (name, value) in fields {
            if let Some(slot) = form.text_field_mut(name) {
                *slot = Some(value.to_string());
            }
        }
        let image = Bytes::copy_from_slice(image);
        let mask = mask.map(Bytes::copy_from_slice);
        let uploads = Uploads::new(Some(&image), mask.as_ref(), limits);
        let model = model();
        let edit = validate(&form, &uploads, &Context::form(&model, limits))?;
        Ok((edit, uploads.stored()?.0))
    }

    const OUTPAINT: &[(&str, &str)] = &[("task", "outpaint"), ("extend_right", "8")];

    fn outpaint(image: &[u8]) -> Result<(ValidEdit, Option<Bytes>), EditError> {
        submit(image, None, OUTPAINT, CanvasLimits::default())
    }

    fn encoded(image: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), format).unwrap();
        out
    }

    fn photo() -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([x as u8 * 5, y as u8 * 6, 90])
        }))
    }

    #[test]
    fn header_sizes_are_read_as_written_and_every_one_too_large_gets_the_limits_message() {
        let jpeg_max = jpeg(&[(0xC0, &sof(65535, 65535))]);
        let cases: [(&str, Vec<u8>, (u32, u32)); 10] = [
            ("lossless WebP 16384", ATTACK_WEBP.to_vec(), (16384, 16384)),
            ("lossless WebP 5000", vp8l(5000, 5000, true), (5000, 5000)),
            (
                "lossless WebP 16384 wide",
                vp8l(16384, 1, false),
                (16384, 1),
            ),
            ("lossy WebP", vp8(0x3FFF, 0x3FFF), (16383, 16383)),
            (
                "extended WebP 2^24",
                vp8x(1 << 24, 1 << 24, 0x10),
                (1 << 24, 1 << 24),
            ),
            (
                "PNG 2^30",
                png(1 << 30, 1 << 30, 2, &[]),
                (1 << 30, 1 << 30),
            ),
            (
                "PNG 2^31-1",
                png((1 << 31) - 1, 1, 2, &[]),
                ((1 << 31) - 1, 1),
            ),
            (
                "PNG 67108864",
                png(1 << 26, 1 << 26, 2, &[]),
                (1 << 26, 1 << 26),
            ),
            ("JPEG 65535", jpeg_max, (65535, 65535)),
            // Each side within 4096, the area not.
            ("PNG 16.8 MP", png(4096, 4096, 0, &[]), (4096, 4096)),
        ];
        let limits = CanvasLimits::default();
        for (what, bytes, size) in cases {
            let err = outpaint(&bytes).unwrap_err();
            // One cause, one code and one sentence: the limits' own.
            let expected = limits.check("image", "`image`", "", size).unwrap_err();
            assert_eq!(err, expected, "{what}");
            assert_eq!(err.code(), "image_too_large", "{what}");
            let (w, h) = size;
            assert!(
                err.to_string().contains(&format!("`image` is {w}x{h}")),
                "{what}: {err}"
            );
            // A mask as large is refused as the mask.
            let small = encoded(&photo(), image::ImageFormat::Png);
            let err = submit(&small, Some(&bytes), OUTPAINT, limits).unwrap_err();
            let expected = limits.check("mask", "`mask`", "", size).unwrap_err();
            assert_eq!(err, expected, "{what}");
        }
        // Sides of 0, or beyond what the format allows, are no image.
        for (what, bytes) in [
            ("PNG 0x5", png(0, 5, 0, &[])),
            ("PNG 5x0", png(5, 0, 0, &[])),
            ("PNG 2^31", png(1 << 31, 1, 0, &[])),
            ("PNG u32::MAX", png(1, u32::MAX, 0, &[])),
            ("JPEG height 0", jpeg(&[(0xC0, &sof(8, 0))])),
            ("JPEG width 0", jpeg(&[(0xC0, &sof(0, 8))])),
            ("lossy WebP 0", vp8(0, 8)),
        ] {
            let err = outpaint(&bytes).unwrap_err();
            assert_eq!(err.code(), "invalid_image", "{what}: {err}");
            assert!(err.to_string().starts_with("`image` "), "{what}: {err}");
        }
    }

    #[test]
    fn a_truncated_file_is_refused_saying_so() {
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Jpeg,
            image::ImageFormat::WebP,
        ] {
            let whole = encoded(&photo(), format);
            assert!(outpaint(&whole).is_ok(), "{format:?}");
            for cut in [whole.len() / 2, whole.len() - 1] {
                let err = outpaint(&whole[..cut]).unwrap_err();
                assert_eq!(err.code(), "invalid_image", "{format:?} at {cut}: {err}");
                let message = err.to_string();
                assert!(
                    message.starts_with("`image` looks truncated")
                        && message.ends_with("upload the complete file"),
                    "{format:?} at {cut}: {message}"
                );
            }
        }
        // A mask too.
        let image = encoded(&photo(), image::ImageFormat::Png);
        let mask = encoded(
            &DynamicImage::ImageLuma8(image::GrayImage::from_pixel(48, 40, image::Luma([255]))),
            image::ImageFormat::Png,
        );
        let erase = &[("task", "erase")][..];
        let limits = CanvasLimits::default();
        assert!(submit(&image, Some(&mask), erase, limits).is_ok());
        let err = submit(&image, Some(&mask[..mask.len() - 20]), erase, limits).unwrap_err();
        assert_eq!(
            (err.code(), err.field()),
            ("invalid_image", "mask"),
            "{err}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn a_complete_file_that_does_not_decode_is_refused_at_validation() {
        // Whole in structure (IHDR, IDAT, IEND), but no decoder reads it
        // (zero CRCs, junk pixel data): refused now, not by the worker.
        let err = outpaint(&png(16, 16, 2, &[])).unwrap_err();
        assert_eq!(err.code(), "invalid_image", "{err}");
        assert!(
            err.to_string().starts_with("`image` is not a readable"),
            "{err}"
        );
        // Where the limits would let image-webp misread the side, the
        // decoder's size must still agree with the header's.
        let wide = CanvasLimits {
            max_side: 20_000,
            max_megapixels: 1000.0,
        };
        let err = submit(ATTACK_WEBP, None, OUTPAINT, wide).unwrap_err();
        assert_eq!(err.code(), "invalid_image", "{err}");
    }

    #[test]
    fn only_the_image_is_stored_not_what_follows_it() {
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Jpeg,
            image::ImageFormat::WebP,
        ] {
            let whole = encoded(&photo(), format);
            let mut sent = whole.clone();
            sent.extend(std::iter::repeat_n(0x5A, 100_000));
            let (edit, stored) = outpaint(&sent).unwrap();
            assert_eq!(edit.image_size, (48, 40), "{format:?}");
            assert_eq!(stored.as_deref(), Some(&whole[..]), "{format:?}");
        }
    }
}
