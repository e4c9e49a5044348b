//! The service end to end: the real HTTP API, Postgres, Redis and workers
//! running the tiny fixture model.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use byteedit_jobs::EditParams;
use byteedit_models::InpaintModel;
use byteedit_models::image_io::{decode_image, to_rgb};
use futures_util::StreamExt;
use serde_json::Value;
use support::{MODEL, Service, error_code, fixture_form, fixture_plan, tiny_model};

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

/// Fields, with a mask, and the output size expected.
type TaskCase<'a> = (&'a [(&'a str, &'a str)], bool, (u32, u32));
/// Fields, with a mask, and the status, code and message part expected.
type BadCase<'a> = (Vec<(&'a str, &'a str)>, bool, u16, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_runs_through_sse_and_its_outputs_download() {
    let service = Service::start(1).await;
    let cases: [TaskCase; 3] = [
        (
            &[
                ("task", "inpaint"),
                ("prompt", "a red apple"),
                ("steps", "4"),
                ("seed", "7"),
                ("num_outputs", "2"),
            ],
            true,
            (64, 64),
        ),
        (
            &[("task", "erase"), ("steps", "3"), ("scheduler", "ddim")],
            true,
            (64, 64),
        ),
        (
            &[
                ("task", "outpaint"),
                ("extend_left", "16"),
                ("extend_bottom", "8"),
                ("steps", "3"),
                ("guidance_scale", "1"),
            ],
            false,
            (80, 72),
        ),
    ];
    for (fields, with_mask, (w, h)) in cases {
        let (status, job) = service.submit(fields, with_mask).await;
        assert_eq!(status, 202, "{job}");
        assert_eq!(job["status"], "queued");
        let events = service.follow(&id(&job)).await;
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.last(), Some(&"succeeded"), "{names:?}");
        // Progress counts up to steps x outputs, one event per step.
        let steps: Vec<u64> = events
            .iter()
            .filter(|(n, _)| n == "progress")
            .map(|(_, d)| d["step"].as_u64().unwrap())
            .collect();
        let total = job["parameters"]["steps"].as_u64().unwrap()
            * job["parameters"]["num_outputs"].as_u64().unwrap();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        // A late client gets the current state first, so early steps may be
        // missing, but what arrives counts up and never passes the total.
        assert!(steps.iter().all(|s| *s <= total), "{steps:?} > {total}");
        let done = &events.last().unwrap().1["job"];
        assert_eq!(done["status"], "succeeded");
        assert_eq!(
            (
                done["width"].as_u64().unwrap() as u32,
                done["height"].as_u64().unwrap() as u32
            ),
            (w, h)
        );
        let outputs = done["outputs"].as_array().unwrap();
        assert_eq!(
            outputs.len() as u64,
            job["parameters"]["num_outputs"].as_u64().unwrap()
        );
        for output in outputs {
            let (status, kind, png) = service.download(output["url"].as_str().unwrap()).await;
            assert_eq!((status, kind.as_str()), (200, "image/png"));
            let image = decode_image(&png, "output").unwrap();
            assert_eq!((image.width(), image.height()), (w, h));
        }
        assert!(done["timings"]["model_ms"].as_f64().unwrap() > 0.0);
        // A client that connects after the end gets the final state at once.
        let late = service.follow(&id(&job)).await;
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!(late[0].0, "succeeded");
        assert_eq!(late[0].1["job"]["outputs"], done["outputs"]);
    }
    service.finish().await;
}

