//! The OpenAPI description, generated from the handlers' annotations. The
//! committed copy in `openapi/openapi.json` is checked against it by a test.

use utoipa::OpenApi;

use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

use crate::routes::{
    comparisons, edits, events, health, jobs, keys, models, preferences, ratings, rewards, stats,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ByteEdit API",
        description = "Generative image editing: outpainting, inpainting and erasing with a latent-diffusion model. \
Submit an edit with `POST /v1/edits` (multipart), follow it with `GET /v1/jobs/{id}` or its `/events` stream, \
and download the outputs. Every error has the shape `{\"error\": {\"code\", \"message\"}}`, \
also those of the connection itself: 400 `bad_request` (bytes HTTP forbids), 414 `uri_too_long`, \
431 `headers_too_large`, 503 `too_many_connections`; a connection that does not send its headers in time is closed. \
Every route but health and metrics needs `Authorization: Bearer <API key>`; a key's role (`client`, `volunteer`, \
`admin`) says what it may do, and each key has a rate limit (429 with `Retry-After`).",
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
        keys::create_key,
        keys::list_keys,
        keys::revoke_key,
        comparisons::create_comparison,
        comparisons::next_comparison,
        comparisons::vote,
        ratings::rate,
        stats::gsb,
        stats::ratings,
        preferences::export,
        rewards::list_rewards,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(
        byteedit_jobs::events::JobEvent,
        comparisons::ComparisonRun,
        crate::webhooks::WebhookEvent
    )),
    modifiers(&ApiKeys, &Unavailable, &BodyErrors),
    tags(
        (name = "edits", description = "Submit edits"),
        (name = "jobs", description = "Follow, list and cancel jobs; download outputs"),
        (name = "models", description = "What the workers serve"),
        (name = "keys", description = "API keys and their roles (admins)"),
        (name = "feedback", description = "Volunteers' Good/Same/Bad votes on pairs, expert ratings, statistics and the training export"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// Routes anyone may call, without a key.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Routes that read or write the object store, so whose 503 may also be
/// `storage_unavailable`.
const STORAGE_PATHS: [&str; 5] = [
    "/v1/edits",
    "/v1/comparisons",
    "/v1/jobs/{id}/outputs/{index}",
    "/v1/jobs/{id}/input",
    "/v1/jobs/{id}/mask",
];

/// An `ErrorResponse` answer described by `description`.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorResponse")))
            .build(),
    )
}

/// Adds `ErrorResponse` answers to `operation`, keeping any it describes itself.
fn add_errors(operation: &mut utoipa::openapi::path::Operation, errors: &[(&str, &str)]) {
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| error_response(description).build().into());
    }
}

/// Calls `f` with the path and every operation of every path but those in
/// `skip`.
fn each_operation(
    openapi: &mut utoipa::openapi::OpenApi,
    skip: &[&str],
    mut f: impl FnMut(&str, &mut utoipa::openapi::path::Operation),
) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        if skip.contains(&path.as_str()) {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            f(path, operation);
        }
    }
}

/// The `api_key` bearer scheme, required (with its 401, 403 and 429
/// answers) on every route but the open ones: said once here rather than on
/// each handler.
struct ApiKeys;

impl Modify for ApiKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("An API key, `bek_...`"))
                        .build(),
                ),
            );
        }
        each_operation(openapi, &OPEN_PATHS, |_, operation| {
            operation.security = Some(vec![SecurityRequirement::new(
                "api_key",
                Vec::<String>::new(),
            )]);
            add_errors(
                operation,
                &[
                    ("401", "No API key, or an unknown or revoked one"),
                    ("403", "The key's role may not do this"),
                    (
                        "429",
                        "Rate limited (or the queue is full); see `Retry-After`",
                    ),
                ],
            );
        });
    }
}

/// Every route that reads Postgres or Redis answers 503 with `Retry-After`
/// while one of them is down (`database_unavailable`, `queue_unavailable`),
/// and those in [`STORAGE_PATHS`] also while the object store is
/// (`storage_unavailable`): documented once here rather than on each
/// handler. A handler that describes its own 503 keeps its words; it gets
/// the header and the error body from here.
struct Unavailable;

impl Modify for Unavailable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{HeaderBuilder, RefOr, schema::Type};
        let retry_after = HeaderBuilder::new()
            .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
            .description(Some("Seconds to wait before retrying"))
            .build();
        let shared = |description: &str| {
            error_response(description)
                .header("Retry-After", retry_after.clone())
                .build()
        };
        let without_storage = shared(
            "Postgres or Redis is unavailable (`database_unavailable`, `queue_unavailable`); \
             retry after `Retry-After` seconds",
        );
        let with_storage = shared(
            "Postgres, Redis or storage is unavailable (`database_unavailable`, \
             `queue_unavailable`, `storage_unavailable`); retry after `Retry-After` seconds",
        );
        each_operation(openapi, &["/healthz", "/metrics"], |path, operation| {
            let response = if STORAGE_PATHS.contains(&path) {
                &with_storage
            } else {
                &without_storage
            };
            let entry = operation.responses.responses.entry("503".into());
            match entry.or_insert_with(|| response.clone().into()) {
                RefOr::T(own) => {
                    own.headers
                        .entry("Retry-After".into())
                        .or_insert_with(|| retry_after.clone());
                    if own.content.is_empty() {
                        own.content = response.content.clone();
                    }
                }
                RefOr::Ref(_) => {}
            }
        });
    }
}

/// Every route that takes a body answers 400 when it cannot be read, 408
/// when it comes too slowly (`routes/guards.rs`) and 413 above the route's limit (`routes/body.rs`): documented once here; a
/// handler may still describe its own.
struct BodyErrors;

impl Modify for BodyErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        each_operation(openapi, &[], |_, operation| {
            if operation.request_body.is_none() {
                return;
            }
            add_errors(
                operation,
                &[
                    ("400", "The body cannot be read (not JSON, or not a form)"),
                    (
                        "408",
                        "The body did not arrive within the server's body timeout (`body_timeout`); the connection is closed",
                    ),
                    ("413", "The body is larger than the route's limit"),
                ],
            );
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_503(spec: &utoipa::openapi::OpenApi, path: &str) -> utoipa::openapi::Response {
        let item = &spec.paths.paths[path];
        let operation = item.post.as_ref().or(item.get.as_ref()).unwrap();
        match &operation.responses.responses["503"] {
            utoipa::openapi::RefOr::T(response) => response.clone(),
            utoipa::openapi::RefOr::Ref(_) => panic!("{path}: a reference"),
        }
    }

    /// A renamed route must not drop out of the storage list unnoticed.
    #[test]
    fn storage_routes_say_storage_and_the_others_do_not() {
        let spec = ApiDoc::spec();
        for path in STORAGE_PATHS {
            let response = answer_503(&spec, path);
            assert!(response.description.contains("storage"), "{path}");
            assert!(response.headers.contains_key("Retry-After"), "{path}");
            assert!(response.content.contains_key("application/json"), "{path}");
        }
        for path in ["/v1/jobs", "/v1/jobs/{id}", "/v1/keys", "/readyz"] {
            let response = answer_503(&spec, path);
            assert!(!response.description.contains("storage"), "{path}");
            assert!(response.headers.contains_key("Retry-After"), "{path}");
        }
    }
}
