//! Crash safety with real processes: a `byteedit worker` killed with SIGKILL
//! mid-job leaves its job to another worker once the lease runs out; the
//! result is recorded once, and the dead worker's writes are refused
//! (fencing). A job whose workers keep dying fails after its attempts.

mod support;

use std::process::{Child, Command, Stdio};

use byteedit_jobs::db;
use byteedit_jobs::db::jobs::NewOutput;
use byteedit_jobs::{Geometry, JobTimings};
use support::{MODEL, Service, tiny_model};
use uuid::Uuid;

/// `byteedit worker` as its own process, with a short heartbeat and lease.
fn worker_process(service: &Service) -> Child {
    let c = &service.connect;
    Command::new(env!("CARGO_BIN_EXE_byteedit"))
        .args(["worker", "--model"])
        .arg(format!("{MODEL}={}", tiny_model().display()))
        .args(["--database-url", &c.database_url])
        .args(["--redis-url", &c.redis_url])
        .args(["--storage-url", &c.storage_url])
        .args(["--redis-prefix", &c.redis_prefix])
        .args(["--heartbeat-secs", "1", "--lease-secs", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("byteedit worker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_taken_over_and_recorded_once() {
    let mut service = Service::start(0).await;
    let mut doomed = worker_process(&service);
    // Until the process has loaded the model and registered.
    for _ in 0..600 {
        let (_, models) = service.get("/v1/models").await;
        if models["models"][0]["workers"].as_u64() == Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Long enough to be killed in the middle: 4 outputs x 25 steps.
    let (status, job) = service
        .submit(
            &[
                ("task", "inpaint"),
                ("prompt", "slow"),
                ("steps", "25"),
                ("num_outputs", "4"),
                ("seed", "3"),
            ],
            true,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    service
        .wait_for(&id, |j| {
            j["status"] == "running" && j["progress"]["step"].as_u64() > Some(0)
        })
        .await;
    let job_id = Uuid::parse_str(&id).unwrap();
    let (dead_worker,): (Uuid,) = sqlx::query_as("SELECT worker_id FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&service.backends.db)
        .await
        .unwrap();
    doomed.kill().unwrap(); // SIGKILL: no cleanup, no ack, no final write
    doomed.wait().unwrap();

    let rescuer = service
        .add_worker_with(&[MODEL], |a| {
            a.heartbeat_secs = 1;
            a.lease_secs = 3;
        })
        .await;
    let done = service.wait_for(&id, |j| j["status"] == "succeeded").await;
    assert_eq!(done["outputs"].as_array().unwrap().len(), 4, "{done}");
    let (worker, attempts): (Uuid, i32) =
        sqlx::query_as("SELECT worker_id, attempts FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&service.backends.db)
            .await
            .unwrap();
    assert_eq!((worker, attempts), (rescuer, 2));
    let keys: Vec<(String,)> =
        sqlx::query_as("SELECT storage_key FROM job_outputs WHERE job_id = $1 ORDER BY index")
            .bind(job_id)
            .fetch_all(&service.backends.db)
            .await
            .unwrap();
    assert_eq!(keys.len(), 4, "recorded once");
    assert!(keys.iter().all(|(k,)| k.contains("attempt-2")), "{keys:?}");

    // Fencing: the dead worker's late writes are refused and change nothing.
    let db = &service.backends.db;
    assert_eq!(
        db::jobs::heartbeat(db, job_id, dead_worker).await.unwrap(),
        None
    );
    let late = NewOutput {
        index: 0,
        storage_key: "jobs/late.png".into(),
        width: 64,
        height: 64,
        seed: 0,
    };
    let geometry: Geometry = serde_json::from_value(done["geometry"].clone()).unwrap();
    let refused = db::jobs::succeed(
        db,
        job_id,
        dead_worker,
        &[late],
        &JobTimings::default(),
        &geometry,
    )
    .await
    .unwrap();
    assert!(!refused);
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM job_outputs WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(count, 4);
    // The queue is empty: the taken-over entry was acknowledged once.
    let mut redis = service.backends.conn.clone();
    let length: i64 = redis::cmd("XLEN")
        .arg(format!("{}:jobs:{MODEL}", service.connect.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(length, 0);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_workers_keep_dying_fails_after_its_attempts() {
    let mut service = Service::start(0).await;
    // Registers the model, then stops, so the job waits in the queue.
    service.add_worker().await;
    service.workers.pop().unwrap().stop().await.unwrap();
    let (status, job) = service
        .submit(
            &[("task", "inpaint"), ("prompt", "x"), ("steps", "1")],
            true,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = Uuid::parse_str(job["id"].as_str().unwrap()).unwrap();
    // Three workers claim it and vanish without a heartbeat.
    let db = &service.backends.db;
    for _ in 0..3 {
        let ghost = Uuid::now_v7();
        sqlx::query("INSERT INTO workers (id, name, models) VALUES ($1, 'ghost', ARRAY['tiny'])")
            .bind(ghost)
            .execute(db)
            .await
            .unwrap();
        let claim = db::jobs::claim(db, id, ghost, 60.0).await.unwrap();
        assert!(matches!(claim, db::Claim::Claimed(_)), "{claim:?}");
        // A live lease keeps others out.
        let other = db::jobs::claim(db, id, Uuid::now_v7(), 60.0).await.unwrap();
        assert!(matches!(other, db::Claim::Busy), "{other:?}");
        sqlx::query("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = $1")
            .bind(id)
            .execute(db)
            .await
            .unwrap();
    }
    service
        .add_worker_with(&[MODEL], |a| {
            a.lease_secs = 2;
            a.heartbeat_secs = 1;
            a.max_attempts = 3;
        })
        .await;
    let done = service
        .wait_for(&id.to_string(), |j| j["status"] == "failed")
        .await;
    assert_eq!(done["error"]["code"], "worker_lost", "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("started 3 times"),
        "{done}"
    );
    service.finish().await;
}

/// Redis loses the queue (a restart without its data): the jobs Postgres
/// still has as queued are put back by the workers' sweep and run once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_lost_by_redis_are_queued_again_and_run_once() {
    let mut service = Service::start(0).await;
    service.add_worker().await;
    service.workers.pop().unwrap().stop().await.unwrap();
    let mut ids = Vec::new();
    for seed in 0..3 {
        let (status, job) = service
            .submit(
                &[
                    ("task", "inpaint"),
                    ("prompt", "x"),
                    ("steps", "1"),
                    ("seed", &seed.to_string()),
                ],
                true,
            )
            .await;
        assert_eq!(status, 202, "{job}");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    // The stream and its consumer group vanish, as after `FLUSHALL` or a
    // restart without persistence (scoped to this test's prefix).
    let stream = format!("{}:jobs:{MODEL}", service.connect.redis_prefix);
    let mut redis = service.backends.conn.clone();
    let deleted: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    service
        .add_worker_with(&[MODEL], |a| {
            a.lease_secs = 2;
            a.heartbeat_secs = 1;
        })
        .await;
    for id in &ids {
        service.wait_for(id, |j| j["status"] == "succeeded").await;
    }
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT j.attempts, (SELECT count(*) FROM job_outputs o WHERE o.job_id = j.id) FROM jobs j",
    )
    .fetch_all(&service.backends.db)
    .await
    .unwrap();
    assert_eq!(rows, vec![(1, 1); 3], "each job ran and was recorded once");
    service.finish().await;
}
