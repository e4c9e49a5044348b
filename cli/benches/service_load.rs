//! Load benchmark of the service on loopback (not a test: run it with
//! `cargo bench -p byteedit --bench service_load`).
//!
//! 1. Submissions: concurrent clients POST 1-megapixel PNGs to
//!    `/v1/edits` with no worker running, so only the service's own path is
//!    measured (multipart parsing, header check, storage, Postgres, Redis).
//! 2. Queue overhead: one worker with the tiny model; jobs are submitted one
//!    at a time and followed over SSE; overhead = client-seen end-to-end time
//!    minus the engine's own time (`timings.model_ms`).
//!
//! 3. Key check: what every authenticated request adds (the key lookup in
//!    Postgres, the rate-limit script in Redis), next to a bare `SELECT 1`
//!    and `PING` on the same connections, in the same run.
//!
//! Options: `--clients N` (32), `--seconds S` (10), `--jobs N` (100),
//! `--storage URL` (a temporary folder), `--json FILE`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Service;

struct Options {
    clients: usize,
    seconds: f64,
    jobs: usize,
    json: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        clients: 32,
        seconds: 10.0,
        jobs: 100,
        json: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--clients" => o.clients = value.parse().expect("--clients N"),
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            "--jobs" => o.jobs = value.parse().expect("--jobs N"),
            "--json" => o.json = Some(value),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// A 1024x1024 PNG: smooth gradients plus noise of amplitude `noise`. With
/// noise it compresses like a photograph (about 2.4 MB); without, like a
/// graphic (tens of KB). The two bracket real uploads.
fn one_megapixel_png(noise: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let image = image::RgbImage::from_fn(1024, 1024, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % noise.max(1)) as u8;
        image::Rgb([
            (x / 4) as u8 / 2 + n,
            (y / 4) as u8 / 2 + n,
            ((x + y) / 8) as u8 / 2 + n,
        ])
    });
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn form(image: &'static [u8], mask: &'static [u8], steps: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("task", "erase")
        .text("steps", steps.to_owned())
        .part("image", reqwest::multipart::Part::bytes(image))
        .part("mask", reqwest::multipart::Part::bytes(mask))
}

async fn submissions(
    service: &Service,
    o: &Options,
    png: &'static [u8],
    mask: &'static [u8],
) -> Value {
    let url = Arc::new(service.url("/v1/edits"));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.clients)
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", service.client_key).parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                let response = http
                    .post(url.as_str())
                    .multipart(form(png, mask, "1"))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 202 => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (l, f) = task.await.unwrap();
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    json!({
        "clients": o.clients,
        "seconds": elapsed,
        "accepted": latencies.len(),
        "failed": failures,
        "per_second": latencies.len() as f64 / elapsed,
        "mb_per_second": latencies.len() as f64 * (png.len() + mask.len()) as f64 / elapsed / 1e6,
        "p50_ms": percentile(&latencies, 0.5),
        "p99_ms": percentile(&latencies, 0.99),
        "image_bytes": png.len(),
        "mask_bytes": mask.len(),
    })
}

