//! Chaos with real processes: a private `redis-server` is killed and
//! restarted empty, a private Postgres cluster is stopped and started, while
//! a real `byteedit worker` process runs jobs and clients keep calling the
//! API. Afterwards every accepted job has ended exactly once. The storage
//! folder is taken away too.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::servers::{PrivatePostgres, PrivateRedis};
use support::{Service, pg_server, redis_url};
use uuid::Uuid;

const JOB: [(&str, &str); 4] = [
    ("task", "inpaint"),
    ("prompt", "chaos"),
    ("steps", "8"),
    ("num_outputs", "2"),
];

/// Submits until accepted, as a client honouring 503 + Retry-After would
/// (with a shorter wait, to keep the test quick). Returns the job id.
async fn submit_until_accepted(service: &Service) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = service.submit(&JOB, true).await;
        if status == 202 {
            return body["id"].as_str().unwrap().to_owned();
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never accepted: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every accepted job ended once: succeeded with its outputs recorded once,
/// and nothing else in the database but jobs refused with a 503.
async fn assert_each_ended_once(service: &Service, accepted: &[String]) {
    for id in accepted {
        service.wait_for(id, |j| j["status"] == "succeeded").await;
    }
    let rows: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT j.id, j.status, (SELECT count(*) FROM job_outputs o WHERE o.job_id = j.id), \
           (SELECT count(DISTINCT o.index) FROM job_outputs o WHERE o.job_id = j.id) FROM jobs j",
    )
    .fetch_all(&service.backends.db)
    .await
    .unwrap();
    let accepted: HashSet<Uuid> = accepted.iter().map(|id| id.parse().unwrap()).collect();
    for (id, status, outputs, distinct) in &rows {
        if accepted.contains(id) {
            assert_eq!(
                (status.as_str(), *outputs, *distinct),
                ("succeeded", 2, 2),
                "job {id}"
            );
        } else {
            // A submission answered 503 may leave a job that never ran.
            assert_eq!(status, "failed", "unaccepted job {id}");
            assert_eq!(*outputs, 0);
        }
    }
    let found = rows.iter().filter(|r| accepted.contains(&r.0)).count();
    assert_eq!(found, accepted.len(), "every accepted job is recorded");
}

/// `n` accepted jobs, the first of them running.
async fn submitted_one_running(service: &Service, n: usize) -> Vec<String> {
    let mut accepted = Vec::new();
    for _ in 0..n {
        accepted.push(submit_until_accepted(service).await);
    }
    service
        .wait_for(&accepted[0], |j| j["status"] == "running")
        .await;
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_loses_no_job() {
    let mut redis = PrivateRedis::start();
    let service = Service::start_on(0, &pg_server(), &redis.url()).await;
    let mut worker = service.worker_process(&[]);
    service.wait_for_workers(1).await;
    let mut accepted = submitted_one_running(&service, 4).await;
    // One running, the others queued: then Redis dies and comes back empty
    // (no persistence): stream, group and pending entries are all gone.
    redis.kill();
    // While it is down, submissions are refused with a 503, not a hang.
    let (status, body) = service.submit(&JOB, true).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(support::error_code(&body), "queue_unavailable");
    redis.restart();
    for _ in 0..3 {
        accepted.push(submit_until_accepted(&service).await);
    }
    assert_each_ended_once(&service, &accepted).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker survived");
    worker.kill().unwrap();
    worker.wait().unwrap();
    service.finish().await;
}

/// A GET during the outage: a quick 503 with `Retry-After`, never a hang.
async fn assert_unavailable(service: &Service, path: &str) {
    let started = Instant::now();
    let response = service
        .http
        .get(service.url(path))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "{path}");
    assert!(response.headers().contains_key("retry-after"), "{path}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(support::error_code(&body), "database_unavailable", "{path}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{path} took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_gets_503s_and_loses_no_job() {
    let pg = PrivatePostgres::start();
    let service = Service::start_on(0, &pg.url(), &redis_url()).await;
    let mut worker = service.worker_process(&[]);
    service.wait_for_workers(1).await;
    let mut accepted = submitted_one_running(&service, 3).await;
    pg.stop();
    // Longer than the worker's 3 s lease; requests keep coming meanwhile.
    let down = Instant::now();
    assert_unavailable(&service, &format!("/v1/jobs/{}", accepted[1])).await;
    assert_unavailable(&service, "/v1/jobs").await;
    assert_unavailable(&service, "/readyz").await;
    let (status, body) = service.submit(&JOB, true).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(support::error_code(&body), "database_unavailable");
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(down.elapsed())).await;
    pg.start_again();
    // The API recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = service.get("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready after the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..2 {
        accepted.push(submit_until_accepted(&service).await);
    }
    assert_each_ended_once(&service, &accepted).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker survived");
    worker.kill().unwrap();
    worker.wait().unwrap();
    service.finish().await;
}

/// A request to `path` (GET, or the fixture edit as a POST) during a storage
/// outage: a quick 503 `storage_unavailable` with `Retry-After`.
async fn assert_storage_unavailable(request: reqwest::RequestBuilder, what: &str) {
    let started = Instant::now();
    let response = request
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "{what}");
    assert!(response.headers().contains_key("retry-after"), "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(support::error_code(&body), "storage_unavailable", "{what}");
    assert!(started.elapsed() < Duration::from_secs(5), "{what}");
}

/// The storage folder removed, then replaced by a file (which even root
/// cannot write into): uploads and downloads get 503s, not 500s (nor a 410
/// as if the job had expired), nothing is recorded for the refused edit, and
/// once the folder is back the same request goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_gets_503s_and_records_nothing() {
    let mut service = Service::start(0).await;
    service.register_model_only().await;
    let (status, before) = service.submit(&JOB, true).await;
    assert_eq!(status, 202, "{before}");
    let before = before["id"].as_str().unwrap().to_owned();
    let input = service.url(&format!("/v1/jobs/{before}/input"));
    let edit = || {
        service
            .http
            .post(service.url("/v1/edits"))
            .header("Idempotency-Key", "during-the-outage")
            .multipart(support::fixture_form(&JOB, true))
    };

    let folder = service.storage_dir();
    std::fs::remove_dir_all(&folder).unwrap();
    assert_storage_unavailable(service.http.get(&input), "input, folder gone").await;
    std::fs::write(&folder, b"not a folder").unwrap();
    assert_storage_unavailable(service.http.get(&input), "input, a file instead").await;
    assert_storage_unavailable(edit(), "edit").await;
    // Postgres is fine: the job itself still answers.
    let (status, _) = service.get(&format!("/v1/jobs/{before}")).await;
    assert_eq!(status, 200);
    let jobs: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM jobs")
        .fetch_all(&service.backends.db)
        .await
        .unwrap();
    assert_eq!(
        jobs,
        [(before.parse().unwrap(),)],
        "no job for the refused edit"
    );

    std::fs::remove_file(&folder).unwrap();
    std::fs::create_dir(&folder).unwrap();
    let response = edit().send().await.unwrap();
    assert_eq!(response.status(), 202, "the key was freed by the refusal");
    assert!(!response.headers().contains_key("idempotent-replayed"));
    service.finish().await;
}
