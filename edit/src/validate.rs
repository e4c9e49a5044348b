//! From the request as sent ([`EditForm`]) to the request a job runs
//! ([`ValidEdit`], whose [`EditParams`] are stored): parse each field, check
//! it against its bound, fill in the model's defaults, resolve the outpaint
//! canvas, and check the images. Everything a caller can get wrong is
//! caught here with a message that names the field and the bound, so the
//! queue, the workers and the engine only ever see valid requests.

use std::fmt::Display;
use std::str::FromStr;

use crate::error::{EditError, Naming, quote};
use crate::form::{EditForm, bounds::*};
use crate::geometry::{self, Anchor, OutpaintRequest, Sides, WorkingSize};
use crate::model::ModelInfo;
use crate::params::{EditParams, defaults};
use crate::task::Task;
use crate::upload::{CanvasLimits, Images};

/// What a request is checked against.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub model: &'a ModelInfo,
    pub limits: CanvasLimits,
    pub naming: Naming,
    /// `inpaint` may go without a prompt (prompt-free filling, as diffusers
    /// allows). The CLI allows it; the API refuses it, so that a forgotten
    /// prompt is a 422 rather than a surprising image.
    pub prompt_free_inpaint: bool,
}

impl<'a> Context<'a> {
    /// The API's rules: form names, prompts required for `inpaint`.
    pub fn form(model: &'a ModelInfo, limits: CanvasLimits) -> Self {
        Self {
            model,
            limits,
            naming: Naming::Form,
            prompt_free_inpaint: false,
        }
    }
}

/// A request that passed every check: the only thing a job is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEdit {
    pub task: Task,
    pub params: EditParams,
    /// The input image's size.
    pub image_size: (u32, u32),
    /// The canvas the model edits: the image, extended when outpainting.
    pub canvas: (u32, u32),
    /// Where the job's end is announced.
    pub webhook_url: Option<String>,
}

/// Reads fields of one form under one naming.
struct Fields<'f> {
    form: &'f EditForm,
    naming: Naming,
}

impl Fields<'_> {
    fn invalid(&self, field: &str, message: String) -> EditError {
        EditError::InvalidField {
            field: field.to_owned(),
            message,
        }
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.form.value(name)
    }

    /// A number within `min..=max`; `kind` says what it is ("an integer").
    fn number<T: FromStr + PartialOrd + Display + Copy>(
        &self,
        name: &str,
        min: T,
        max: T,
        kind: &str,
    ) -> Result<Option<T>, EditError> {
        number(name, self.value(name), (min, max), kind, self.naming)
    }

    fn pixels<T: FromStr + PartialOrd + Display + Copy>(
        &self,
        name: &str,
        min: T,
        max: T,
    ) -> Result<Option<T>, EditError> {
        self.number(name, min, max, "a number of pixels")
    }

    fn flag(&self, name: &str) -> Result<bool, EditError> {
        match self.value(name) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(self.invalid(
                name,
                format!(
                    "{} must be true or false; got {}",
                    self.naming.field(name),
                    quote(other)
                ),
            )),
        }
    }

    /// A value whose parser's message (written with form names) lists what
    /// is allowed.
    fn parsed<T: FromStr<Err = String>>(&self, name: &str) -> Result<Option<T>, EditError> {
        self.value(name)
            .map(str::parse::<T>)
            .transpose()
            .map_err(|m: String| self.invalid(name, self.respell(&m)))
    }

    fn respell(&self, message: &str) -> String {
        self.naming.respell(message, EditForm::FIELDS)
    }
}

/// Parses a field's `raw` text (trimmed, empty: absent) as a number within
/// `min..=max`; `kind` says what it is ("an integer"). The one message for
/// a number out of its bounds, for this crate's fields and a route's own.
pub fn number<T: FromStr + PartialOrd + Display + Copy>(
    name: &str,
    raw: Option<&str>,
    (min, max): (T, T),
    kind: &str,
    naming: Naming,
) -> Result<Option<T>, EditError> {
    let Some(raw) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match raw.parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(Some(v)),
        _ => Err(EditError::InvalidField {
            field: name.to_owned(),
            message: format!(
                "{} must be {kind} from {min} to {max}; got {}",
                naming.field(name),
                quote(raw)
            ),
        }),
    }
}

