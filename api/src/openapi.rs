//! The OpenAPI description, generated from the handlers' annotations. The
//! committed copy in `openapi/openapi.json` is checked against it by a test.

use utoipa::OpenApi;

use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes::{
    comparisons, edits, events, health, jobs, models, preferences, ratings, stats, volunteers,
};

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
        jobs::get_input,
        jobs::get_mask,
        events::job_events,
        models::list_models,
        volunteers::create_volunteer,
        comparisons::create_comparison,
        comparisons::next_comparison,
        comparisons::vote,
        ratings::rate,
        stats::gsb,
        stats::ratings,
        preferences::export,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(
        byteedit_jobs::events::JobEvent,
        comparisons::ComparisonRun,
        crate::webhooks::WebhookEvent
    )),
    modifiers(&VolunteerToken),
    tags(
        (name = "edits", description = "Submit edits"),
        (name = "jobs", description = "Follow, list and cancel jobs; download outputs"),
        (name = "models", description = "What the workers serve"),
        (name = "feedback", description = "Volunteers' Good/Same/Bad votes on pairs, expert ratings, statistics and the training export"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// The `volunteer_token` bearer scheme of the voting and rating routes.
struct VolunteerToken;

impl Modify for VolunteerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "volunteer_token",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

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
