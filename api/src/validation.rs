//! From a raw multipart form to a checked job. Everything a caller can get
//! wrong is caught here with a message naming the field and the bound, so
//! the queue and the workers only ever see valid jobs.

use std::io::Cursor;

use axum::extract::Multipart;
use axum::extract::multipart::MultipartError;
use byteedit_jobs::db::ModelStatus;
use byteedit_jobs::geometry::{self, Anchor, OutpaintRequest, Sides};
use byteedit_jobs::job::defaults;
use byteedit_jobs::{EditParams, Task};
use bytes::Bytes;
use image::{ImageFormat, ImageReader, Limits};

use crate::config::ApiArgs;
use crate::error::ApiError;
use crate::routes::body;

/// Largest seed accepted: JSON numbers above 2^53 lose precision in JavaScript.
pub const MAX_SEED: u64 = (1 << 53) - 1;
pub const MAX_OUTPUTS: u32 = 4;
pub const MAX_PROMPT_CHARS: usize = 2000;
/// Longest outpainting extension on one side, in pixels.
pub const MAX_EXTEND: u32 = 2048;

/// Every field `POST /v1/edits` accepts.
pub const FIELDS: &[&str] = &[
    "image",
    "mask",
    "task",
    "prompt",
    "negative_prompt",
    "model",
    "steps",
    "guidance_scale",
    "scheduler",
    "seed",
    "num_outputs",
    "extend_left",
    "extend_right",
    "extend_top",
    "extend_bottom",
    "target_width",
    "target_height",
    "aspect_ratio",
    "anchor",
    "overlap",
    "mask_grow",
    "mask_feather",
    "mask_resize",
    "crop_padding",
    "color_match",
    "webhook_url",
];

/// Longest `webhook_url` accepted.
pub const MAX_WEBHOOK_URL: usize = 2048;

/// Bounds of the task options, in pixels.
pub const MAX_OVERLAP: u32 = 256;
pub const MAX_MASK_GROW: i32 = 256;
pub const MAX_MASK_FEATHER: u32 = 128;
pub const MAX_CROP_PADDING: u32 = 2048;

/// The form as sent: files as bytes, everything else as text.
#[derive(Debug, Default, Clone)]
pub struct RawEditForm {
    pub image: Option<Bytes>,
    pub mask: Option<Bytes>,
    pub text: Vec<(String, String)>,
}