/// What the service returns is exactly what the engine makes for the
/// job's effective parameters: nothing is lost or changed on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_output_equals_a_direct_engine_run_with_the_reported_parameters() {
    let service = Service::start(1).await;
    let (status, job) = service
        .submit(
            &[
                ("task", "inpaint"),
                ("prompt", "a blue door"),
                ("negative_prompt", "blurry"),
                ("steps", "5"),
                ("guidance_scale", "6.5"),
                ("scheduler", "euler"),
            ],
            true,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let done = service
        .wait_for(&id(&job), |j| j["status"] == "succeeded")
        .await;
    let (_, _, png) = service
        .download(done["outputs"][0]["url"].as_str().unwrap())
        .await;
    let served = to_rgb(&decode_image(&png, "served").unwrap());

    let p = &done["parameters"];
    assert!(
        p["seed"].as_u64().is_some(),
        "the chosen seed is reported: {p}"
    );
    let model =
        InpaintModel::<byteedit_models::CpuBackend>::load(&tiny_model(), &Default::default())
            .unwrap();
    let params: EditParams = serde_json::from_value(p.clone()).unwrap();
    let (plan, request) = fixture_plan(&model, &params);
    let direct = plan.finish(
        &model
            .edit(&request, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap()
            .to_rgb8()
            .unwrap(),
    );
    assert_eq!(served.as_raw(), direct.as_raw());
    // The reported geometry is the plan's.
    let g = &done["geometry"];
    assert_eq!(g["crop"]["x"], plan.crop.x);
    assert_eq!(g["crop"]["width"], plan.crop.width);
    assert_eq!(g["working_width"], plan.working_size().0);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_that_names_what_to_fix() {
    let service = Service::start(1).await;
    let inpaint = [("task", "inpaint"), ("prompt", "x")];
    let cases: Vec<BadCase> = vec![
        (vec![("prompt", "x")], true, 422, "missing_field", "`task`"),
        (
            vec![("task", "paint")],
            true,
            422,
            "invalid_field",
            "inpaint, erase, outpaint",
        ),
        (
            vec![("task", "inpaint")],
            true,
            422,
            "missing_field",
            "`prompt`",
        ),
        (inpaint.to_vec(), false, 422, "missing_field", "`mask`"),
        (
            [&inpaint[..], &[("steps", "0")]].concat(),
            true,
            422,
            "invalid_field",
            "`steps` must be an integer from 1 to 100",
        ),
        (
            [&inpaint[..], &[("steps", "ten")]].concat(),
            true,
            422,
            "invalid_field",
            "got `ten`",
        ),
        (
            [&inpaint[..], &[("guidance_scale", "NaN")]].concat(),
            true,
            422,
            "invalid_field",
            "`guidance_scale`",
        ),
        (
            [&inpaint[..], &[("scheduler", "pndm")]].concat(),
            true,
            422,
            "invalid_field",
            "ddim, euler, dpmpp-2m",
        ),
        (
            [&inpaint[..], &[("num_outputs", "5")]].concat(),
            true,
            422,
            "invalid_field",
            "from 1 to 4",
        ),
        (
            [&inpaint[..], &[("seed", "-1")]].concat(),
            true,
            422,
            "invalid_field",
            "`seed`",
        ),
        (
            [&inpaint[..], &[("model", "sdxl")]].concat(),
            true,
            422,
            "unknown_model",
            "tiny",
        ),
        (
            [&inpaint[..], &[("colour", "red")]].concat(),
            true,
            422,
            "unknown_field",
            "`colour`",
        ),
        (
            [&inpaint[..], &[("extend_left", "8")]].concat(),
            true,
            422,
            "invalid_field",
            "only to `outpaint`",
        ),
        (
            vec![("task", "outpaint")],
            false,
            422,
            "missing_field",
            "extend_left",
        ),
        (
            vec![
                ("task", "outpaint"),
                ("extend_left", "8"),
                ("target_width", "100"),
            ],
            false,
            422,
            "invalid_field",
            "not both",
        ),
        (
            vec![("task", "outpaint"), ("target_width", "32")],
            false,
            422,
            "invalid_field",
            "smaller than the image (64x64)",
        ),
        (
            vec![("task", "outpaint"), ("aspect_ratio", "wide")],
            false,
            422,
            "invalid_field",
            "W:H",
        ),
        (
            vec![
                ("task", "outpaint"),
                ("extend_left", "8"),
                ("anchor", "left"),
            ],
            false,
            422,
            "invalid_field",
            "`anchor` places the image",
        ),
        (
            vec![
                ("task", "outpaint"),
                ("aspect_ratio", "1:1"),
                ("anchor", "middle"),
            ],
            false,
            422,
            "invalid_field",
            "top-left",
        ),
        (
            vec![("task", "outpaint"), ("target_width", "5000")],
            false,
            422,
            "invalid_field",
            "`target_width` must be a number of pixels from 1 to 4096",
        ),
        (
            vec![
                ("task", "outpaint"),
                ("extend_right", "2048"),
                ("extend_left", "2048"),
            ],
            false,
            422,
            "image_too_large",
            "the extended canvas is 4160x64",
        ),
        (
            [&inpaint[..], &[("overlap", "4")]].concat(),
            true,
            422,
            "invalid_field",
            "only to `outpaint`",
        ),
        (
            [&inpaint[..], &[("mask_grow", "-300")]].concat(),
            true,
            422,
            "invalid_field",
            "`mask_grow` must be a number of pixels from -256 to 256",
        ),
        (
            [&inpaint[..], &[("mask_feather", "1000")]].concat(),
            true,
            422,
            "invalid_field",
            "`mask_feather`",
        ),
        (
            [&inpaint[..], &[("mask_resize", "maybe")]].concat(),
            true,
            422,
            "invalid_field",
            "`mask_resize` must be true or false",
        ),
        (
            [&inpaint[..], &[("color_match", "yes please")]].concat(),
            true,
            422,
            "invalid_field",
            "`color_match` must be true or false",
        ),
    ];
    for (fields, with_mask, status, code, needle) in cases {
        let (got, body) = service.submit(&fields, with_mask).await;
        assert_eq!(got, status, "{fields:?}: {body}");
        assert_eq!(error_code(&body), code, "{fields:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{fields:?}: `{message}` lacks `{needle}`"
        );
    }

    // Files: not an image, a mask of another size, an empty mask, a
    // truncated mask, no mask and no transparency, an opaque alpha.
    let encode = |image: image::DynamicImage| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    };
    let png = |w, h| encode(image::RgbImage::new(w, h).into());
    let white = encode(image::GrayImage::from_pixel(64, 64, image::Luma([255])).into());
    let truncated = white[..white.len() / 2].to_vec();
    let form = |image: Vec<u8>, mask: Vec<u8>| {
        reqwest::multipart::Form::new()
            .text("task", "erase")
            .part("image", reqwest::multipart::Part::bytes(image))
            .part("mask", reqwest::multipart::Part::bytes(mask))
    };
    for (image, mask, code, needle) in [
        (
            b"not an image".to_vec(),
            png(64, 64),
            "invalid_image",
            "`image`",
        ),
        (
            png(64, 64),
            png(32, 64),
            "size_mismatch",
            "`mask_resize=true`",
        ),
        (png(60, 44), png(60, 44), "empty_mask", "`mask` is empty"),
        (png(64, 64), truncated, "invalid_image", "`mask`"),
    ] {
        let (status, body) = service.post_form(form(image, mask)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(error_code(&body), code, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
    let opaque = encode(image::RgbaImage::from_pixel(64, 64, image::Rgba([9, 9, 9, 255])).into());
    for (image, code, needle) in [
        (png(64, 64), "missing_field", "transparent pixels"),
        (opaque, "empty_mask", "no transparent pixels"),
    ] {
        let form = reqwest::multipart::Form::new()
            .text("task", "erase")
            .part("image", reqwest::multipart::Part::bytes(image));
        let (status, body) = service.post_form(form).await;
        assert_eq!((status, error_code(&body).as_str()), (422, code), "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }

    // Not multipart at all.
    let response = service
        .http
        .post(service.url("/v1/edits"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    error_code(&response.json().await.unwrap());

    // Unknown jobs, routes and outputs.
    for path in [
        "/v1/jobs/not-a-uuid",
        "/v1/jobs/0190b6a0-0000-7000-8000-000000000000",
        "/v1/nothing",
    ] {
        let (status, body) = service.get(path).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (404, "not_found"),
            "{path}"
        );
    }
    let (status, body) = service.get("/v1/jobs?limit=1000").await;
    assert_eq!((status, error_code(&body).as_str()), (422, "invalid_field"));
    let (status, body) = service.get("/v1/jobs?status=done").await;
    assert_eq!((status, error_code(&body).as_str()), (422, "invalid_field"));
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job_and_a_queued_one_never_runs() {
    let service = Service::start(1).await;
    let long = [
        ("task", "inpaint"),
        ("prompt", "slow"),
        ("steps", "100"),
        ("num_outputs", "4"),
    ];
    let (_, running) = service.submit(&long, true).await;
    let (_, queued) = service.submit(&long, true).await;
    // Wait until the first is under way, then cancel the queued one.
    service
        .wait_for(&id(&running), |j| {
            j["status"] == "running" && j["progress"]["step"].as_u64() > Some(0)
        })
        .await;
    let (_, view) = service.get(&format!("/v1/jobs/{}", id(&queued))).await;
    assert_eq!(view["queue_position"], 1, "{view}");
    // Someone watching the queued job sees its position, then the cancel.
    // (The response head arrives once the stream is subscribed.)
    let watcher = service
        .http
        .get(service.url(&format!("/v1/jobs/{}/events", id(&queued))))
        .send()
        .await
        .unwrap();
    let (status, canceled) = service.delete(&format!("/v1/jobs/{}", id(&queued))).await;
    assert_eq!(
        (status, canceled["status"].as_str()),
        (200, Some("canceled"))
    );
    let seen = watcher.text().await.unwrap();
    let names: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names, ["queued", "canceled"], "{seen}");
    assert!(seen.contains(r#""position":1"#), "{seen}");

    let (status, requested) = service.delete(&format!("/v1/jobs/{}", id(&running))).await;
    assert_eq!(status, 202, "{requested}");
    let events = service.follow(&id(&running)).await;
    assert_eq!(events.last().unwrap().0, "canceled");
    let ended = &events.last().unwrap().1["job"];
    assert_eq!(ended["status"], "canceled");
    assert!(ended["outputs"].as_array().unwrap().is_empty());

    // The worker moves on; the canceled queued job never started.
    let (_, next) = service
        .submit(&[("task", "erase"), ("steps", "2")], true)
        .await;
    service
        .wait_for(&id(&next), |j| j["status"] == "succeeded")
        .await;
    let (_, never) = service.get(&format!("/v1/jobs/{}", id(&queued))).await;
    assert_eq!(never["status"], "canceled");
    assert!(never.get("started_at").is_none(), "{never}");
    // Nothing left to cancel.
    let (status, body) = service.delete(&format!("/v1/jobs/{}", id(&next))).await;
    assert_eq!((status, error_code(&body).as_str()), (409, "job_finished"));
    service.finish().await;
}

/// Follows `job`'s events and sends `DELETE /v1/jobs/{job}` `delay` after
/// the event `trigger` (or after the job's end, if it ends first); answers
/// the DELETE's status and body, and every event seen.
async fn cancel_after(
    service: &Service,
    job: &str,
    trigger: &str,
    delay: Duration,
) -> ((u16, Value), Vec<(String, Value)>) {
    let response = service
        .http
        .get(service.url(&format!("/v1/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (http, url) = (
        service.http.clone(),
        service.url(&format!("/v1/jobs/{job}")),
    );
    let cancel = move || {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let response = http.delete(url).send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };
    let mut body = response.bytes_stream();
    let (mut buffer, mut events, mut deleting) = (String::new(), Vec::new(), None);
    'stream: while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut name, mut data) = (None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            let Some(name) = name else { continue };
            if name == trigger && deleting.is_none() {
                deleting = Some(cancel());
            }
            let last = matches!(name.as_str(), "succeeded" | "failed" | "canceled");
            events.push((name, serde_json::from_str(&data).unwrap()));
            if last {
                break 'stream;
            }
        }
    }
    let deleting = deleting.unwrap_or_else(cancel);
    (deleting.await.unwrap(), events)
}

/// Issue 13: a cancel answered 202 is kept, even when it lands after the
/// job's last step (while its outputs are stored): the job ends `canceled`
/// with no outputs and `cancel_requested` true, and its events, `GET` and
/// storage agree. A cancel that comes after the end is a 409 and the job
/// stays `succeeded`. One-step jobs, canceled at varied moments after they
/// start or after their (only) step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_answered_202_always_ends_the_job_canceled() {
    let service = Service::start(1).await;
    let rounds = async {
        let (mut kept, mut late) = (0, 0);
        for round in 0..12u64 {
            let (status, job) = service
                .submit(
                    &[("task", "inpaint"), ("prompt", "x"), ("steps", "1")],
                    true,
                )
                .await;
            assert_eq!(status, 202, "{job}");
            let job = id(&job);
            // After the step the engine no longer checks for a cancel: only
            // the final write can keep it.
            let trigger = if round % 2 == 0 {
                "progress"
            } else {
                "started"
            };
            // 0 to 750 ms: the later ones mostly come after the end.
            let delay = Duration::from_millis((round / 2) * 150);
            let ((status, answer), events) = cancel_after(&service, &job, trigger, delay).await;
            let (last, data) = events.last().unwrap();
            let (_, record) = service.get(&format!("/v1/jobs/{job}")).await;
            let (output, _, _) = service.download(&format!("/v1/jobs/{job}/outputs/0")).await;
            let attempt = service.storage_dir().join(format!("jobs/{job}/attempt-1"));
            let files = std::fs::read_dir(&attempt).map_or(0, |d| d.count());
            let what = format!("round {round} ({trigger} + {delay:?}): {answer} then {record}");
            match status {
                202 => {
                    kept += 1;
                    assert_eq!(answer["status"], "running", "{what}");
                    assert_eq!(answer["cancel_requested"], true, "{what}");
                    assert_eq!(last, "canceled", "{what}: {events:?}");
                    for seen in [&data["job"], &record] {
                        assert_eq!(seen["status"], "canceled", "{what}");
                        assert_eq!(seen["cancel_requested"], true, "{what}");
                        assert_eq!(seen["outputs"], Value::Array(vec![]), "{what}");
                    }
                    assert_eq!(output, 409, "{what}");
                    assert_eq!(files, 0, "no output file stays: {what}");
                }
                409 => {
                    late += 1;
                    assert_eq!(error_code(&answer), "job_finished", "{what}");
                    assert_eq!(last, "succeeded", "{what}: {events:?}");
                    assert_eq!(record["status"], "succeeded", "{what}");
                    assert_eq!(record["cancel_requested"], false, "{what}");
                    assert_eq!(
                        record["outputs"].as_array().map(Vec::len),
                        Some(1),
                        "{what}"
                    );
                    assert_eq!(output, 200, "{what}");
                }
                other => panic!("DELETE answered {other}: {what}"),
            }
        }
        (kept, late)
    };
    let (kept, late) = tokio::time::timeout(Duration::from_secs(50), rounds)
        .await
        .expect("12 one-step jobs end within 50 s");
    eprintln!("{kept} cancels kept, {late} came after the end");
    assert!(kept > 0, "no cancel landed while a job ran");
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_queue_and_run_each_job_once() {
    let service = Service::start(2).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (status, job) = service
            .submit(&[("task", "erase"), ("steps", "40")], true)
            .await;
        assert_eq!(status, 202);
        ids.push(id(&job));
    }
    for job in &ids {
        service.wait_for(job, |j| j["status"] == "succeeded").await;
    }
    let rows: Vec<(uuid::Uuid, i32)> = sqlx::query_as("SELECT worker_id, attempts FROM jobs")
        .fetch_all(&service.backends.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|(_, attempts)| *attempts == 1));
    let workers: HashSet<_> = rows.iter().map(|(w, _)| *w).collect();
    assert_eq!(workers.len(), 2, "both workers took jobs");
    let (_, models) = service.get("/v1/models").await;
    assert_eq!(models["models"][0]["name"], MODEL);
    assert_eq!(models["models"][0]["workers"], 2);
    service.finish().await;
}

/// One worker serving two models runs the jobs of both as they come: when
/// Redis hands it an entry of each stream at once, every one is run in turn,
/// none left pending until a reclaim a lease (here 60 s) later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serving_two_models_drains_both_queues() {
    let mut service = Service::start(0).await;
    service
        .add_worker_with(&["a", "b"], |a| a.lease_secs = 60)
        .await;
    let started = std::time::Instant::now();
    let submit = |model: &'static str, steps: &'static str| {
        let service = &service;
        async move {
            let fields = [("task", "erase"), ("steps", steps), ("model", model)];
            let (status, job) = service.submit(&fields, true).await;
            assert_eq!(status, 202, "{job}");
            id(&job)
        }
    };
    // Both queues fill while the worker is busy, so its next read finds
    // entries in both streams.
    let first = submit("a", "20").await;
    service.wait_for(&first, |j| j["status"] != "queued").await;
    let mut ids = vec![first];
    for _ in 0..4 {
        ids.push(submit("b", "1").await);
        ids.push(submit("a", "1").await);
    }
    for job in &ids {
        service.wait_for(job, |j| j["status"] == "succeeded").await;
    }
    // An entry left pending waits for a reclaim: at least the 60 s lease.
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "{} jobs of two models took {took:?}",
        ids.len()
    );
    let attempts: Vec<(String, i32)> = sqlx::query_as("SELECT model, attempts FROM jobs")
        .fetch_all(&service.backends.db)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 9);
    assert!(
        attempts.iter().all(|(_, n)| *n == 1),
        "no job was taken over: {attempts:?}"
    );
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_newest_first_with_cursor_pages() {
    let service = Service::start(1).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, job) = service
            .submit(&[("task", "erase"), ("steps", "1")], true)
            .await;
        ids.push(id(&job));
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=2".to_owned();
    loop {
        let (status, page) = service.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 2);
        seen.extend(jobs.iter().map(id));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/jobs?limit=2&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    for job in &ids {
        service.wait_for(job, |j| j["status"] == "succeeded").await;
    }
    let (_, done) = service.get("/v1/jobs?status=succeeded&limit=100").await;
    assert_eq!(done["jobs"].as_array().unwrap().len(), 5);
    let (_, none) = service.get("/v1/jobs?status=failed").await;
    assert!(none["jobs"].as_array().unwrap().is_empty());
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_docs_are_served() {
    let mut service = Service::start(1).await;
    assert_eq!(
        service.get("/healthz").await,
        (200, serde_json::json!({"status": "ok"}))
    );
    assert_eq!(
        service.get("/readyz").await,
        (200, serde_json::json!({"status": "ok"}))
    );
    let (_, job) = service
        .submit(
            &[("task", "inpaint"), ("prompt", "p"), ("steps", "2")],
            true,
        )
        .await;
    service.follow(&id(&job)).await;

    let (_, _, text) = service.download("/metrics").await;
    let text = String::from_utf8(text).unwrap();
    for needle in [
        "byteedit_http_requests_total{method=\"POST\",route=\"/v1/edits\",status=\"202\"} 1",
        "byteedit_jobs_submitted_total{model=\"tiny\",task=\"inpaint\"} 1",
        "byteedit_jobs_finished_total{model=\"tiny\",status=\"succeeded\",task=\"inpaint\"} 1",
        "byteedit_job_duration_seconds_count{model=\"tiny\",task=\"inpaint\"} 1",
        "byteedit_worker_step_seconds_count{model=\"tiny\"} 1",
        "byteedit_workers{model=\"tiny\"} 1",
    ] {
        assert!(text.contains(needle), "metrics lack `{needle}`:\n{text}");
    }
    // Queue depth counts what is waiting: submit with the worker stopped.
    service.workers.pop().unwrap().stop().await.unwrap();
    service
        .submit(&[("task", "erase"), ("steps", "1")], true)
        .await;
    let (_, _, text) = service.download("/metrics").await;
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("byteedit_queue_depth{model=\"tiny\",status=\"queued\"} 1"),
        "{text}"
    );
    service.add_worker().await;

    let (status, spec) = service.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(spec["paths"]["/v1/edits"]["post"].is_object());
    let (status, kind, _) = service.download("/docs/").await;
    assert_eq!((status, kind.starts_with("text/html")), (200, true));
    service.finish().await;
}

/// `Idempotency-Key`: two identical requests sent at once make one job; the
/// key with another request is a 409; a refused request frees its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_one_job_per_request() {
    let mut service = Service::start(0).await;
    service.register_model_only().await;

    let post = |key: &'static str, prompt: &'static str, steps: &'static str| {
        let form = fixture_form(
            &[("task", "inpaint"), ("prompt", prompt), ("steps", steps)],
            true,
        );
        let request = service
            .http
            .post(service.url("/v1/edits"))
            .header("idempotency-key", key)
            .multipart(form);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            (status, replayed, response.json::<Value>().await.unwrap())
        }
    };
    let (a, b) = tokio::join!(post("key-1", "a cat", "2"), post("key-1", "a cat", "2"));
    assert_eq!((a.0, b.0), (202, 202), "{a:?} {b:?}");
    assert_eq!(a.2["id"], b.2["id"], "one job for both");
    assert!(a.1 != b.1, "exactly one of them is the replay");
    let (again_status, replayed, again) = post("key-1", "a cat", "2").await;
    assert_eq!((again_status, replayed), (202, true));
    assert_eq!(again["id"], a.2["id"]);

    let (status, _, err) = post("key-1", "a dog", "2").await;
    assert_eq!(
        (status, error_code(&err).as_str()),
        (409, "idempotency_key_reused"),
        "{err}"
    );

    // Refused for a bad field: the key stays free for the corrected request.
    let (status, _, err) = post("key-2", "a cat", "0").await;
    assert_eq!(
        (status, error_code(&err).as_str()),
        (422, "invalid_field"),
        "{err}"
    );
    let (status, replayed, fixed) = post("key-2", "a cat", "2").await;
    assert_eq!((status, replayed), (202, false), "{fixed}");

    let long: &'static str = Box::leak("k".repeat(300).into_boxed_str());
    let (status, _, err) = post(long, "a cat", "2").await;
    assert_eq!(
        (status, error_code(&err).as_str()),
        (422, "invalid_header"),
        "{err}"
    );

    let (jobs,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs")
        .fetch_one(&service.backends.db)
        .await
        .unwrap();
    assert_eq!(jobs, 2, "key-1 once, key-2 once");
    service.finish().await;
}
