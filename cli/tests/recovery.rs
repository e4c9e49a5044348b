//! Crash safety with real processes: a `byteedit worker` killed with SIGKILL
//! mid-job leaves its job to another worker once the lease runs out; the
//! result is recorded once, and the dead worker's writes are refused
//! (fencing). A job whose workers keep dying fails after its attempts.
//! Transient failures are retried with backoff, a poison input (a real panic
//! in the engine) fails only its job, and SIGTERM hands a job back.

mod support;

use byteedit_jobs::db;
use byteedit_jobs::db::jobs::NewOutput;
use byteedit_jobs::{Geometry, JobTimings, WorkerId};
use futures_util::StreamExt;
use support::{MODEL, Service};
use uuid::Uuid;

/// Submits a job long enough to be interrupted (4 outputs x 25 steps) and
/// returns its id once a worker is under way with it.
async fn slow_job_under_way(service: &Service) -> String {
    let fields = [
        ("task", "inpaint"),
        ("prompt", "slow"),
        ("steps", "25"),
        ("num_outputs", "4"),
        ("seed", "3"),
    ];
    let (status, job) = service.submit(&fields, true).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    service
        .wait_for(&id, |j| {
            j["status"] == "running" && j["progress"]["step"].as_u64() > Some(0)
        })
        .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_taken_over_and_recorded_once() {
    let mut service = Service::start(0).await;
    let mut doomed = service.worker_process(&[]);
    // Until the process has loaded the model and registered.
    service.wait_for_workers(1).await;
    let id = slow_job_under_way(&service).await;
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
        db::jobs::heartbeat(db, job_id.into(), dead_worker.into())
            .await
            .unwrap(),
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
        job_id.into(),
        dead_worker.into(),
        &[late],
        &JobTimings::default(),
        &geometry,
    )
    .await
    .unwrap();
    assert_eq!(refused, db::jobs::SuccessOutcome::Refused);
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
    service.register_model_only().await;
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
        let claim = db::jobs::claim(db, id.into(), ghost.into(), 60.0)
            .await
            .unwrap();
        assert!(matches!(claim, db::Claim::Claimed(_)), "{claim:?}");
        // A live lease keeps others out.
        let other = db::jobs::claim(db, id.into(), WorkerId::new(), 60.0)
            .await
            .unwrap();
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
    service.register_model_only().await;
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

/// Makes writing the outputs of `attempt` fail for real: a plain file sits
/// where that attempt's folder must be created.
fn block_attempt(service: &Service, job: &str, attempt: u32) {
    let dir = service.storage_dir().join("jobs").join(job);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("attempt-{attempt}")), b"in the way").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_storage_failure_is_retried_with_backoff() {
    let mut service = Service::start(0).await;
    service.register_model_only().await;
    let fields = [("task", "inpaint"), ("prompt", "x"), ("steps", "1")];
    let (status, job) = service.submit(&fields, true).await;
    assert_eq!(status, 202, "{job}");
    let once = job["id"].as_str().unwrap().to_owned();
    let (_, job) = service.submit(&fields, true).await;
    let never = job["id"].as_str().unwrap().to_owned();
    // The first job's first attempt cannot store its output; the second
    // job's three attempts all fail.
    block_attempt(&service, &once, 1);
    for attempt in 1..=3 {
        block_attempt(&service, &never, attempt);
    }
    let started = std::time::Instant::now();
    service
        .add_worker_with(&[MODEL], |a| {
            a.retry_backoff_secs = 0.4;
            a.retry_backoff_max_secs = 0.6;
            a.max_attempts = 3;
        })
        .await;
    let done = service
        .wait_for(&once, |j| j["status"] == "succeeded")
        .await;
    let db = &service.backends.db;
    let attempts_of = |id: &str| {
        let id = Uuid::parse_str(id).unwrap();
        sqlx::query_as::<_, (i32,)>("SELECT attempts FROM jobs WHERE id = $1").bind(id)
    };
    assert_eq!(attempts_of(&once).fetch_one(db).await.unwrap().0, 2);
    assert_eq!(done["outputs"].as_array().unwrap().len(), 1, "{done}");
    let failed = service.wait_for(&never, |j| j["status"] == "failed").await;
    assert_eq!(failed["error"]["code"], "storage_error", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("gave up after 3 attempts"), "{message}");
    assert_eq!(attempts_of(&never).fetch_one(db).await.unwrap().0, 3);
    // Backoff: 0.4 s before the second attempt, 0.6 s (capped) before the third.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    service.finish().await;
}