impl RawEditForm {
    /// Reads every part, refusing unknown and repeated fields.
    pub async fn read(
        mut multipart: Multipart,
        limit_mb: usize,
        extra: &[&str],
    ) -> Result<Self, ApiError> {
        let mut form = Self::default();
        let mut seen: Vec<String> = Vec::new();
        let read_error = |e: MultipartError| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge { limit_mb }
            } else {
                ApiError::BadRequest(format!("cannot read the multipart form: {}", e.body_text()))
            }
        };
        while let Some(field) = multipart.next_field().await.map_err(read_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            if !FIELDS.contains(&name.as_str()) && !extra.contains(&name.as_str()) {
                return Err(ApiError::invalid(
                    "unknown_field",
                    format!(
                        "unknown form field `{name}`; the fields are {}",
                        [FIELDS, extra].concat().join(", ")
                    ),
                ));
            }
            if seen.contains(&name) {
                return Err(ApiError::invalid(
                    "invalid_field",
                    format!("form field `{name}` is given twice; send it once"),
                ));
            }
            seen.push(name.clone());
            let bytes = field.bytes().await.map_err(read_error)?;
            match name.as_str() {
                "image" => form.image = Some(bytes),
                "mask" => form.mask = Some(bytes),
                _ => {
                    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                        ApiError::invalid("invalid_field", format!("`{name}` is not UTF-8 text"))
                    })?;
                    // Postgres text and JSON cannot store NUL (a 500 otherwise).
                    if text.contains('\0') {
                        return Err(ApiError::invalid(
                            "invalid_field",
                            format!("`{name}` contains a NUL character"),
                        ));
                    }
                    form.text.push((name, text));
                }
            }
        }
        Ok(form)
    }

    /// SHA-256 of everything the request carries (fields in name order, then
    /// the files), to tell a repeat from a different request.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let mut fields: Vec<&(String, String)> = self.text.iter().collect();
        fields.sort();
        for (name, value) in fields {
            for part in [name.as_bytes(), b"=", value.as_bytes(), b"\0"] {
                hash.update(part);
            }
        }
        for (name, file) in [("image", &self.image), ("mask", &self.mask)] {
            if let Some(bytes) = file {
                hash.update(name.as_bytes());
                hash.update((bytes.len() as u64).to_le_bytes());
                hash.update(bytes);
            }
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Sets a text field (replacing it), e.g. to give two jobs one seed.
    pub fn set_text(&mut self, name: &str, value: String) {
        self.text.retain(|(n, _)| n != name);
        self.text.push((name.to_owned(), value));
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.text
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A trimmed text field; empty counts as absent.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.text(name).map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
        &self,
        name: &str,
        min: T,
        max: T,
        kind: &str,
    ) -> Result<Option<T>, ApiError> {
        let Some(raw) = self.value(name) else {
            return Ok(None);
        };
        match raw.parse::<T>() {
            Ok(v) if v >= min && v <= max => Ok(Some(v)),
            _ => Err(ApiError::invalid(
                "invalid_field",
                format!("`{name}` must be {kind} from {min} to {max}; got `{raw}`"),
            )),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.value(name) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(ApiError::invalid(
                "invalid_field",
                format!("`{name}` must be true or false; got `{other}`"),
            )),
        }
    }

    /// The model the request names, or the configured/only one.
    pub fn model_name(&self, config: &ApiArgs, served: &[ModelStatus]) -> Result<String, ApiError> {
        if let Some(name) = self.value("model") {
            return Ok(name.to_owned());
        }
        if let Some(name) = &config.default_model {
            return Ok(name.clone());
        }
        let live: Vec<&ModelStatus> = served.iter().filter(|m| m.workers > 0).collect();
        match (live.as_slice(), served) {
            ([only], _) => Ok(only.info.name.clone()),
            ([], [only]) => Ok(only.info.name.clone()),
            ([], []) => Err(ApiError::invalid(
                "no_models",
                "no model is served yet: start a worker with `byteedit worker --model NAME=DIR`",
            )),
            _ => Err(ApiError::invalid(
                "missing_field",
                format!(
                    "several models are served; name one in `model`: {}",
                    names(served)
                ),
            )),
        }
    }
}

fn names(models: &[ModelStatus]) -> String {
    models
        .iter()
        .map(|m| m.info.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A request that passed every check; the only thing a job is made from.
#[derive(Debug, Clone)]
pub struct ValidEdit {
    pub task: Task,
    pub model: String,
    pub params: EditParams,
    pub image: Bytes,
    pub mask: Option<Bytes>,
    /// Size of the canvas the model edits (the image, extended when outpainting).
    pub width: u32,
    pub height: u32,
    /// Where the job's end is announced.
    pub webhook_url: Option<String>,
}

/// Checks a `webhook_url`: an absolute http(s) URL with a host, of bounded
/// length, without credentials (they would be stored and logged).
pub fn webhook_url(raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        ApiError::invalid(
            "invalid_field",
            format!(
                "`webhook_url` {why}; got `{}`",
                raw.chars().take(100).collect::<String>()
            ),
        )
    };
    if raw.len() > MAX_WEBHOOK_URL {
        return Err(bad(&format!(
            "must be at most {MAX_WEBHOOK_URL} characters"
        )));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials; authenticate with the signature instead",
        ));
    }
    Ok(url.to_string())
}

/// What an upload's header says.
struct Header {
    width: u32,
    height: u32,
    has_alpha: bool,
}

/// A reader for an upload whose format is read from its bytes (never from
/// the file name or Content-Type). Reading its header allocates next to
/// nothing (the image crate's default limits apply); [`decode`] adds the
/// configuration's limits before any pixel is decoded.
fn reader<'a>(field: &str, bytes: &'a [u8]) -> Result<ImageReader<Cursor<&'a [u8]>>, ApiError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(field, e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_image",
                format!("`{field}` is {other:?}; send PNG, JPEG or WebP"),
            ));
        }
        None => return Err(unreadable(field, "unknown format".into())),
    }
    Ok(reader)
}

