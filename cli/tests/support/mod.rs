//! A real ByteEdit service for tests: the API on an ephemeral port and
//! in-process workers with the tiny fixture model, against the real Postgres
//! and Redis, each test with its own database and Redis prefix. Requests go
//! out with real API keys: `http` as a client, `admin` as an admin.

#![allow(dead_code)]

pub mod browser;
pub mod servers;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use byteedit_api::ApiArgs;
use byteedit_jobs::access::Role;
use byteedit_jobs::db::api_keys::{self, NewKey};
use byteedit_jobs::{Backends, ConnectArgs};
use byteedit_worker::{ModelSpec, Worker, WorkerArgs, WorkerHandle};
use futures_util::StreamExt;
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::oneshot;

pub const MODEL: &str = "tiny";

pub fn tiny_model() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/tests/fixtures/sd15-inpaint-tiny"
    ))
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(tiny_model().join(name)).expect("fixture image")
}

/// The plan and engine request the worker makes for a job with `params` on
/// the fixture image and mask (what `fixture_form` uploads).
pub fn fixture_plan(
    model: &byteedit_models::InpaintModel<byteedit_models::CpuBackend>,
    params: &byteedit_jobs::EditParams,
) -> (
    byteedit_models::tasks::EditPlan,
    byteedit_models::EditRequest,
) {
    use byteedit_models::image_io::{decode_image, to_luma, to_rgb};
    let plan = byteedit_models::tasks::EditPlan::new(
        &to_rgb(&decode_image(&fixture_bytes("expected_image.png"), "image").unwrap()),
        Some(&to_luma(
            &decode_image(&fixture_bytes("expected_mask.png"), "mask").unwrap(),
        )),
        &byteedit_models::tasks::TaskOptions::for_params(params),
        model.native_size(),
    )
    .unwrap();
    let request = byteedit_models::EditRequest::for_params(&plan, params).unwrap();
    (plan, request)
}

