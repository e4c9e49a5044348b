//! Property tests of the upload path: arbitrary multipart forms (field
//! names, values, file bytes) go through the real multipart parser, the
//! form reader and the validation. Nothing may panic; every refusal is a 4xx
//! in the API's error shape, and a 422 names the field to fix.

use axum::extract::{FromRequest, Multipart, Request};
use byteedit_api::ApiArgs;
use byteedit_api::validation::{RawEditForm, canvas_limits, validate};
use byteedit_edit::EditForm;
use byteedit_jobs::ModelInfo;
use byteedit_jobs::db::ModelStatus;
use byteedit_models::image_io::png_header;
use proptest::prelude::*;

const BOUNDARY: &str = "byteeditfuzzboundary";

/// The form fields of `POST /v1/edits` and a few that do not exist.
fn names() -> Vec<&'static str> {
    let mut names = EditForm::FIELDS.to_vec();
    names.extend(["Image", "steps ", "", "x"]);
    names
}

/// The text fields (everything but the files).
fn text_fields() -> Vec<&'static str> {
    EditForm::FIELDS
        .iter()
        .copied()
        .filter(|n| !["image", "mask"].contains(n))
        .collect()
}

/// Failures found by the property tests are saved beside this file and
/// replayed first on every run (proptest cannot find a `lib.rs` to save
/// next to for an integration test).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fuzz_form.proptest-regressions"
            )),
        )),
        ..ProptestConfig::default()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/tests/fixtures/sd15-inpaint-tiny/"
    );
    std::fs::read(format!("{path}{name}")).expect("fixture")
}

fn model() -> ModelStatus {
    ModelStatus {
        info: ModelInfo {
            name: "tiny".into(),
            vae_scale_factor: 8,
            default_steps: 20,
            max_steps: 100,
            default_guidance_scale: 7.5,
            default_scheduler: "ddim".into(),
            schedulers: vec!["ddim".into(), "euler".into(), "dpmpp-2m".into()],
            native_size: 64,
            erase_negative_prompt: String::new(),
        },
        workers: 1,
        updated_at: chrono::Utc::now(),
    }
}

/// A value: text that looks like what the fields take, edge numbers, or noise.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "inpaint",
            "erase",
            "outpaint",
            "tiny",
            "ddim",
            "euler",
            "0",
            "1",
            "-1",
            "4",
            "5",
            "100",
            "101",
            "2048",
            "2049",
            "4096",
            "1e309",
            "NaN",
            "inf",
            "-0",
            "0.5",
            "18446744073709551616",
            "9007199254740992",
            "true",
            "false",
            "maybe",
            "16:9",
            "0:0",
            "100:1",
            "1:1000",
            "center",
            "top-left",
            "nowhere",
            "http://127.0.0.1:1/x",
            "https://example.com/hook?a=1",
            "ftp://example.com",
            "http://user:pw@host/",
            "javascript:alert(1)",
            "",
            " ",
            "\u{0}",
            "a red apple",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        ".{0,40}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// File bytes: the fixture, a truncated copy, a bomb header, or noise.
fn file() -> impl Strategy<Value = Vec<u8>> {
    let image = fixture("expected_image.png");
    let mask = fixture("expected_mask.png");
    prop_oneof![
        Just(image.clone()),
        Just(mask),
        (0..image.len()).prop_map(move |n| image[..n].to_vec()),
        prop::collection::vec(any::<u8>(), 0..256),
        (1u32..200_000, 1u32..200_000).prop_map(|(w, h)| png_header(w, h)),
    ]
}

/// One part: its name (`raw` names may carry quotes or line breaks) and body.
fn part() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop_oneof![
        4 => prop::sample::select(names()).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
        1 => ".{0,16}",
    ];
    (name, any::<bool>()).prop_flat_map(|(name, is_file)| {
        let body = if is_file || name == "image" || name == "mask" {
            file().boxed()
        } else {
            value().boxed()
        };
        (Just(name), body)
    })
}

fn body(parts: &[(String, Vec<u8>)], truncate: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in parts {
        out.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if name == "image" || name == "mask" {
            // The name and type lie on purpose: the format comes from the bytes.
            out.extend(b"; filename=\"x.jpg\"\r\nContent-Type: image/jpeg");
        }
        out.extend(b"\r\n\r\n");
        out.extend(bytes);
        out.extend(b"\r\n");
    }
    out.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    if let Some(n) = truncate {
        out.truncate(n.min(out.len()));
    }
    out
}

/// Reads and validates a form as `POST /v1/edits` does.
fn submit(
    parts: &[(String, Vec<u8>)],
    truncate: Option<usize>,
) -> Result<Result<byteedit_api::validation::Checked, byteedit_api::ApiError>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let request = Request::builder()
        .method("POST")
        .uri("/v1/edits")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(axum::body::Body::from(body(parts, truncate)))
        .map_err(|e| e.to_string())?;
    let config = ApiArgs::default().settings();
    let limits = canvas_limits(&config.uploads);
    let read = runtime.block_on(async {
        let multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| format!("multipart extractor: {}", e.body_text()))?;
        Ok::<_, String>(RawEditForm::read(multipart, config.uploads.max_upload_mb, &[]).await)
    })?;
    Ok(read.and_then(|form| validate(&form, limits, &model())))
}