/// Decoder limits: the side bound, and an allocation bound of 8 bytes a
/// pixel (16-bit RGBA) of the largest accepted image plus slack.
fn limits(config: &ApiArgs) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(config.max_image_side);
    limits.max_image_height = Some(config.max_image_side);
    let pixels = (config.max_megapixels.max(0.0) * 1e6) as u64;
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(16 << 20));
    limits
}

fn unreadable(field: &str, why: String) -> ApiError {
    ApiError::invalid(
        "invalid_image",
        format!("`{field}` is not a readable PNG, JPEG or WebP image: {why}"),
    )
}

/// Reads an image's format, size and colour type from its header, without
/// decoding the pixels (so checking a 1-megapixel upload costs microseconds,
/// and a decompression bomb is refused by [`check_canvas`] right after,
/// before any pixel is decoded).
fn header(field: &str, bytes: &[u8]) -> Result<Header, ApiError> {
    let decoder = reader(field, bytes)?
        .into_decoder()
        .map_err(|e| unreadable(field, e.to_string()))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    let has_alpha = image::ImageDecoder::color_type(&decoder).has_alpha();
    Ok(Header {
        width,
        height,
        has_alpha,
    })
}

/// A decoder refusing the limits says which: that is the caller's image
/// being too large, not unreadable.
fn too_large_or_unreadable(field: &str, e: image::ImageError, config: &ApiArgs) -> ApiError {
    match e {
        image::ImageError::Limits(_) => ApiError::invalid(
            "image_too_large",
            format!(
                "`{field}` is larger than accepted: each side at most {} pixels, at most {} MP ({e})",
                config.max_image_side, config.max_megapixels
            ),
        ),
        other => unreadable(field, other.to_string()),
    }
}

/// Decodes an upload (masks, and images whose alpha is the mask) to check
/// its pixels, after its header passed [`check_canvas`]; the limits bound
/// the allocation too.
fn decode(field: &str, bytes: &[u8], config: &ApiArgs) -> Result<image::DynamicImage, ApiError> {
    let mut reader = reader(field, bytes)?;
    reader.limits(limits(config));
    let decoder = reader
        .into_decoder()
        .map_err(|e| too_large_or_unreadable(field, e, config))?;
    image::DynamicImage::from_decoder(decoder)
        .map_err(|e| too_large_or_unreadable(field, e, config))
}

