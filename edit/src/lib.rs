//! What an edit is, written once for every part of ByteEdit.
//!
//! [`EditForm`] is the request as callers send it (the API's multipart
//! form, the CLI's flags and the OpenAPI schema are all derived from its one
//! declaration); [`validate`] turns it into a [`ValidEdit`] whose
//! [`EditParams`] are what a job stores and a worker runs, or into an
//! [`EditError`] that names the field. [`geometry`] sizes canvases and
//! working sizes, [`pixels`] says how masks are read. The crate has no
//! database, HTTP or model code, so the API, the workers, the CLI and the
//! engine can all depend on it.

pub mod error;
pub mod form;
pub mod geometry;
pub mod image_file;
pub mod model;
pub mod params;
pub mod pixels;
pub mod task;
pub mod upload;
pub mod validate;

pub use error::{EditError, Naming, quote};
pub use form::{EditForm, bounds};
pub use geometry::{Anchor, Geometry, Rect, Sides, WorkingSize};
pub use model::ModelInfo;
pub use params::{EditParams, defaults};
pub use task::Task;
pub use upload::{CanvasLimits, Decoded, Images, Uploads};
pub use validate::{Context, ValidEdit, validate};
