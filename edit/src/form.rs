//! The one edit request as callers send it: the multipart form of
//! `POST /v1/edits`, the flags of `byteedit edit` and the OpenAPI schema all
//! come from the one declaration below. Every value is kept as the text
//! sent; [`crate::validate`] parses and checks it against the bounds
//! declared here and the model's own, and gives the stored [`EditParams`].
//!
//! [`EditParams`]: crate::EditParams

use bytes::Bytes;

/// Bounds of the fields that depend neither on the model nor on the
/// deployment (those come from [`crate::ModelInfo`] and [`crate::CanvasLimits`]).
pub mod bounds {
    /// Largest seed accepted: JSON numbers above 2^53 lose precision in JavaScript.
    pub const MAX_SEED: u64 = (1 << 53) - 1;
    pub const MAX_OUTPUTS: u32 = 4;
    pub const MAX_PROMPT_CHARS: usize = 2000;
    pub const MAX_GUIDANCE: f64 = 50.0;
    /// Longest outpainting extension on one side, in pixels.
    pub const MAX_EXTEND: u32 = 2048;
    pub const MAX_OVERLAP: u32 = 256;
    pub const MAX_MASK_GROW: i32 = 256;
    pub const MAX_MASK_FEATHER: u32 = 128;
    pub const MAX_CROP_PADDING: u32 = 2048;
    /// Longest `webhook_url` accepted.
    pub const MAX_WEBHOOK_URL: usize = 2048;
    /// Largest side of a `working_size`.
    pub use crate::geometry::MAX_WORKING_SIDE;
}

/// A field's storage: text fields hold the text sent, file fields the bytes.
trait Slot {
    fn text(&self) -> Option<Option<&str>>;
    fn text_mut(&mut self) -> Option<&mut Option<String>>;
}

impl Slot for Option<String> {
    fn text(&self) -> Option<Option<&str>> {
        Some(self.as_deref())
    }
    fn text_mut(&mut self) -> Option<&mut Option<String>> {
        Some(self)
    }
}

impl Slot for Option<Bytes> {
    fn text(&self) -> Option<Option<&str>> {
        None
    }
    fn text_mut(&mut self) -> Option<&mut Option<String>> {
        None
    }
}