/// The tiny model, except that its tokenizer pads prompts to 100 tokens while
/// the text encoder has 77 positions: loading works, every forward pass
/// panics inside burn (an index past the position table).
fn poisoned_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", support::tiny_model().display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let config = dir.path().join("tokenizer/tokenizer_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"model_max_length\": 77"));
    std::fs::write(
        &config,
        text.replace("\"model_max_length\": 77", "\"model_max_length\": 100"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_input_fails_its_job_and_the_worker_goes_on() {
    let service = Service::start(0).await;
    let poisoned = poisoned_model();
    let mut worker = service.worker_process(&[
        "--model",
        &format!("poisoned={}", poisoned.path().display()),
    ]);
    service.wait_for_workers(1).await;
    let (status, job) = service
        .submit(
            &[
                ("task", "inpaint"),
                ("prompt", "x"),
                ("steps", "1"),
                ("model", "poisoned"),
            ],
            true,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    let failed = service.wait_for(id, |j| j["status"] == "failed").await;
    assert_eq!(failed["error"]["code"], "poison_input", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("crashed on this input"), "{message}");
    let (attempts,): (i32,) = sqlx::query_as("SELECT attempts FROM jobs WHERE id = $1")
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_one(&service.backends.db)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "a poison input is not retried");
    // The same process goes on with the next job.
    assert!(worker.try_wait().unwrap().is_none(), "the worker died");
    let (status, job) = service
        .submit(
            &[
                ("task", "inpaint"),
                ("prompt", "x"),
                ("steps", "1"),
                ("model", MODEL),
            ],
            true,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    service
        .wait_for(job["id"].as_str().unwrap(), |j| j["status"] == "succeeded")
        .await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker died");
    worker.kill().unwrap();
    worker.wait().unwrap();
    service.finish().await;
}

fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded) for a child process to exit and returns its status.
async fn exit_of(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not exit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_current_job_back_after_the_grace_period() {
    let mut service = Service::start(0).await;
    // A long lease: the job can only come back this fast if it is handed back.
    let mut leaving = service.worker_process(&["--lease-secs", "60", "--shutdown-grace-secs", "1"]);
    service.wait_for_workers(1).await;
    let id = slow_job_under_way(&service).await;
    sigterm(&leaving);
    let status = exit_of(&mut leaving, std::time::Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    let queued = service.wait_for(&id, |j| j["status"] == "queued").await;
    assert!(
        queued["outputs"].as_array().is_none_or(|o| o.is_empty()),
        "{queued}"
    );
    let job_id = Uuid::parse_str(&id).unwrap();
    let (attempts, worker): (i32, Option<Uuid>) =
        sqlx::query_as("SELECT attempts, worker_id FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&service.backends.db)
            .await
            .unwrap();
    assert_eq!(
        (attempts, worker),
        (0, None),
        "released, attempt not counted"
    );

    let next = service
        .add_worker_with(&[MODEL], |a| a.lease_secs = 60)
        .await;
    let done = service.wait_for(&id, |j| j["status"] == "succeeded").await;
    assert_eq!(done["outputs"].as_array().unwrap().len(), 4, "{done}");
    let (attempts, worker): (i32, Option<Uuid>) =
        sqlx::query_as("SELECT attempts, worker_id FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&service.backends.db)
            .await
            .unwrap();
    assert_eq!((attempts, worker), (1, Some(next)));
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_within_the_grace_period_finishes_the_job_and_exits_0() {
    let service = Service::start(0).await;
    let mut leaving = service.worker_process(&["--shutdown-grace-secs", "60"]);
    service.wait_for_workers(1).await;
    let (status, job) = service
        .submit(
            &[("task", "inpaint"), ("prompt", "x"), ("steps", "10")],
            true,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    service.wait_for(&id, |j| j["status"] == "running").await;
    sigterm(&leaving);
    let status = exit_of(&mut leaving, std::time::Duration::from_secs(60)).await;
    assert!(status.success(), "{status}");
    let (_, done) = service.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_api_finish_requests_in_flight_and_exit_0() {
    let mut service = Service::start(0).await;
    service.register_model_only().await;
    let port = support::servers::free_port();
    let c = &service.connect;
    let mut api = std::process::Command::new(env!("CARGO_BIN_EXE_byteedit"))
        .arg("api")
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &c.database_url])
        .args(["--redis-url", &c.redis_url])
        .args(["--storage-url", &c.storage_url])
        .args(["--redis-prefix", &c.redis_prefix])
        .args(["--shutdown-grace-secs", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if service
            .http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // An upload still arriving when SIGTERM comes: half the image, a pause,
    // the rest.
    let image = support::fixture_bytes("expected_image.png");
    let (first, rest) = image.split_at(image.len() / 2);
    let chunks = futures_util::stream::iter([(first.to_vec(), 0), (rest.to_vec(), 1500)]).then(
        |(chunk, pause)| async move {
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            Ok::<_, std::io::Error>(chunk)
        },
    );
    let form = reqwest::multipart::Form::new()
        .text("task", "inpaint")
        .text("prompt", "x")
        .text("steps", "1")
        .part(
            "mask",
            reqwest::multipart::Part::bytes(support::fixture_bytes("expected_mask.png"))
                .file_name("mask.png"),
        )
        .part(
            "image",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks))
                .file_name("image.png"),
        );
    let upload = tokio::spawn(
        service
            .http
            .post(format!("{base}/v1/edits"))
            .multipart(form)
            .send(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    sigterm(&api);
    let response = upload
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status(), 202);
    let job: serde_json::Value = response.json().await.unwrap();
    let status = exit_of(&mut api, std::time::Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    // The job it accepted is there, queued.
    let (_, stored) = service
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(stored["status"], "queued", "{stored}");
    service.finish().await;
}
