//! Job records against the real Postgres (BYTEEDIT_TEST_PG, or the local
//! one), each test in a database of its own: the writes that end a job, and
//! how they are ordered against a cancel.

use byteedit_jobs::config::connect_database;
use byteedit_jobs::db::jobs::{self, NewOutput};
use byteedit_jobs::db::{self, CancelOutcome, Claim, NewJob, webhooks};
use byteedit_jobs::{EditParams, Geometry, JobStatus, JobTimings, ModelInfo, Task, WorkerId};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

fn pg_server() -> String {
    std::env::var("BYTEEDIT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh, migrated database with a worker serving the model `tiny`,
/// dropped again when the test ends (also when it fails, so no database is
/// left behind).
struct TestDb {
    db: PgPool,
    name: String,
    worker: WorkerId,
}

async fn database() -> TestDb {
    let name = format!("byteedit_test_{}", Uuid::new_v4().simple());
    let db = connect_database(&format!("{}/{name}", pg_server()), 4, 5.0)
        .await
        .expect("Postgres must be running");
    // As a worker registers itself (and its model) when it starts.
    let worker = WorkerId::new();
    let tiny = ModelInfo {
        name: "tiny".into(),
        vae_scale_factor: 8,
        default_steps: 20,
        max_steps: 100,
        default_guidance_scale: 7.5,
        default_scheduler: "ddim".into(),
        schedulers: vec!["ddim".into()],
        native_size: 64,
        erase_negative_prompt: String::new(),
    };
    db::models::register_worker(&db, worker, "test worker", &[tiny])
        .await
        .unwrap();
    TestDb { db, name, worker }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // the database is dropped from a thread with a runtime of its own.
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let url = format!("{}/postgres", pg_server());
                let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            });
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("cannot drop test database {}", self.name);
        }
    }
}

/// A queued one-step inpaint of a 64x64 image that announces its end.
async fn queued_job(db: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    let params: EditParams = serde_json::from_value(serde_json::json!({
        "prompt": "a red apple", "negative_prompt": null, "steps": 1,
        "guidance_scale": 7.5, "scheduler": "ddim", "seed": 7, "num_outputs": 1,
    }))
    .unwrap();
    let job = NewJob {
        id,
        task: Task::Inpaint,
        model: "tiny".into(),
        params,
        image_key: format!("jobs/{id}/input"),
        mask_key: Some(format!("jobs/{id}/mask")),
        width: 64,
        height: 64,
        owner_key: None,
        webhook_url: Some("http://127.0.0.1:9/hook".into()),
    };
    jobs::insert(db, &job).await.unwrap();
    id
}

/// Claims `id` for `worker`, as it does after taking the job's queue entry.
async fn claim(db: &PgPool, id: Uuid, worker: WorkerId) {
    let claim = jobs::claim(db, id.into(), worker, 30.0).await.unwrap();
    assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
}

fn output(id: Uuid) -> NewOutput {
    NewOutput {
        index: 0,
        storage_key: format!("jobs/{id}/attempt-1/output-0.png"),
        width: 64,
        height: 64,
        seed: 7,
    }
}

fn geometry() -> Geometry {
    serde_json::from_value(serde_json::json!({
        "canvas_width": 64, "canvas_height": 64,
        "image": {"x": 0, "y": 0, "width": 64, "height": 64},
        "crop": {"x": 0, "y": 0, "width": 64, "height": 64},
        "working_width": 64, "working_height": 64, "masked_pixels": 1024,
    }))
    .unwrap()
}