/// Postgres server URL without a database (override with BYTEEDIT_TEST_PG).
pub fn pg_server() -> String {
    std::env::var("BYTEEDIT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("BYTEEDIT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub struct Service {
    pub base: String,
    /// Sends the `client_key`.
    pub http: reqwest::Client,
    /// Sends the `admin_key`.
    pub admin: reqwest::Client,
    pub client_key: String,
    pub admin_key: String,
    pub backends: Backends,
    pub connect: ConnectArgs,
    pub workers: Vec<WorkerHandle>,
    database: String,
    pg_server: String,
    stop_api: Option<oneshot::Sender<()>>,
    _storage: tempfile::TempDir,
}

impl Service {
    /// The API plus `workers` workers serving the tiny model as `tiny`.
    pub async fn start(workers: usize) -> Service {
        Self::start_with(workers, |_| {}).await
    }

    /// As `start`, with adjusted API settings (limits).
    pub async fn start_with(workers: usize, adjust: impl FnOnce(&mut ApiArgs)) -> Service {
        Self::start_on_with(workers, &pg_server(), &redis_url(), adjust).await
    }

    /// As [`Service::start`], against the Postgres server `pg` (a URL without
    /// a database) and the Redis at `redis`, e.g. private ones a test stops.
    pub async fn start_on(workers: usize, pg: &str, redis: &str) -> Service {
        Self::start_on_with(workers, pg, redis, |_| {}).await
    }

    pub async fn start_on_with(
        workers: usize,
        pg: &str,
        redis: &str,
        adjust: impl FnOnce(&mut ApiArgs),
    ) -> Service {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("byteedit_test_{tag}");
        let storage = tempfile::tempdir().unwrap();
        let connect = ConnectArgs {
            database_url: format!("{pg}/{database}"),
            redis_url: redis.to_owned(),
            storage_url: storage.path().to_string_lossy().into_owned(),
            redis_prefix: format!("byteedit-test-{tag}"),
            db_connections: 8,
            // Short, so outage tests see their 503s quickly.
            db_acquire_timeout_secs: 1.0,
        };
        let backends = Backends::connect(&connect)
            .await
            .expect("Postgres and Redis must be running");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // Tests poll quickly; the rate limit has tests of its own.
        let mut api = ApiArgs {
            rate_limit: 1_000_000,
            rate_burst: 100_000,
            ..ApiArgs::default()
        };
        adjust(&mut api);
        let client_key = make_key(&backends, "test client", Role::Client, None).await;
        let admin_key = make_key(&backends, "test admin", Role::Admin, None).await;
        let state = byteedit_api::app_state(&api, backends.clone());
        let (stop_api, stopped) = oneshot::channel::<()>();
        tokio::spawn(byteedit_api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        let mut service = Service {
            base,
            http: authorized(&client_key),
            admin: authorized(&admin_key),
            client_key,
            admin_key,
            backends,
            connect,
            workers: Vec::new(),
            database,
            pg_server: pg.to_owned(),
            stop_api: Some(stop_api),
            _storage: storage,
        };
        for _ in 0..workers {
            service.add_worker().await;
        }
        service
    }

    /// Starts one more worker with its own connections, as another machine would.
    pub async fn add_worker(&mut self) -> uuid::Uuid {
        self.add_worker_for(&[MODEL]).await
    }

    /// Registers the tiny model through a worker that then stops, so that
    /// submissions are accepted and wait in the queue.
    pub async fn register_model_only(&mut self) {
        self.add_worker().await;
        self.workers.pop().unwrap().stop().await.unwrap();
    }

    /// A worker serving the tiny model under each of `names` (two "versions").
    pub async fn add_worker_for(&mut self, names: &[&str]) -> uuid::Uuid {
        self.add_worker_with(names, |_| {}).await
    }

    /// A worker with adjusted settings (lease, attempts, heartbeat).
    pub async fn add_worker_with(
        &mut self,
        names: &[&str],
        adjust: impl FnOnce(&mut WorkerArgs),
    ) -> uuid::Uuid {
        let backends = Backends::connect(&self.connect).await.unwrap();
        let mut args = WorkerArgs::for_models(
            names
                .iter()
                .map(|name| ModelSpec {
                    name: name.to_string(),
                    dir: tiny_model(),
                    registry: None,
                    default_steps: None,
                })
                .collect(),
        );
        adjust(&mut args);
        let handle =
            Worker::start::<byteedit_models::CpuBackend>(args, backends, Default::default())
                .await
                .expect("worker starts");
        let id = handle.id;
        self.workers.push(handle);
        id
    }

    /// `byteedit worker` as its own process serving the tiny model, with a
    /// short heartbeat (1 s) and lease (3 s unless `extra` sets one), and
    /// `extra` flags.
    pub fn worker_process(&self, extra: &[&str]) -> Child {
        let c = &self.connect;
        Command::new(env!("CARGO_BIN_EXE_byteedit"))
            .args(["worker", "--model"])
            .arg(format!("{MODEL}={}", tiny_model().display()))
            .args(["--database-url", &c.database_url])
            .args(["--redis-url", &c.redis_url])
            .args(["--storage-url", &c.storage_url])
            .args(["--redis-prefix", &c.redis_prefix])
            .args(["--heartbeat-secs", "1"])
            .args(if extra.contains(&"--lease-secs") {
                &[][..]
            } else {
                &["--lease-secs", "3"][..]
            })
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("byteedit worker starts")
    }

    /// Waits until `n` workers serve the tiny model (a process has loaded it).
    pub async fn wait_for_workers(&self, n: u64) {
        for _ in 0..600 {
            let response = self.http.get(self.url("/v1/models")).send().await;
            if let Ok(response) = response
                && let Ok(models) = response.json::<Value>().await
                && models["models"][0]["workers"].as_u64() == Some(n)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{n} workers did not register");
    }

    /// The folder `storage_url` points at.
    pub fn storage_dir(&self) -> PathBuf {
        PathBuf::from(&self.connect.storage_url)
    }

    /// Headers every request to the API needs (the admin key), for clients
    /// the tests run outside `http` (schemathesis).
    pub fn auth_headers(&self) -> Vec<(String, String)> {
        vec![("Authorization".into(), format!("Bearer {}", self.admin_key))]
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self.http.delete(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST /v1/edits with text fields and the fixture image (and mask).
    pub async fn submit(&self, fields: &[(&str, &str)], with_mask: bool) -> (u16, Value) {
        self.post_form(fixture_form(fields, with_mask)).await
    }

    pub async fn post_form(&self, form: reqwest::multipart::Form) -> (u16, Value) {
        self.post_form_to("/v1/edits", form).await
    }

    pub async fn post_form_to(&self, path: &str, form: reqwest::multipart::Form) -> (u16, Value) {
        self.post_form_as(&self.http, path, form).await
    }

    /// POST a form with `http` (`self.admin`, or a client with another key).
    pub async fn post_form_as(
        &self,
        http: &reqwest::Client,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> (u16, Value) {
        let response = http
            .post(self.url(path))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST a JSON body, with a bearer token when given.
    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET with a bearer token.
    pub async fn get_as(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers a volunteer through `POST /v1/keys` and returns its key.
    pub async fn volunteer(&self, name: &str, expert: bool) -> String {
        let (status, body) = self
            .post_json(
                "/v1/keys",
                Some(&self.admin_key),
                serde_json::json!({"name": name, "role": "volunteer", "expert": expert}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }

    /// A new key with `role`, made as `byteedit keys create` makes it.
    pub async fn key(&self, name: &str, role: Role, rate_limit: Option<u32>) -> String {
        make_key(&self.backends, name, role, rate_limit).await
    }

    /// Runs the fixture input on two models as a comparison; returns it once
    /// both jobs have succeeded.
    pub async fn comparison_run(&self, candidate: &str, baseline: &str, task: &str) -> Value {
        let form = fixture_form(
            &[
                ("task", task),
                ("prompt", "a red apple"),
                ("steps", "1"),
                ("candidate_model", candidate),
                ("baseline_model", baseline),
            ],
            true,
        );
        let (status, comparison) = self
            .post_form_as(&self.admin, "/v1/comparisons", form)
            .await;
        assert_eq!(status, 201, "{comparison}");
        for job in ["candidate_job", "baseline_job"] {
            self.wait_for_as(&self.admin, comparison[job].as_str().unwrap(), |j| {
                j["status"] == "succeeded"
            })
            .await;
        }
        comparison
    }

    /// Follows a job's SSE stream to its final event (bounded in time).
    pub async fn follow(&self, job: &str) -> Vec<(String, Value)> {
        let response = self
            .http
            .get(self.url(&format!("/v1/jobs/{job}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .expect("job ends within 120 s");
            let Some(chunk) = chunk else { return events };
            buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(name) = name {
                    let data: Value = serde_json::from_str(&data).unwrap();
                    let last = matches!(name.as_str(), "succeeded" | "failed" | "canceled");
                    events.push((name, data));
                    if last {
                        return events;
                    }
                }
            }
        }
    }

    /// Polls a job until `done` says so (bounded in time).
    pub async fn wait_for(&self, job: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_as(&self.http, job, done).await
    }

    /// As `wait_for`, polling with `http` (`self.admin` sees every job).
    pub async fn wait_for_as(
        &self,
        http: &reqwest::Client,
        job: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        for _ in 0..1200 {
            let response = http
                .get(self.url(&format!("/v1/jobs/{job}")))
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {job} did not reach the expected state");
    }

    pub async fn download(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.download_as(&self.http, path).await
    }

    pub async fn download_as(&self, http: &reqwest::Client, path: &str) -> (u16, String, Vec<u8>) {
        let response = http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, kind, response.bytes().await.unwrap().to_vec())
    }

    /// Stops workers and the API, and drops the test database.
    pub async fn finish(mut self) {
        for worker in self.workers.drain(..) {
            worker.stop().await.unwrap();
        }
        if let Some(stop) = self.stop_api.take() {
            let _ = stop.send(());
        }
        self.backends.db.close().await;
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.pg_server))
            .await
            .unwrap();
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

async fn make_key(backends: &Backends, name: &str, role: Role, rate_limit: Option<u32>) -> String {
    let new = NewKey {
        name,
        role,
        expert: false,
        volunteer: None,
        rate_limit,
    };
    api_keys::create(&backends.db, &new).await.unwrap().1
}

/// A client that sends `key` on every request (a request's own
/// `bearer_auth` replaces it).
pub fn authorized(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A form with text `fields`, the fixture image and (`with_mask`) its mask.
pub fn fixture_form(fields: &[(&str, &str)], with_mask: bool) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(fixture_bytes("expected_image.png")).file_name("image.png"),
    );
    if with_mask {
        form = form.part(
            "mask",
            reqwest::multipart::Part::bytes(fixture_bytes("expected_mask.png"))
                .file_name("mask.png"),
        );
    }
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    form
}

/// Asserts the one error shape and returns its code.
pub fn error_code(body: &Value) -> String {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code in {body}"))
        .to_owned()
}