/// Checks a `webhook_url`: an absolute http(s) URL with a host, of bounded
/// length, without credentials (they would be stored and logged).
pub fn webhook_url(raw: &str) -> Result<String, EditError> {
    let bad = |why: &str| EditError::InvalidField {
        field: "webhook_url".into(),
        message: format!("`webhook_url` {why}; got {}", quote(raw)),
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

/// The fields that made an outpaint canvas, for a message about its size:
/// the ratio or target if given, else the largest extension on the side
/// that is too long.
fn canvas_cause(request: &OutpaintRequest, sides: Sides, too_wide: bool) -> &'static str {
    if request.aspect_ratio.is_some() {
        "aspect_ratio"
    } else if request.target_width.is_some() && (too_wide || request.target_height.is_none()) {
        "target_width"
    } else if request.target_height.is_some() {
        "target_height"
    } else if too_wide {
        if sides.left >= sides.right {
            "extend_left"
        } else {
            "extend_right"
        }
    } else if sides.top >= sides.bottom {
        "extend_top"
    } else {
        "extend_bottom"
    }
}

/// Checks every field and the images, and fills in the defaults.
pub fn validate(
    form: &EditForm,
    images: &dyn Images,
    ctx: &Context<'_>,
) -> Result<ValidEdit, EditError> {
    let n = ctx.naming;
    let f = Fields { form, naming: n };
    let model = ctx.model;
    let task: Task = match f.parsed("task")? {
        Some(t) => t,
        None => {
            return Err(EditError::MissingField {
                field: "task",
                message: format!(
                    "{} is required: inpaint, erase or outpaint",
                    n.field("task")
                ),
            });
        }
    };
    let prompt = form.prompt.as_deref().unwrap_or_default().trim().to_owned();
    if task == Task::Inpaint && prompt.is_empty() && !ctx.prompt_free_inpaint {
        return Err(EditError::MissingField {
            field: "prompt",
            message: format!(
                "{} is required for `inpaint`: say what to paint in the masked region",
                n.field("prompt")
            ),
        });
    }
    for (name, text) in [
        ("prompt", Some(prompt.as_str())),
        ("negative_prompt", form.negative_prompt.as_deref()),
    ] {
        if text.is_some_and(|t| t.chars().count() > MAX_PROMPT_CHARS) {
            return Err(f.invalid(
                name,
                format!(
                    "{} is longer than {MAX_PROMPT_CHARS} characters",
                    n.field(name)
                ),
            ));
        }
    }
    let negative_prompt = f.value("negative_prompt").map(str::to_owned);

    let steps = f
        .number("steps", 1, model.max_steps, "an integer")?
        .unwrap_or(model.default_steps);
    let guidance_scale = f
        .number("guidance_scale", 0.0, MAX_GUIDANCE, "a number")?
        .unwrap_or(model.default_guidance_scale);
    let scheduler = match f.value("scheduler") {
        Some(s) if model.schedulers.iter().any(|k| k == s) => s.to_owned(),
        Some(s) => {
            return Err(f.invalid(
                "scheduler",
                format!(
                    "{} must be one of {}; got {}",
                    n.field("scheduler"),
                    model.schedulers.join(", "),
                    quote(s)
                ),
            ));
        }
        None => model.default_scheduler.clone(),
    };
    let seed = match f.number("seed", 0, MAX_SEED, "an integer")? {
        Some(s) => s,
        None => rand::random_range(0..=u32::MAX as u64),
    };
    let num_outputs = f
        .number("num_outputs", 1, MAX_OUTPUTS, "an integer")?
        .unwrap_or(defaults::NUM_OUTPUTS);
    let outpaint_only = |name: &str, given: bool| -> Result<(), EditError> {
        if given && task != Task::Outpaint {
            return Err(f.invalid(
                name,
                format!(
                    "{} applies only to `outpaint`; drop it or set {}",
                    n.field(name),
                    n.set("task", "outpaint")
                ),
            ));
        }
        Ok(())
    };
    let extend =
        |name: &str| -> Result<u32, EditError> { Ok(f.pixels(name, 0, MAX_EXTEND)?.unwrap_or(0)) };
    let given = Sides {
        left: extend("extend_left")?,
        right: extend("extend_right")?,
        top: extend("extend_top")?,
        bottom: extend("extend_bottom")?,
    };
    let max_side = ctx.limits.max_side;
    let target_width = f.pixels("target_width", 1, max_side)?;
    let target_height = f.pixels("target_height", 1, max_side)?;
    let aspect_ratio = f
        .value("aspect_ratio")
        .map(geometry::parse_aspect)
        .transpose()
        .map_err(|m| f.invalid("aspect_ratio", f.respell(&m)))?;
    let anchor: Option<Anchor> = f.parsed("anchor")?;
    for name in EditForm::OUTPAINT_FIELDS {
        // `extend_left=0` asks for nothing.
        let given = match *name {
            "extend_left" => given.left > 0,
            "extend_right" => given.right > 0,
            "extend_top" => given.top > 0,
            "extend_bottom" => given.bottom > 0,
            other => f.value(other).is_some(),
        };
        outpaint_only(name, given)?;
    }
    let overlap = f
        .pixels("overlap", 0, MAX_OVERLAP)?
        .unwrap_or(defaults::OVERLAP);
    let mask_grow = f
        .pixels("mask_grow", -MAX_MASK_GROW, MAX_MASK_GROW)?
        .unwrap_or(0);
    let mask_feather = f
        .pixels("mask_feather", 0, MAX_MASK_FEATHER)?
        .unwrap_or(defaults::MASK_FEATHER);
    let crop_padding = f
        .pixels("crop_padding", 0, MAX_CROP_PADDING)?
        .unwrap_or(defaults::CROP_PADDING);
    let mask_resize = f.flag("mask_resize")?;
    let color_match = f.flag("color_match")?;
    let working_size: WorkingSize = f.parsed("working_size")?.unwrap_or_default();
    if let WorkingSize::Exact { width, height } = working_size {
        let m = model.vae_scale_factor.max(1);
        if !width.is_multiple_of(m) || !height.is_multiple_of(m) {
            let (sw, sh) = WorkingSize::suggest((width, height), m);
            return Err(f.invalid(
                "working_size",
                format!(
                    "{} {width}x{height} does not fit the model: both sides must be multiples of {m}; use e.g. {sw}x{sh}",
                    n.field("working_size")
                ),
            ));
        }
    }
    let webhook_url = f.value("webhook_url").map(webhook_url).transpose()?;

    let Some(head) = images.image()? else {
        return Err(EditError::MissingField {
            field: "image",
            message: format!(
                "{} is required: attach a PNG, JPEG or WebP file",
                n.field("image")
            ),
        });
    };
    let image_size = head.size();
    let (iw, ih) = image_size;
    ctx.limits
        .check("image", &n.field("image"), "", image_size)?;

    // Resolved here, so the job records the sides used.
    let request = OutpaintRequest {
        sides: given,
        target_width,
        target_height,
        aspect_ratio,
        anchor,
    };
    let sides = request
        .resolve(image_size)
        .map_err(|(field, m)| f.invalid(field, f.respell(&m)))?;
    if task == Task::Outpaint && sides.is_empty() {
        let fields =
            ["extend_left", "extend_right", "extend_top", "extend_bottom"].map(|x| n.field(x));
        let sized = ["target_width", "target_height", "aspect_ratio"].map(|x| n.field(x));
        return Err(EditError::MissingField {
            field: "extend_left",
            message: format!(
                "`outpaint` needs a larger canvas: {}, {}, {} or {} above 0, or {} beyond the image",
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                sized.join("/")
            ),
        });
    }
    let canvas = sides.extend(image_size);
    if task == Task::Outpaint {
        let too_wide = canvas.0 > max_side;
        let cause = canvas_cause(&request, sides, too_wide);
        ctx.limits
            .check(cause, "the extended canvas", &n.field(cause), canvas)?;
    }

    let mask_head = images.mask()?;
    if let Some(mh) = mask_head {
        ctx.limits.check("mask", &n.field("mask"), "", mh.size())?;
    }
    // Every size passed: now the files are read whole, so a truncated or
    // corrupt one is refused here rather than failing its job.
    images.complete()?;

    // The mask: a file, or the image's alpha. Its pixels are checked here so
    // an empty mask is refused now rather than failing the job later.
    match (mask_head, task) {
        (Some(mh), _) => {
            if mh.size() != image_size && !mask_resize {
                return Err(EditError::SizeMismatch {
                    message: format!(
                        "{} is {}x{} but {} is {iw}x{ih}; send a mask of the same size, or set {} to resize it",
                        n.field("mask"),
                        mh.width,
                        mh.height,
                        n.field("image"),
                        n.set("mask_resize", "true")
                    ),
                });
            }
            let marked = images.mask_marked()?;
            if task != Task::Outpaint && !marked {
                let message = match n {
                    Naming::Form => "`mask` is empty: no pixel is 50% white or more; paint the region to edit white".into(),
                    Naming::Flags => format!(
                        "the mask is empty: no pixel of {} is 50% white or more; paint the region to edit white",
                        n.field("mask")
                    ),
                };
                return Err(EditError::EmptyMask { message });
            }
        }
        (None, Task::Inpaint | Task::Erase) => {
            if !head.has_alpha {
                return Err(EditError::MissingField {
                    field: "mask",
                    message: format!(
                        "{} is required for `{task}`: white marks the region to edit (or send a PNG whose transparent pixels mark it)",
                        n.field("mask")
                    ),
                });
            }
            if !images.alpha_marked()? {
                return Err(EditError::EmptyMask {
                    message: format!(
                        "no {} was sent and the image has no transparent pixels to edit; send a mask, or make the region to edit transparent",
                        n.field("mask")
                    ),
                });
            }
        }
        (None, Task::Outpaint) => {
            if mask_resize {
                return Err(f.invalid(
                    "mask_resize",
                    format!("{} needs a {}", n.field("mask_resize"), n.field("mask")),
                ));
            }
        }
    }
    let negative_prompt = negative_prompt.or_else(|| {
        (task == Task::Erase && !model.erase_negative_prompt.is_empty())
            .then(|| model.erase_negative_prompt.clone())
    });
    Ok(ValidEdit {
        task,
        params: EditParams {
            prompt,
            negative_prompt,
            steps,
            guidance_scale,
            scheduler,
            seed,
            num_outputs,
            extend_left: sides.left,
            extend_right: sides.right,
            extend_top: sides.top,
            extend_bottom: sides.bottom,
            overlap,
            mask_grow,
            mask_feather,
            mask_resize,
            crop_padding,
            color_match,
            working_size,
        },
        image_size,
        canvas,
        webhook_url,
    })
}
