//! From a raw multipart form to a checked job. Everything a caller can get
//! wrong is caught here with a message naming the field and the bound, so
//! the queue and the workers only ever see valid jobs.

use std::io::Cursor;

use axum::extract::Multipart;
use axum::extract::multipart::MultipartError;
use byteedit_jobs::db::ModelStatus;
use byteedit_jobs::{EditParams, Task};
use bytes::Bytes;
use image::{ImageFormat, ImageReader};

use crate::config::ApiArgs;
use crate::error::ApiError;

/// Largest seed accepted: JSON numbers above 2^53 lose precision in JavaScript.
pub const MAX_SEED: u64 = (1 << 53) - 1;
pub const MAX_OUTPUTS: u32 = 4;
pub const MAX_PROMPT_CHARS: usize = 2000;
/// Longest outpainting extension on one side, in pixels.
pub const MAX_EXTEND: u32 = 2048;

const FIELDS: &[&str] = &[
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
];

/// The form as sent: files as bytes, everything else as text.
#[derive(Debug, Default)]
pub struct RawEditForm {
    pub image: Option<Bytes>,
    pub mask: Option<Bytes>,
    pub text: Vec<(String, String)>,
}

impl RawEditForm {
    /// Reads every part, refusing unknown and repeated fields.
    pub async fn read(mut multipart: Multipart, limit_mb: usize) -> Result<Self, ApiError> {
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
            if !FIELDS.contains(&name.as_str()) {
                return Err(ApiError::invalid(
                    "unknown_field",
                    format!(
                        "unknown form field `{name}`; the fields are {}",
                        FIELDS.join(", ")
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
                    form.text.push((name, text));
                }
            }
        }
        Ok(form)
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.text
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A trimmed text field; empty counts as absent.
    fn value(&self, name: &str) -> Option<&str> {
        self.text(name).map(str::trim).filter(|v| !v.is_empty())
    }

    fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
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
}

/// Reads an image's format and size from its header, without decoding the
/// pixels (so checking a 1-megapixel upload costs microseconds).
fn image_size(field: &str, bytes: &[u8]) -> Result<(u32, u32), ApiError> {
    let unreadable = |why: String| {
        ApiError::invalid(
            "invalid_image",
            format!("`{field}` is not a readable PNG, JPEG or WebP image: {why}"),
        )
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_image",
                format!("`{field}` is {other:?}; send PNG, JPEG or WebP"),
            ));
        }
        None => return Err(unreadable("unknown format".into())),
    }
    reader
        .into_dimensions()
        .map_err(|e| unreadable(e.to_string()))
}

/// The nearest sizes that are multiples of `factor`, for error messages.
fn suggest(side: u32, factor: u32) -> u32 {
    ((side + factor / 2) / factor).max(1) * factor
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
    let extend = |name: &str| -> Result<u32, ApiError> {
        let v = form
            .number(name, 0, MAX_EXTEND, "a number of pixels")?
            .unwrap_or(0);
        if v > 0 && task != Task::Outpaint {
            return Err(ApiError::invalid(
                "invalid_field",
                format!("`{name}` applies only to `outpaint`; drop it or set `task=outpaint`"),
            ));
        }
        Ok(v)
    };
    let (left, right, top, bottom) = (
        extend("extend_left")?,
        extend("extend_right")?,
        extend("extend_top")?,
        extend("extend_bottom")?,
    );

    let Some(image) = form.image.clone() else {
        return Err(ApiError::invalid(
            "missing_field",
            "`image` is required: attach a PNG, JPEG or WebP file",
        ));
    };
    let (iw, ih) = image_size("image", &image)?;
    let mask = form.mask.clone();
    match (&mask, task) {
        (Some(mask), _) => {
            let (mw, mh) = image_size("mask", mask)?;
            if (mw, mh) != (iw, ih) {
                return Err(ApiError::invalid(
                    "size_mismatch",
                    format!(
                        "`mask` is {mw}x{mh} but `image` is {iw}x{ih}; they must be the same size"
                    ),
                ));
            }
        }
        (None, Task::Inpaint | Task::Erase) => {
            return Err(ApiError::invalid(
                "missing_field",
                format!("`mask` is required for `{task}`: white marks the region to edit"),
            ));
        }
        (None, Task::Outpaint) => {}
    }
    if task == Task::Outpaint && left + right + top + bottom == 0 {
        return Err(ApiError::invalid(
            "missing_field",
            "`outpaint` needs at least one of `extend_left`, `extend_right`, `extend_top`, `extend_bottom` above 0",
        ));
    }
    let (width, height) = (iw + left + right, ih + top + bottom);
    let max_side = config.max_image_side;
    if width > max_side || height > max_side {
        return Err(ApiError::invalid(
            "image_too_large",
            format!("the canvas is {width}x{height}; each side must be at most {max_side} pixels"),
        ));
    }
    let megapixels = width as f64 * height as f64 / 1e6;
    if megapixels > config.max_megapixels {
        return Err(ApiError::invalid(
            "image_too_large",
            format!(
                "the canvas is {width}x{height} ({megapixels:.1} MP); at most {} MP is accepted",
                config.max_megapixels
            ),
        ));
    }
    let f = info.vae_scale_factor;
    if width % f != 0 || height % f != 0 {
        let what = if task == Task::Outpaint {
            "the extended canvas"
        } else {
            "`image`"
        };
        return Err(ApiError::invalid(
            "invalid_size",
            format!(
                "{what} is {width}x{height}, but model `{}` needs sides that are multiples of {f}; use e.g. {}x{}",
                info.name,
                suggest(width, f),
                suggest(height, f)
            ),
        ));
    }
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
            extend_left: left,
            extend_right: right,
            extend_top: top,
            extend_bottom: bottom,
        },
        image,
        mask,
        width,
        height,
    })
}