/// The properties: no panic (proptest reports one), Ok or a 4xx, and a 422
/// names a field.
fn check(parts: Vec<(String, Vec<u8>)>, truncate: Option<usize>) -> Result<(), TestCaseError> {
    let outcome = submit(&parts, truncate).map_err(TestCaseError::fail)?;
    let Err(e) = outcome else { return Ok(()) };
    let status = e.status().as_u16();
    prop_assert!(
        matches!(status, 400 | 413 | 422),
        "status {status} for {e} ({})",
        e.code()
    );
    let message = e.to_string();
    prop_assert!(!message.is_empty());
    if status == 422 {
        // The parser may cut a hostile name short (at a quote): a backticked
        // name that is a field, or part of a sent name, counts.
        let named = message.split('`').skip(1).step_by(2).any(|quoted| {
            names().contains(&quoted) || parts.iter().any(|(n, _)| n.contains(quoted))
        });
        prop_assert!(named, "422 `{}` does not name a field: {message}", e.code());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn arbitrary_forms_are_accepted_or_refused_with_a_4xx_naming_the_field(
        parts in prop::collection::vec(part(), 0..8),
        truncate in prop::option::weighted(0.1, 0usize..2048),
    ) {
        check(parts, truncate)?;
    }

    /// A valid image and mask with arbitrary values of the real fields: the
    /// validation proper, past the file checks.
    #[test]
    fn arbitrary_values_of_real_fields_are_accepted_or_a_422_naming_the_field(
        fields in prop::collection::btree_map(
            prop::sample::select(text_fields()).prop_map(str::to_owned), value(), 0..10),
        with_mask in any::<bool>(),
    ) {
        let mut parts = vec![("image".to_owned(), fixture("expected_image.png"))];
        if with_mask {
            parts.push(("mask".to_owned(), fixture("expected_mask.png")));
        }
        parts.extend(fields);
        check(parts, None)?;
    }

    /// Outpainting's own fields, which interact (sides, targets, ratio, anchor).
    #[test]
    fn arbitrary_outpaint_requests_are_accepted_or_a_422_naming_the_field(
        fields in prop::collection::btree_map(
            prop::sample::select(EditForm::OUTPAINT_FIELDS.to_vec()).prop_map(str::to_owned), value(), 0..6),
    ) {
        let mut parts = vec![
            ("image".to_owned(), fixture("expected_image.png")),
            ("task".to_owned(), b"outpaint".to_vec()),
        ];
        parts.extend(fields);
        check(parts, None)?;
    }
}

#[test]
fn the_format_comes_from_the_bytes_not_the_name_or_type() {
    // Sent as `x.jpg`, `image/jpeg` (see `body`): read as the PNG it is.
    let parts = vec![
        ("image".to_owned(), fixture("expected_image.png")),
        ("mask".to_owned(), fixture("expected_mask.png")),
        ("task".to_owned(), b"erase".to_vec()),
    ];
    let edit = submit(&parts, None).unwrap().unwrap();
    assert_eq!(edit.edit.canvas, (64, 64));
    // Text bytes under an image name: a 422 naming the field.
    let mut noise = parts.clone();
    noise[1].1 = b"GIF89a, or rather not an image at all".to_vec();
    let e = submit(&noise, None).unwrap().unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (422, "invalid_image"));
    assert!(e.to_string().contains("`mask`"), "{e}");
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    let parts = vec![
        ("image".to_owned(), png_header(100_000, 100_000)),
        ("task".to_owned(), b"erase".to_vec()),
    ];
    let started = std::time::Instant::now();
    let e = submit(&parts, None).unwrap().unwrap_err();
    assert_eq!(
        (e.status().as_u16(), e.code()),
        (422, "image_too_large"),
        "{e}"
    );
    assert!(e.to_string().contains("`image`"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

/// Found by the outpaint property test: a ratio that makes the canvas too
/// long was a 422 that named no field. Each way of sizing the canvas names
/// the field that did it.
#[test]
fn a_canvas_too_large_names_the_field_that_asked_for_it() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("aspect_ratio", "100:1")], "`aspect_ratio`"),
        // 16.8 MP: too many pixels, not too long a side.
        (
            &[("target_width", "4096"), ("target_height", "4096")],
            "`target_height`",
        ),
        (
            &[("extend_left", "2048"), ("extend_right", "2048")],
            "`extend_left`",
        ),
        (
            &[("extend_top", "2040"), ("extend_bottom", "2048")],
            "`extend_bottom`",
        ),
    ];
    for (fields, named) in cases {
        let mut parts = vec![
            ("image".to_owned(), fixture("expected_image.png")),
            ("task".to_owned(), b"outpaint".to_vec()),
        ];
        parts.extend(
            fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
        );
        let e = submit(&parts, None).unwrap().unwrap_err();
        assert_eq!(e.code(), "image_too_large", "{fields:?}: {e}");
        assert!(e.to_string().contains(named), "{fields:?}: {e}");
        check(parts, None).unwrap();
    }
}
