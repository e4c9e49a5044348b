//! The committed OpenAPI file must equal the one the code generates.
//! Regenerate it with `UPDATE_OPENAPI=1 cargo test -p byteedit-api --test openapi`.

use std::path::Path;

#[test]
fn committed_openapi_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let generated = byteedit_api::openapi::ApiDoc::json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p byteedit-api --test openapi` and commit it"
    );
}