/// The race of issue 13, made deterministic: the cancel lands after the
/// worker's last step check but before its success write. The write sees
/// the cancel (the row lock orders the two) and ends the job `canceled`,
/// with no outputs, the cancel kept, and one webhook announcing `canceled`.
#[tokio::test]
async fn a_cancel_that_lands_before_the_success_write_wins() {
    let test = database().await;
    let db = &test.db;
    let id = queued_job(db).await;
    let worker = test.worker;
    claim(db, id, worker).await;
    let requested = jobs::cancel(db, id).await.unwrap();
    assert!(
        matches!(requested, CancelOutcome::Requested(_)),
        "{requested:?}"
    );

    let outcome = succeed(db, id, worker).await;
    assert_eq!(outcome, jobs::SuccessOutcome::Canceled);
    let job = jobs::get(db, id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Canceled);
    assert!(job.cancel_requested, "the cancel is never cleared");
    assert!(
        job.finished_at.is_some() && job.geometry.is_none(),
        "{job:?}"
    );
    assert!(jobs::outputs(db, id).await.unwrap().is_empty());
    let announced = webhooks::of_job(db, id).await.unwrap();
    assert_eq!(
        announced
            .iter()
            .map(|d| d.status.as_str())
            .collect::<Vec<_>>(),
        ["canceled"]
    );
    // Ended: a later cancel is told so.
    let late = jobs::cancel(db, id).await.unwrap();
    assert!(
        matches!(late, CancelOutcome::AlreadyFinished(_)),
        "{late:?}"
    );
}

/// Without a cancel the same write succeeds and records the outputs; a
/// cancel after it finds the job ended and changes nothing.
#[tokio::test]
async fn a_cancel_after_the_success_write_finds_the_job_ended() {
    let test = database().await;
    let db = &test.db;
    let id = queued_job(db).await;
    let worker = test.worker;
    claim(db, id, worker).await;
    let outcome = succeed(db, id, worker).await;
    assert_eq!(outcome, jobs::SuccessOutcome::Succeeded);
    let late = jobs::cancel(db, id).await.unwrap();
    assert!(
        matches!(late, CancelOutcome::AlreadyFinished(_)),
        "{late:?}"
    );
    let job = jobs::get(db, id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.cancel_requested),
        (JobStatus::Succeeded, false)
    );
    assert_eq!(jobs::outputs(db, id).await.unwrap().len(), 1);
    let announced = webhooks::of_job(db, id).await.unwrap();
    assert_eq!(
        announced
            .iter()
            .map(|d| d.status.as_str())
            .collect::<Vec<_>>(),
        ["succeeded"]
    );
    // Another worker's write is refused and records nothing.
    let stale = jobs::succeed(
        db,
        id.into(),
        WorkerId::new(),
        &[output(id)],
        &JobTimings::default(),
        &geometry(),
    )
    .await
    .unwrap();
    assert_eq!(stale, jobs::SuccessOutcome::Refused);
    assert_eq!(jobs::outputs(db, id).await.unwrap().len(), 1);
}

/// A job a request created but cannot use is deleted while still queued; a
/// worker that then takes its entry finds nothing to run. Once a worker has
/// claimed it, it is not deleted (the caller cancels it instead).
#[tokio::test]
async fn a_queued_job_is_withdrawn_until_a_worker_claims_it() {
    let test = database().await;
    let db = &test.db;
    let id = queued_job(db).await;
    assert!(jobs::withdraw(db, id).await.unwrap());
    assert!(jobs::get(db, id).await.unwrap().is_none());
    let late = jobs::claim(db, id.into(), test.worker, 30.0).await.unwrap();
    assert!(matches!(late, Claim::Gone), "{late:?}");
    assert!(webhooks::of_job(db, id).await.unwrap().is_empty());

    let running = queued_job(db).await;
    claim(db, running, test.worker).await;
    assert!(!jobs::withdraw(db, running).await.unwrap());
    let job = jobs::get(db, running).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
}

/// The worker's success write of one output.
async fn succeed(db: &sqlx::PgPool, id: uuid::Uuid, worker: WorkerId) -> jobs::SuccessOutcome {
    jobs::succeed(
        db,
        id.into(),
        worker,
        &[output(id)],
        &JobTimings::default(),
        &geometry(),
    )
    .await
    .unwrap()
}
