//! From a multipart body to a checked edit: read the parts into the one
//! request type ([`EditForm`]), refusing unknown and repeated fields, and
//! hand it to [`byteedit_edit::validate`], where every field's bound and
//! message lives. Only what is HTTP's is here: the multipart reading, the
//! request fingerprint for idempotency, and picking the model.

use axum::extract::Multipart;
use axum::extract::multipart::MultipartError;
use byteedit_edit::validate::number;
use byteedit_edit::{CanvasLimits, Context, EditForm, Naming, Uploads, ValidEdit, quote};
use byteedit_jobs::db::ModelStatus;
use bytes::Bytes;

use crate::error::ApiError;
use crate::settings::UploadLimits;

/// The form as sent: the edit's fields, and the fields a route adds of its
/// own (`candidate_model`, ...), as text.
#[derive(Debug, Default, Clone)]
pub struct RawEditForm {
    pub edit: EditForm,
    pub extra: Vec<(String, String)>,
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
            let known = EditForm::FIELDS.contains(&name.as_str());
            if !known && !extra.contains(&name.as_str()) {
                return Err(ApiError::invalid(
                    "unknown_field",
                    format!(
                        "unknown form field {}; the fields are {}",
                        quote(&name),
                        [EditForm::FIELDS, extra].concat().join(", ")
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
                "image" => form.edit.image = Some(bytes),
                "mask" => form.edit.mask = Some(bytes),
                _ => {
                    let text = text(&name, bytes)?;
                    match form.edit.text_field_mut(&name) {
                        Some(slot) => *slot = Some(text),
                        None => form.extra.push((name, text)),
                    }
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
        let mut fields: Vec<(&str, &str)> = self.edit.texts().collect();
        fields.extend(self.extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        fields.sort();
        for (name, value) in fields {
            for part in [name.as_bytes(), b"=", value.as_bytes(), b"\0"] {
                hash.update(part);
            }
        }
        for (name, file) in self.edit.files() {
            if let Some(bytes) = file {
                hash.update(name.as_bytes());
                hash.update((bytes.len() as u64).to_le_bytes());
                hash.update(bytes);
            }
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A trimmed text field, of the edit or the route's own; empty counts
    /// as absent.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.edit.value(name).or_else(|| {
            self.extra
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        })
    }

    /// A route's own numeric field, with the edit fields' message.
    pub fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
        &self,
        name: &str,
        min: T,
        max: T,
        kind: &str,
    ) -> Result<Option<T>, ApiError> {
        Ok(number(
            name,
            self.value(name),
            (min, max),
            kind,
            Naming::Form,
        )?)
    }

    /// The model the request names, or the configured/only one.
    pub fn model_name(
        &self,
        default_model: Option<&str>,
        served: &[ModelStatus],
    ) -> Result<String, ApiError> {
        if let Some(name) = self.value("model").or(default_model) {
            return Ok(name.to_owned());
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
                    served
                        .iter()
                        .map(|m| m.info.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// A text part: UTF-8 without NUL.
fn text(name: &str, bytes: Bytes) -> Result<String, ApiError> {
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::invalid("invalid_field", format!("`{name}` is not UTF-8 text")))?;
    refuse_nul(&format!("`{name}`"), &text)?;
    Ok(text)
}

/// Refuses text with a NUL character, which Postgres text (and so any
/// query that uses it) cannot hold: a 422 naming `what`, not a 500.
pub fn refuse_nul(what: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("{what} contains a NUL character (U+0000), which cannot be stored; remove it"),
        ));
    }
    Ok(())
}

/// The deployment's canvas limits.
pub fn canvas_limits(uploads: &UploadLimits) -> CanvasLimits {
    CanvasLimits {
        max_side: uploads.max_image_side,
        max_megapixels: uploads.max_megapixels,
    }
}

/// A checked edit and the files to store for it.
#[derive(Debug)]
pub struct Checked {
    pub edit: ValidEdit,
    /// The image as stored: the upload cut at the image's end.
    pub image: Bytes,
    pub mask: Option<Bytes>,
}

/// Checks a form for `model`, decoding every file whole once (call it off
/// the async threads).
pub fn validate(
    form: &RawEditForm,
    limits: CanvasLimits,
    model: &ModelStatus,
) -> Result<Checked, ApiError> {
    let uploads = Uploads::new(form.edit.image.as_ref(), form.edit.mask.as_ref(), limits);
    let edit = byteedit_edit::validate(&form.edit, &uploads, &Context::form(&model.info, limits))?;
    let (image, mask) = uploads.stored()?;
    // Validation refuses a form without an image.
    let image = image.ok_or_else(|| ApiError::Internal("a validated form has no image".into()))?;
    Ok(Checked { edit, image, mask })
}