/// p50 of `n` sequential runs of each step, in ms.
async fn key_check(service: &Service, n: usize) -> Value {
    use byteedit_jobs::db::api_keys;
    let backends = &service.backends;
    let key = api_keys::authenticate(&backends.db, &service.client_key)
        .await
        .unwrap()
        .unwrap();
    let id = key.id.to_string();
    let (mut select, mut lookup, mut ping, mut meter) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&backends.db).await.unwrap();
        select.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        api_keys::authenticate(&backends.db, &service.client_key)
            .await
            .unwrap()
            .unwrap();
        lookup.push(t.elapsed().as_secs_f64() * 1000.0);
        let mut conn = backends.conn.clone();
        let t = Instant::now();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .unwrap();
        ping.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        byteedit_jobs::rate_limit::spend(&backends.conn, &backends.prefix, &id, 1_000_000, 1000)
            .await
            .unwrap();
        meter.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let p50 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    let (select, lookup, ping, meter) = (p50(select), p50(lookup), p50(ping), p50(meter));
    json!({
        "runs": n,
        "postgres_select_1_p50_ms": select,
        "key_lookup_p50_ms": lookup,
        "key_lookup_vs_select_1": lookup / select,
        "redis_ping_p50_ms": ping,
        "rate_limit_p50_ms": meter,
        "rate_limit_vs_ping": meter / ping,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    // Thousands of jobs wait unworked here: admission control would stop them.
    let mut service = Service::start_with(1, |api| api.max_queued = u64::MAX).await;
    // Registered the model; now stop it so submissions only queue.
    service.workers.pop().unwrap().stop().await.unwrap();

    // 1. Submissions of 1-MP PNGs, photo-like and graphic-like.
    let mask: &'static [u8] = Box::leak({
        let mut bytes = Cursor::new(Vec::new());
        image::GrayImage::from_fn(1024, 1024, |x, _| {
            image::Luma([if x > 512 { 255 } else { 0 }])
        })
        .write_to(&mut bytes, image::ImageFormat::Png)
        .unwrap();
        bytes.into_inner().into_boxed_slice()
    });
    let mut submit = serde_json::Map::new();
    for (name, noise) in [("photo_like", 24), ("graphic_like", 0)] {
        let png: &'static [u8] = Box::leak(one_megapixel_png(noise).into_boxed_slice());
        let result = submissions(&service, &o, png, mask).await;
        eprintln!("submissions, {name}: {result}");
        submit.insert(name.into(), result);
    }

    // Clear the backlog so the overhead run starts with an empty queue.
    sqlx::query("UPDATE jobs SET status = 'canceled' WHERE status = 'queued'")
        .execute(&service.backends.db)
        .await
        .unwrap();
    let mut redis = service.backends.conn.clone();
    redis::cmd("DEL")
        .arg(format!(
            "{}:jobs:{}",
            service.backends.prefix,
            support::MODEL
        ))
        .query_async::<i64>(&mut redis)
        .await
        .unwrap();
    service.add_worker().await;

    // 2. Queue overhead, one job at a time with the tiny 64x64 fixture.
    let small: &'static [u8] =
        Box::leak(support::fixture_bytes("expected_image.png").into_boxed_slice());
    let small_mask: &'static [u8] =
        Box::leak(support::fixture_bytes("expected_mask.png").into_boxed_slice());
    let mut overheads = Vec::new();
    let mut models = Vec::new();
    // The overhead split: created → claimed (queue), claimed → recorded minus
    // the engine (worker), and the rest (upload, API, SSE delivery).
    let (mut queued, mut worker_extra, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.jobs {
        let t = Instant::now();
        let (status, job) = service.post_form(form(small, small_mask, "1")).await;
        assert_eq!(status, 202, "{job}");
        let events = service.follow(job["id"].as_str().unwrap()).await;
        let end_to_end = t.elapsed().as_secs_f64() * 1000.0;
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "succeeded");
        let timings = &data["job"]["timings"];
        let model_ms = timings["model_ms"].as_f64().unwrap();
        let queue_ms = timings["queue_ms"].as_f64().unwrap();
        let worker_ms = timings["run_ms"].as_f64().unwrap() - model_ms;
        overheads.push(end_to_end - model_ms);
        models.push(model_ms);
        queued.push(queue_ms);
        worker_extra.push(worker_ms);
        rest.push(end_to_end - model_ms - queue_ms - worker_ms);
    }
    for v in [
        &mut overheads,
        &mut models,
        &mut queued,
        &mut worker_extra,
        &mut rest,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let overhead = json!({
        "jobs": o.jobs,
        "overhead_p50_ms": percentile(&overheads, 0.5),
        "overhead_p99_ms": percentile(&overheads, 0.99),
        "overhead_mean_ms": overheads.iter().sum::<f64>() / overheads.len().max(1) as f64,
        "model_p50_ms": percentile(&models, 0.5),
        "queue_p50_ms": percentile(&queued, 0.5),
        "worker_extra_p50_ms": percentile(&worker_extra, 0.5),
        "submit_and_sse_p50_ms": percentile(&rest, 0.5),
    });
    eprintln!("queue overhead: {overhead}");
    let auth = key_check(&service, 1000).await;
    eprintln!("key check: {auth}");
    let report: Value = json!({ "submit": submit, "queue": overhead, "key_check": auth });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    if let Some(path) = o.json {
        let path = std::path::PathBuf::from(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
    service.finish().await;
}