/// True when some pixel is marked for editing: mask pixels at 50 % grey or
/// more (after PIL's grey conversion, as the worker reads them), or alpha
/// below 50 %. The common 8-bit layouts are read in place: converting a
/// 1-MP mask to RGB first costs 50x its decoding.
fn any_marked(image: &image::DynamicImage, from_alpha: bool) -> bool {
    use image::DynamicImage as D;
    let luma = |[r, g, b]: [u8; 3]| {
        (r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16 >= 128
    };
    match (image, from_alpha) {
        (D::ImageLumaA8(i), true) => i.pixels().any(|p| p.0[1] < 128),
        (D::ImageRgba8(i), true) => i.pixels().any(|p| p.0[3] < 128),
        (other, true) => other.to_rgba8().pixels().any(|p| p.0[3] < 128),
        (D::ImageLuma8(i), false) => i.pixels().any(|p| p.0[0] >= 128),
        (D::ImageLumaA8(i), false) => i.pixels().any(|p| p.0[0] >= 128),
        (D::ImageRgb8(i), false) => i.pixels().any(|p| luma(p.0)),
        (D::ImageRgba8(i), false) => i.pixels().any(|p| luma([p.0[0], p.0[1], p.0[2]])),
        (other, false) => other.to_rgb8().pixels().any(|p| luma(p.0)),
    }
}

/// Side and megapixel limits (configuration) for an image or canvas.
fn check_canvas(what: &str, width: u32, height: u32, config: &ApiArgs) -> Result<(), ApiError> {
    let max_side = config.max_image_side;
    if width > max_side || height > max_side {
        return Err(ApiError::invalid(
            "image_too_large",
            format!("{what} is {width}x{height}; each side must be at most {max_side} pixels"),
        ));
    }
    let megapixels = width as f64 * height as f64 / 1e6;
    if megapixels > config.max_megapixels {
        return Err(ApiError::invalid(
            "image_too_large",
            format!(
                "{what} is {width}x{height} ({megapixels:.1} MP); at most {} MP is accepted",
                config.max_megapixels
            ),
        ));
    }
    Ok(())
}

pub fn validate(
    form: RawEditForm,
    config: &ApiArgs,
    model: &ModelStatus,
) -> Result<ValidEdit, ApiError> {
    let info = &model.info;
    let task: Task = match form.value("task") {
        Some(t) => t
            .parse()
            .map_err(|m: String| ApiError::invalid("invalid_field", m))?,
        None => {
            return Err(ApiError::invalid(
                "missing_field",
                "`task` is required: inpaint, erase or outpaint",
            ));
        }
    };
    let prompt = form.text("prompt").unwrap_or_default().trim().to_owned();
    if task == Task::Inpaint && prompt.is_empty() {
        return Err(ApiError::invalid(
            "missing_field",
            "`prompt` is required for `inpaint`: say what to paint in the masked region",
        ));
    }
    for (name, text) in [
        ("prompt", Some(prompt.as_str())),
        ("negative_prompt", form.text("negative_prompt")),
    ] {
        if text.is_some_and(|t| t.chars().count() > MAX_PROMPT_CHARS) {
            return Err(ApiError::invalid(
                "invalid_field",
                format!("`{name}` is longer than {MAX_PROMPT_CHARS} characters"),
            ));
        }
    }
    let negative_prompt = form.value("negative_prompt").map(str::to_owned);

    let steps = form
        .number("steps", 1, info.max_steps, "an integer")?
        .unwrap_or(info.default_steps);
    let guidance_scale = form
        .number("guidance_scale", 0.0, 50.0, "a number")?
        .unwrap_or(info.default_guidance_scale);
    let scheduler = match form.value("scheduler") {
        Some(s) if info.schedulers.iter().any(|k| k == s) => s.to_owned(),
        Some(s) => {
            return Err(ApiError::invalid(
                "invalid_field",
                format!(
                    "`scheduler` must be one of {}; got `{s}`",
                    info.schedulers.join(", ")
                ),
            ));
        }
        None => info.default_scheduler.clone(),
    };
    let seed = match form.number("seed", 0, MAX_SEED, "an integer")? {
        Some(s) => s,
        None => rand::random_range(0..=u32::MAX as u64),
    };
    let num_outputs = form
        .number("num_outputs", 1, MAX_OUTPUTS, "an integer")?
        .unwrap_or(1);
    let outpaint_only = |name: &str, given: bool| -> Result<(), ApiError> {
        if given && task != Task::Outpaint {
            return Err(ApiError::invalid(
                "invalid_field",
                format!("`{name}` applies only to `outpaint`; drop it or set `task=outpaint`"),
            ));
        }
        Ok(())
    };
    let extend = |name: &str| -> Result<u32, ApiError> {
        let v = form
            .number(name, 0, MAX_EXTEND, "a number of pixels")?
            .unwrap_or(0);
        outpaint_only(name, v > 0)?;
        Ok(v)
    };
    let given = Sides {
        left: extend("extend_left")?,
        right: extend("extend_right")?,
        top: extend("extend_top")?,
        bottom: extend("extend_bottom")?,
    };
    let max_side = config.max_image_side;
    let target_width = form.number("target_width", 1, max_side, "a number of pixels")?;
    let target_height = form.number("target_height", 1, max_side, "a number of pixels")?;
    let aspect = form
        .value("aspect_ratio")
        .map(geometry::parse_aspect)
        .transpose()
        .map_err(|m| ApiError::invalid("invalid_field", m))?;
    let anchor: Option<Anchor> = body::named(form.value("anchor"))?;
    for (name, is_given) in [
        ("target_width", target_width.is_some()),
        ("target_height", target_height.is_some()),
        ("aspect_ratio", aspect.is_some()),
        ("anchor", anchor.is_some()),
        ("overlap", form.value("overlap").is_some()),
    ] {
        outpaint_only(name, is_given)?;
    }
    let overlap = form
        .number("overlap", 0, MAX_OVERLAP, "a number of pixels")?
        .unwrap_or(defaults::OVERLAP);
    let mask_grow = form
        .number(
            "mask_grow",
            -MAX_MASK_GROW,
            MAX_MASK_GROW,
            "a number of pixels",
        )?
        .unwrap_or(0);
    let mask_feather = form
        .number("mask_feather", 0, MAX_MASK_FEATHER, "a number of pixels")?
        .unwrap_or(defaults::MASK_FEATHER);
    let crop_padding = form
        .number("crop_padding", 0, MAX_CROP_PADDING, "a number of pixels")?
        .unwrap_or(defaults::CROP_PADDING);
    let mask_resize = form.flag("mask_resize")?;
    let color_match = form.flag("color_match")?;
    let webhook_url = form.value("webhook_url").map(webhook_url).transpose()?;

    let Some(image) = form.image.clone() else {
        return Err(ApiError::invalid(
            "missing_field",
            "`image` is required: attach a PNG, JPEG or WebP file",
        ));
    };
    let head = header("image", &image)?;
    let (iw, ih) = (head.width, head.height);
    check_canvas("`image`", iw, ih, config)?;

    // Resolved here, so the job records the sides used.
    let ext = OutpaintRequest {
        sides: given,
        target_width,
        target_height,
        aspect_ratio: aspect,
        anchor,
    }
    .resolve((iw, ih))
    .map_err(|m| ApiError::invalid("invalid_field", m))?;
    if task == Task::Outpaint && ext == Sides::default() {
        return Err(ApiError::invalid(
            "missing_field",
            "`outpaint` needs a larger canvas: `extend_left`, `extend_right`, `extend_top` or `extend_bottom` above 0, \
             or `target_width`/`target_height`/`aspect_ratio` beyond the image",
        ));
    }
    let (width, height) = (iw + ext.left + ext.right, ih + ext.top + ext.bottom);
    if task == Task::Outpaint {
        check_canvas("the extended canvas", width, height, config)?;
    }

    // The mask: a file, or the image's alpha. Its pixels are checked here so
    // an empty mask is a 422 now rather than a failed job later.
    let mask = form.mask.clone();
    match (&mask, task) {
        (Some(mask), _) => {
            let mh = header("mask", mask)?;
            check_canvas("`mask`", mh.width, mh.height, config)?;
            if (mh.width, mh.height) != (iw, ih) && !mask_resize {
                return Err(ApiError::invalid(
                    "size_mismatch",
                    format!(
                        "`mask` is {}x{} but `image` is {iw}x{ih}; send a mask of the same size, or set `mask_resize=true` to resize it",
                        mh.width, mh.height
                    ),
                ));
            }
            let pixels = decode("mask", mask, config)?;
            if task != Task::Outpaint && !any_marked(&pixels, false) {
                return Err(ApiError::invalid(
                    "empty_mask",
                    "`mask` is empty: no pixel is 50% white or more; paint the region to edit white",
                ));
            }
        }
        (None, Task::Inpaint | Task::Erase) => {
            if !head.has_alpha {
                return Err(ApiError::invalid(
                    "missing_field",
                    format!(
                        "`mask` is required for `{task}`: white marks the region to edit (or send a PNG whose transparent pixels mark it)"
                    ),
                ));
            }
            if !any_marked(&decode("image", &image, config)?, true) {
                return Err(ApiError::invalid(
                    "empty_mask",
                    "no `mask` was sent and the image has no transparent pixels to edit; send a mask, or make the region to edit transparent",
                ));
            }
        }
        (None, Task::Outpaint) => {
            if mask_resize {
                return Err(ApiError::invalid(
                    "invalid_field",
                    "`mask_resize` needs a `mask`",
                ));
            }
        }
    }
    let negative_prompt = negative_prompt.or_else(|| {
        (task == Task::Erase && !info.erase_negative_prompt.is_empty())
            .then(|| info.erase_negative_prompt.clone())
    });
    Ok(ValidEdit {
        task,
        model: info.name.clone(),
        params: EditParams {
            prompt,
            negative_prompt,
            steps,
            guidance_scale,
            scheduler,
            seed,
            num_outputs,
            extend_left: ext.left,
            extend_right: ext.right,
            extend_top: ext.top,
            extend_bottom: ext.bottom,
            overlap,
            mask_grow,
            mask_feather,
            mask_resize,
            crop_padding,
            color_match,
        },
        image,
        mask,
        width,
        height,
        webhook_url,
    })
}
