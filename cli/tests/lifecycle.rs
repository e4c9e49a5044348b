//! A job's life after it ends, and hostile input, through the real service:
//! retention (410 once expired, feedback exempt), signed webhooks retried
//! until a real receiver accepts them, and uploads that try to exhaust the
//! API or the worker.

mod support;

use byteedit_models::image_io::png_header;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use byteedit_edit::EditForm;
use byteedit_jobs::db::webhooks;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{MODEL, Service, error_code, fixture_bytes, fixture_form};
use tokio::sync::Mutex;

fn png(image: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// A finished erase job, submitted with `http` (a client or `svc.admin`).
async fn succeeded_job(svc: &Service, http: &reqwest::Client) -> String {
    let form = fixture_form(&[("task", "erase"), ("steps", "1"), ("model", MODEL)], true);
    let (status, job) = svc.post_form_as(http, "/v1/edits", form).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    svc.wait_for_as(http, &id, |j| j["status"] == "succeeded")
        .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_jobs_lose_their_images_and_answer_410_but_feedback_keeps_its_own() {
    let mut svc = Service::start_with(0, |api| {
        api.retention = byteedit_api::config::Retention(Some(Duration::from_secs(3600)));
        api.retention_sweep_secs = 0.2;
    })
    .await;
    svc.add_worker_for(&[MODEL, "tiny-v2"]).await;
    let plain = succeeded_job(&svc, &svc.http).await;
    // Experts rate what admins submit for rating (and comparisons' jobs).
    let rated = succeeded_job(&svc, &svc.admin).await;
    let for_rating = succeeded_job(&svc, &svc.admin).await;
    let expert = svc.volunteer("eve", true).await;
    let (status, r) = svc
        .post_json(
            &format!("/v1/jobs/{rated}/ratings"),
            Some(&expert),
            json!({"coherence": 4, "structure": 4}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let comparison = svc.comparison_run(MODEL, "tiny-v2", "erase").await;
    let compared = comparison["candidate_job"].as_str().unwrap().to_owned();
    let folder = |job: &str| svc.storage_dir().join("jobs").join(job);
    assert_eq!(files_under(&folder(&plain)), 3, "input, mask, one output");

    // Nothing is due yet: a fresh sweep leaves everything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(svc.get(&format!("/v1/jobs/{plain}")).await.0, 200);
    // Two hours later (as far as Postgres can tell).
    sqlx::query("UPDATE jobs SET finished_at = finished_at - interval '2 hours'")
        .execute(&svc.backends.db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (purged,): (bool,) =
            sqlx::query_as("SELECT purged_at IS NOT NULL FROM jobs WHERE id = $1::uuid")
                .bind(&plain)
                .fetch_one(&svc.backends.db)
                .await
                .unwrap();
        if purged {
            break;
        }
        assert!(Instant::now() < deadline, "the sweep did not purge the job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        files_under(&folder(&plain)),
        0,
        "every file of the job is deleted"
    );
    for path in ["", "/outputs/0", "/input", "/mask", "/events"] {
        let (status, body) = svc.get(&format!("/v1/jobs/{plain}{path}")).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (410, "expired"),
            "{path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("expired") && message.contains(&plain),
            "{message}"
        );
    }
    // An expert may not rate a client's job at all (404); an expired job an
    // admin submitted for rating is a 410.
    let (status, _) = svc
        .post_json(
            &format!("/v1/jobs/{plain}/ratings"),
            Some(&expert),
            json!({"coherence": 4, "structure": 4}),
        )
        .await;
    assert_eq!(status, 404);
    sqlx::query("UPDATE jobs SET expired_at = now() WHERE id = $1::uuid")
        .bind(&for_rating)
        .execute(&svc.backends.db)
        .await
        .unwrap();
    let (status, r) = svc
        .post_json(
            &format!("/v1/jobs/{for_rating}/ratings"),
            Some(&expert),
            json!({"coherence": 4, "structure": 4}),
        )
        .await;
    assert_eq!((status, error_code(&r).as_str()), (410, "expired"));
    // The list still shows it, as expired and without dead links.
    let (status, list) = svc.get("/v1/jobs?limit=100").await;
    assert_eq!(status, 200);
    let listed = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == plain.as_str())
        .unwrap();
    assert!(listed["expired_at"].is_string(), "{listed}");
    assert_eq!(listed["status"], "succeeded");
    assert_eq!(listed["outputs"], json!([]));

    // Feedback's jobs keep their images: they are training data. (The
    // comparison's jobs are the admin's, who made them.)
    for job in [&rated, &compared] {
        let (status, body) = svc.get_as(&format!("/v1/jobs/{job}"), &svc.admin_key).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("expired_at").is_none(), "{body}");
        let (status, _, bytes) = svc
            .download_as(&svc.admin, &format!("/v1/jobs/{job}/outputs/0"))
            .await;
        assert_eq!(status, 200);
        assert!(bytes.starts_with(b"\x89PNG"));
        assert_eq!(files_under(&folder(job)), 3);
    }
    svc.finish().await;
}

const SECRET: &str = "whsec-test-secret";

/// What the receiver saw: headers and raw body of each request.
type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on an ephemeral port that answers 503 to the first
/// request and 200 after.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| async move {
                seen.lock().await.push((headers, body.to_vec()));
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Verifies a delivery as the README tells receivers to.
fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get("byteedit-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("byteedit-signature")
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Some(hex) = sig.strip_prefix("v1=") else {
        return false;
    };
    let Ok(expected) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    fresh && mac.verify_slice(&expected).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_signed_and_retried_until_the_receiver_accepts_it() {
    let (url, seen) = receiver().await;
    let svc = Service::start_with(1, |api| {
        api.webhook_secret = Some(SECRET.into());
        api.webhook_backoff_secs = 0.5;
        api.public_url = Some("https://edit.example.com/".into());
    })
    .await;
    let (status, job) = svc
        .submit(
            &[
                ("task", "erase"),
                ("steps", "1"),
                ("webhook_url", url.as_str()),
            ],
            true,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["webhook_url"], url.as_str());
    let id = job["id"].as_str().unwrap().to_owned();
    svc.wait_for(&id, |j| j["status"] == "succeeded").await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().await.len() < 2 {
        assert!(Instant::now() < deadline, "no retry arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a (wrong) third delivery the chance to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = seen.lock().await.clone();
    assert_eq!(
        seen.len(),
        2,
        "one failed attempt, one accepted retry, nothing after"
    );
    let delivery = seen[0].0["byteedit-delivery"].to_str().unwrap().to_owned();
    for (headers, body) in &seen {
        assert!(verify(headers, body, SECRET), "bad signature: {headers:?}");
        assert!(!verify(headers, body, "another-secret"));
        let mut tampered = body.clone();
        tampered.push(b' ');
        assert!(
            !verify(headers, &tampered, SECRET),
            "a changed body must not verify"
        );
        assert_eq!(
            headers["byteedit-delivery"],
            delivery.as_str(),
            "a retry keeps its id"
        );
        assert_eq!(headers["byteedit-event"], "job.succeeded");
        assert_eq!(headers["content-type"], "application/json");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["id"], delivery.as_str());
        assert_eq!(event["type"], "job.succeeded");
        assert_eq!(event["job"]["id"], id.as_str());
        assert_eq!(event["job"]["status"], "succeeded");
        assert_eq!(
            event["job"]["outputs"][0]["url"],
            format!("https://edit.example.com/v1/jobs/{id}/outputs/0")
        );
    }
    let recorded = webhooks::of_job(&svc.backends.db, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let r = &recorded[0];
    assert_eq!((r.attempts, r.last_status), (2, Some(200)), "{r:?}");
    assert!(r.delivered_at.is_some() && r.gave_up_at.is_none(), "{r:?}");
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_canceled_while_queued_is_announced_too() {
    let (url, seen) = receiver().await;
    // A worker registers the model, then leaves: the job stays queued.
    let mut svc = Service::start_with(1, |api| api.webhook_backoff_secs = 0.2).await;
    svc.workers.pop().unwrap().stop().await.unwrap();
    let (status, job) = svc
        .submit(&[("task", "erase"), ("webhook_url", url.as_str())], true)
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(svc.delete(&format!("/v1/jobs/{id}")).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().await.len() < 2 {
        assert!(Instant::now() < deadline, "no delivery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.lock().await.clone();
    let event: Value = serde_json::from_slice(&seen[1].1).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["job"]["status"].as_str()),
        (Some("job.canceled"), Some("canceled"))
    );
    // No secret configured: sent, but unsigned.
    assert!(seen[1].0.get("byteedit-signature").is_none());
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_mislabelled_uploads_get_a_cheap_json_4xx() {
    let svc = Service::start_with(1, |api| api.max_upload_mb = 1).await;
    let form = |image: Vec<u8>, name: &str, kind: &str| {
        reqwest::multipart::Form::new()
            .text("task", "erase")
            .text("steps", "1")
            .part(
                "image",
                reqwest::multipart::Part::bytes(image)
                    .file_name(name.to_owned())
                    .mime_str(kind)
                    .unwrap(),
            )
            .part(
                "mask",
                reqwest::multipart::Part::bytes(fixture_bytes("expected_mask.png"))
                    .file_name("mask.png"),
            )
    };
    // A PNG called a JPEG is read as the PNG it is.
    let (status, job) = svc
        .post_form(form(
            fixture_bytes("expected_image.png"),
            "x.jpg",
            "image/jpeg",
        ))
        .await;
    assert_eq!(status, 202, "{job}");
    // Text called a PNG is a 422 that names the field.
    let (status, body) = svc
        .post_form(form(b"hello, not an image".to_vec(), "x.png", "image/png"))
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (422, "invalid_image"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`image`")
    );

    // Decompression bombs: a 50-byte header declaring 10 gigapixels, and a
    // blank 4096x4096 PNG compressed to a few KB (16.8 MP, over the 16 MP
    // limit). Both are refused from the header, before any pixel is decoded.
    let blank = png(image::DynamicImage::ImageLuma8(image::GrayImage::new(
        4096, 4096,
    )));
    assert!(blank.len() < 100_000, "{} bytes", blank.len());
    for bomb in [png_header(100_000, 100_000), blank] {
        let started = Instant::now();
        let (status, body) = svc.post_form(form(bomb, "bomb.png", "image/png")).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (422, "image_too_large"),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`image`")
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    // Body caps: the upload limit on multipart routes, a small one on JSON routes.
    let big = vec![0u8; 1_200_000];
    let (status, body) = svc.post_form(form(big, "big.png", "image/png")).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "payload_too_large"),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("1 MB"));
    let long_name = "n".repeat(100_000);
    let (status, body) = svc
        .post_json(
            "/v1/keys",
            Some(&svc.admin_key),
            json!({"name": long_name, "role": "volunteer"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "payload_too_large"),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("64 KB"));
    let (status, body) = svc
        .post_json(
            "/v1/keys",
            Some(&svc.admin_key),
            json!({"name": "a\u{0}b", "role": "volunteer"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (422, "invalid_field"),
        "{body}"
    );

    // Unknown fields and bad values name the field.
    for (field, value, code) in [
        ("colour_match", "true", "unknown_field"),
        ("webhook_url", "ftp://example.com/hook", "invalid_field"),
        ("webhook_url", "not a url", "invalid_field"),
        (
            "webhook_url",
            "http://user:secret@example.com/",
            "invalid_field",
        ),
        ("steps", "100000", "invalid_field"),
        // Postgres cannot store NUL: a 422, not a 500.
        ("prompt", "an\u{0}apple", "invalid_field"),
    ] {
        let (status, body) = svc.submit(&[("task", "erase"), (field, value)], true).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (422, code),
            "{field}={value}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
    let long_url = format!("https://example.com/{}", "a".repeat(2100));
    let (status, body) = svc
        .submit(
            &[("task", "erase"), ("webhook_url", long_url.as_str())],
            true,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("2048"));
    svc.finish().await;
}

/// A lossless WebP whose header declares 16384x16384 pixels (issue 13):
/// image-webp 0.2.4 reads that side as 0.
const WEBP_16384: &[u8] = b"\x52\x49\x46\x46\x18\x00\x00\x00\x57\x45\x42\x50\x56\x50\x38\x4c\x0c\x00\x00\x00\x2f\xff\xff\xff\x1f\x28\x60\x15\x4a\xd1\xff\x00";

/// A RIFF WebP of one chunk `kind` holding `data`: a header, no pixels.
fn webp_header(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = b"RIFF".to_vec();
    out.extend((12 + data.len() as u32).to_le_bytes());
    out.extend(b"WEBPVP8");
    out.extend(&kind[3..]);
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out
}

fn encoded(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), format)
        .unwrap();
    out
}

/// An outpaint form: nothing but the image is needed.
fn outpaint_form(image: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("task", "outpaint")
        .text("extend_right", "8")
        .text("steps", "1")
        .part(
            "image",
            reqwest::multipart::Part::bytes(image).file_name("image"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_are_read_as_the_file_writes_them_and_truncated_files_are_refused_at_upload() {
    // Jobs stay queued: only the API's answers matter here.
    let mut svc = Service::start(0).await;
    svc.register_model_only().await;

    // Every size too large is one code and the limits' sentence, whatever
    // the format and however far beyond the limit.
    let side = |w: u32, h: u32| ((w - 1) | (h - 1) << 14).to_le_bytes();
    let vp8l_5000 = webp_header(b"VP8L", &[&[0x2F][..], &side(5000, 5000), &[0; 7]].concat());
    let vp8x_2_24 = webp_header(
        b"VP8X",
        &[0x10, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    );
    for (what, bytes, size) in [
        ("lossless WebP 16384", WEBP_16384.to_vec(), "16384x16384"),
        ("lossless WebP 5000", vp8l_5000, "5000x5000"),
        ("extended WebP 2^24", vp8x_2_24, "16777216x16777216"),
        (
            "PNG 2^30",
            png_header(1 << 30, 1 << 30),
            "1073741824x1073741824",
        ),
        ("PNG 2^31-1", png_header((1 << 31) - 1, 1), "2147483647x1"),
        (
            "PNG 2^26",
            png_header(1 << 26, 1 << 26),
            "67108864x67108864",
        ),
    ] {
        let (status, body) = svc.post_form(outpaint_form(bytes)).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (422, "image_too_large"),
            "{what}: {body}"
        );
        assert_eq!(
            body["error"]["message"],
            format!("`image` is {size}; each side must be at most 4096 pixels"),
            "{what}"
        );
    }

    // A PNG, a JPEG (zune-jpeg would fill its missing half with grey and the
    // job would succeed) and a WebP cut in half are refused at upload; the
    // whole files are accepted.
    let png = fixture_bytes("expected_image.png");
    let decoded = image::load_from_memory(&png).unwrap();
    let rgb = image::DynamicImage::ImageRgb8(decoded.to_rgb8());
    let jpeg = encoded(&rgb, image::ImageFormat::Jpeg);
    let webp = encoded(&decoded, image::ImageFormat::WebP);
    for (what, whole) in [("PNG", png), ("JPEG", jpeg), ("WebP", webp)] {
        let (status, job) = svc.post_form(outpaint_form(whole.clone())).await;
        assert_eq!(status, 202, "{what}: {job}");
        assert_eq!(
            (job["width"].as_u64(), job["height"].as_u64()),
            (Some(72), Some(64)),
            "{what}: {job}"
        );
        let half = whole[..whole.len() / 2].to_vec();
        let (status, body) = svc.post_form(outpaint_form(half)).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (422, "invalid_image"),
            "{what}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("`image` looks truncated")
                && message.ends_with("upload the complete file"),
            "{what}: {message}"
        );
    }
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_image_is_stored_not_the_bytes_sent_after_it() {
    let mut svc = Service::start(0).await;
    svc.register_model_only().await;
    let (image, mask) = (
        fixture_bytes("expected_image.png"),
        fixture_bytes("expected_mask.png"),
    );
    // 60 MB of junk after a 64x64 PNG: within the 64 MB upload limit.
    let mut sent = image.clone();
    sent.extend(std::iter::repeat_n(0x5A, 60_000_000));
    let mut sent_mask = mask.clone();
    sent_mask.extend(b"trailing words after the mask's IEND chunk");
    let form = reqwest::multipart::Form::new()
        .text("task", "erase")
        .part(
            "image",
            reqwest::multipart::Part::bytes(sent).file_name("image.png"),
        )
        .part(
            "mask",
            reqwest::multipart::Part::bytes(sent_mask).file_name("mask.png"),
        );
    let (status, job) = svc.post_form(form).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    let (status, _, stored) = svc.download(&format!("/v1/jobs/{id}/input")).await;
    assert_eq!(status, 200);
    assert_eq!(
        stored.len(),
        image.len(),
        "the stored input is the image alone"
    );
    assert!(stored == image);
    let (status, _, stored) = svc.download(&format!("/v1/jobs/{id}/mask")).await;
    assert_eq!(status, 200);
    assert!(stored == mask, "{} bytes stored", stored.len());
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_of_any_length_is_quoted_by_a_short_prefix() {
    let mut svc = Service::start(0).await;
    svc.register_model_only().await;
    let nines = "9".repeat(500_000);
    let accents = "é".repeat(500_000);
    let texts = EditForm::FIELDS
        .iter()
        .filter(|f| !["image", "mask"].contains(f));
    for &field in texts {
        let value = if field == "anchor" { &accents } else { &nines };
        let task = if EditForm::OUTPAINT_FIELDS.contains(&field) {
            "outpaint"
        } else {
            "erase"
        };
        let mut fields = vec![(field, value.as_str())];
        if field != "task" {
            fields.push(("task", task));
        }
        let (status, body) = svc.submit(&fields, true).await;
        assert_eq!(status, 422, "{field}: {:.300}", body.to_string());
        let code = error_code(&body);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            body.to_string().len() < 1000,
            "{field} ({code}): {:.300}",
            body.to_string()
        );
        assert!(
            message.contains(&format!("`{field}`")) || code == "unknown_model",
            "{field}: {message}"
        );
        // Prompts are refused by their length, not quoted.
        if !field.ends_with("prompt") {
            assert!(
                message.contains("…` (499960 more characters)"),
                "{field}: {message}"
            );
        }
    }
    // A route's own number (comparisons' `votes_wanted`), and a model named
    // in a comparison.
    let long = nines.as_str();
    let cases = [
        (
            "votes_wanted",
            [
                ("candidate_model", "tiny"),
                ("baseline_model", "other"),
                ("votes_wanted", long),
            ],
        ),
        (
            "candidate_model",
            [
                ("candidate_model", long),
                ("baseline_model", "tiny"),
                ("task", "erase"),
            ],
        ),
    ];
    for (field, fields) in cases {
        let mut all = fields.to_vec();
        if field != "candidate_model" {
            all.push(("task", "erase"));
        }
        let form = fixture_form(&all, true);
        let (status, body) = svc.post_form_as(&svc.admin, "/v1/comparisons", form).await;
        assert_eq!(status, 422, "{field}: {:.300}", body.to_string());
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            body.to_string().len() < 1000,
            "{field}: {:.300}",
            body.to_string()
        );
        assert!(
            message.contains("…` (499960 more characters)"),
            "{field}: {message}"
        );
    }
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_stored_image_larger_than_its_job_before_decoding_it() {
    let mut svc = Service::start(1).await;
    // The job waits (no worker) while its stored input is swapped for a
    // larger image than the API accepted.
    svc.workers.pop().unwrap().stop().await.unwrap();
    let (status, job) = svc.submit(&[("task", "erase"), ("steps", "1")], true).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let bigger = png(image::DynamicImage::ImageRgb8(image::RgbImage::new(
        2048, 2048,
    )));
    svc.backends
        .storage
        .put(&format!("jobs/{id}/input"), bigger.into())
        .await
        .unwrap();
    svc.add_worker().await;
    let job = svc
        .wait_for(&id, |j| {
            j["status"] == "failed" || j["status"] == "succeeded"
        })
        .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "invalid_input", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("image"), "{message}");
    svc.finish().await;
}