/// Declares the form once: each field with its documentation (the API's
/// schema and the CLI's help), its clap attributes, and its wire type for
/// the schema (`as`). Generates the field list and access by name.
macro_rules! edit_form {
    (
        $(#[$meta:meta])*
        pub struct $form:ident {
            $( $(#[$attr:meta])* $field:ident : $ty:ty as $wire:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $form {
            $( $(#[$attr])* #[schema(value_type = $wire)] pub $field: $ty, )*
        }

        impl $form {
            /// Every field, in the declaration's (and the schema's) order.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// The text of a text field (`None`: not a text field).
            pub fn text_field(&self, name: &str) -> Option<Option<&str>> {
                match name {
                    $(stringify!($field) => Slot::text(&self.$field),)*
                    _ => None,
                }
            }

            /// Where a text field's value goes (`None`: not a text field).
            pub fn text_field_mut(&mut self, name: &str) -> Option<&mut Option<String>> {
                match name {
                    $(stringify!($field) => Slot::text_mut(&mut self.$field),)*
                    _ => None,
                }
            }
        }
    };
}

edit_form! {
    /// An edit as sent: the multipart form of `POST /v1/edits` and the flags
    /// of `byteedit edit` (where `image`, `mask` and `model` are paths
    /// instead, and `webhook_url` does not apply).
    #[derive(Debug, Clone, Default, PartialEq, clap::Args, utoipa::ToSchema)]
    pub struct EditForm {
        /// PNG, JPEG or WebP of any size within the limits; the format is read
        /// from the bytes. Without `mask`, its transparent pixels (alpha below
        /// 50 %) mark the region to edit.
        #[arg(skip)]
        #[schema(format = Binary)]
        image: Option<Bytes> as String,
        /// Grey or binary image, same size as `image` (or any size with
        /// `mask_resize=true`); pixels at 50 % grey or more are edited. Required
        /// for `inpaint` and `erase` unless the image has transparency; for
        /// `outpaint` it marks extra area to repaint.
        #[arg(skip)]
        #[schema(format = Binary)]
        mask: Option<Bytes> as Option<String>,
        /// `inpaint` (fill the mask with the prompt), `erase` (remove what the
        /// mask covers; no prompt needed) or `outpaint` (extend the canvas).
        #[arg(long)]
        task: Option<String> as String,
        /// Required for `inpaint`; optional otherwise.
        #[arg(long)]
        prompt: Option<String> as Option<String>,
        /// Default for `erase`: the model's `erase_negative_prompt`.
        #[arg(long)]
        negative_prompt: Option<String> as Option<String>,
        /// A name from `GET /v1/models`; default: the only (or configured) model.
        #[arg(skip)]
        model: Option<String> as Option<String>,
        /// Denoising steps, 1 to the model's `max_steps`; default: the model's.
        #[arg(long, allow_hyphen_values = true)]
        steps: Option<String> as Option<u32>,
        /// Classifier-free guidance, 0 to 50; at most 1 turns guidance off.
        #[arg(long, alias = "guidance", allow_hyphen_values = true)]
        guidance_scale: Option<String> as Option<f64>,
        /// One of the model's `schedulers`.
        #[arg(long)]
        scheduler: Option<String> as Option<String>,
        /// 0 to 2^53-1; default: random (the job reports the one used).
        #[arg(long, allow_hyphen_values = true)]
        seed: Option<String> as Option<u64>,
        /// 1 to 4 images, with seeds `seed`, `seed+1`, ...
        #[arg(long)]
        num_outputs: Option<String> as Option<u32>,
        /// Outpainting: pixels to add on the left (0 to 2048).
        #[arg(long)]
        extend_left: Option<String> as Option<u32>,
        #[arg(long)]
        extend_right: Option<String> as Option<u32>,
        #[arg(long)]
        extend_top: Option<String> as Option<u32>,
        #[arg(long)]
        extend_bottom: Option<String> as Option<u32>,
        /// Outpainting, instead of `extend_*`: the canvas width (at least the image's).
        #[arg(long)]
        target_width: Option<String> as Option<u32>,
        /// Outpainting: the canvas height (at least the image's).
        #[arg(long)]
        target_height: Option<String> as Option<u32>,
        /// Outpainting, instead of a target size: `W:H` (e.g. `16:9`); the
        /// smallest canvas with this ratio that holds the image.
        #[arg(long)]
        aspect_ratio: Option<String> as Option<String>,
        /// Outpainting with a target size or ratio: where the image sits:
        /// `center` (default), `top-left`, `top`, `top-right`, `left`, `right`,
        /// `bottom-left`, `bottom`, `bottom-right`.
        #[arg(long)]
        anchor: Option<String> as Option<String>,
        /// Outpainting: how far the mask reaches into the image along each
        /// extended side (0 to 256, default 8), so the seam is repainted.
        #[arg(long)]
        overlap: Option<String> as Option<u32>,
        /// Grow (> 0) or shrink (< 0) the mask by this many pixels (-256 to 256, default 0).
        #[arg(long, allow_hyphen_values = true)]
        mask_grow: Option<String> as Option<i32>,
        /// Blend band (0 to 128, default 8): the edit fades out within twice
        /// this many pixels outside the mask; beyond it the output is the input.
        #[arg(long)]
        mask_feather: Option<String> as Option<u32>,
        /// `true`: resize a mask of another size to the image instead of refusing it.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        mask_resize: Option<String> as Option<bool>,
        /// Context around the mask given to the model, in pixels (0 to 2048, default 32).
        #[arg(long)]
        crop_padding: Option<String> as Option<u32>,
        /// `true`: match the generated region's colours to its surroundings.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        color_match: Option<String> as Option<bool>,
        /// The size the model edits the crop at: `native` (default: the crop's
        /// aspect ratio at the model's native area), `original` (the crop as it
        /// is, each side rounded to the model's `vae_scale_factor`) or `WxH`
        /// (e.g. `512x768`; multiples of `vae_scale_factor`, at most 2048 a side).
        #[arg(long)]
        working_size: Option<String> as Option<String>,
        /// An http(s) URL (at most 2048 characters) that is `POST`ed a JSON
        /// body when the job ends (succeeded, failed or canceled), signed with
        /// `ByteEdit-Signature` and retried with backoff until it answers 2xx.
        #[arg(skip)]
        #[schema(max_length = 2048)]
        webhook_url: Option<String> as Option<String>,
    }
}

impl EditForm {
    /// The fields that apply only to `outpaint` (they size the canvas).
    pub const OUTPAINT_FIELDS: &'static [&'static str] = &[
        "extend_left",
        "extend_right",
        "extend_top",
        "extend_bottom",
        "target_width",
        "target_height",
        "aspect_ratio",
        "anchor",
        "overlap",
    ];

    /// A text field, trimmed; empty counts as absent.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.text_field(name)
            .flatten()
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// Every text field that was sent, in declaration order.
    pub fn texts(&self) -> impl Iterator<Item = (&'static str, &str)> {
        Self::FIELDS
            .iter()
            .filter_map(|name| Some((*name, self.text_field(name).flatten()?)))
    }

    /// The file fields, by name.
    pub fn files(&self) -> [(&'static str, Option<&Bytes>); 2] {
        [("image", self.image.as_ref()), ("mask", self.mask.as_ref())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_reachable_by_name() {
        let mut form = EditForm::default();
        for name in EditForm::FIELDS {
            match form.text_field_mut(name) {
                Some(slot) => *slot = Some(format!("{name}!")),
                None => assert!(["image", "mask"].contains(name), "{name}"),
            }
        }
        for (name, value) in form.texts() {
            assert_eq!(value, format!("{name}!"));
        }
        assert_eq!(form.texts().count(), EditForm::FIELDS.len() - 2);
        assert!(form.text_field("nope").is_none());
        for name in EditForm::OUTPAINT_FIELDS {
            assert!(EditForm::FIELDS.contains(name), "{name}");
        }
    }

    #[test]
    fn the_flags_are_the_form_fields() {
        use clap::{Args, Command};
        let command = EditForm::augment_args(Command::new("edit"));
        let flags: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        for name in EditForm::FIELDS {
            let flag = name.replace('_', "-");
            let cli_only_elsewhere = ["image", "mask", "model", "webhook_url"].contains(name);
            assert_eq!(flags.contains(&flag), !cli_only_elsewhere, "{name}");
        }
    }
}
