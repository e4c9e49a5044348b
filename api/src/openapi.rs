//! The OpenAPI description, generated from the handlers' annotations. The
//! committed copy in `openapi/openapi.json` is checked against it by a test.

use utoipa::OpenApi;

use crate::routes::{edits, events, health, jobs, models};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ByteEdit API",
        description = "Generative image editing: outpainting, inpainting and erasing with a latent-diffusion model. \
Submit an edit with `POST /v1/edits` (multipart), follow it with `GET /v1/jobs/{id}` or its `/events` stream, \
and download the outputs. Every error has the shape `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        edits::create_edit,
        jobs::get_job,
        jobs::list_jobs,
        jobs::cancel_job,
        jobs::get_output,
        events::job_events,
        models::list_models,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(byteedit_jobs::events::JobEvent)),
    tags(
        (name = "edits", description = "Submit edits"),
        (name = "jobs", description = "Follow, list and cancel jobs; download outputs"),
        (name = "models", description = "What the workers serve"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
pub struct ApiDoc;

impl ApiDoc {
    pub fn spec() -> utoipa::openapi::OpenApi {
        Self::openapi()
    }

    /// The spec as committed: pretty JSON with a final newline.
    pub fn json() -> String {
        let mut text = Self::spec().to_pretty_json().unwrap_or_default();
        text.push('\n');
        text
    }
}
