//! Who may do what: API keys and their roles, clients seeing only their own
//! jobs, per-key rate limits and queue admission, against the real service.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use byteedit_jobs::access::Role;
use serde_json::{Value, json};
use support::{Service, authorized, error_code, fixture_form};

fn edit_form(prompt: &str) -> reqwest::multipart::Form {
    fixture_form(
        &[("task", "inpaint"), ("prompt", prompt), ("steps", "1")],
        true,
    )
}

async fn status_of(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_roles_and_clients_see_only_their_own_jobs() {
    let service = Service::start(1).await;
    let anonymous = reqwest::Client::new();

    // Open: health and metrics. Everything else needs a live key.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = status_of(anonymous.get(service.url(path))).await;
        assert_eq!(status, 200, "{path}");
    }
    for path in ["/v1/jobs", "/v1/models", "/v1/keys", "/v1/comparisons/next"] {
        let (status, body) = status_of(anonymous.get(service.url(path))).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (401, "unauthorized"),
            "{path}"
        );
        let forged = format!("{}x", service.client_key);
        for key in ["bek_nonsense", forged.as_str(), "vol_0123"] {
            let (status, _) = status_of(authorized(key).get(service.url(path))).await;
            assert_eq!(status, 401, "{path} with {key}");
        }
    }
    let (status, body) = status_of(
        anonymous
            .post(service.url("/v1/edits"))
            .multipart(edit_form("a cat")),
    )
    .await;
    assert_eq!((status, error_code(&body).as_str()), (401, "unauthorized"));

    // Two clients: each sees its own job, and the other's is "not found".
    let other_key = service.key("other client", Role::Client, None).await;
    let other = authorized(&other_key);
    let (status, mine) = service.post_form(edit_form("a cat")).await;
    assert_eq!(status, 202, "{mine}");
    let mine = mine["id"].as_str().unwrap().to_owned();
    let (status, theirs) = service
        .post_form_as(&other, "/v1/edits", edit_form("a dog"))
        .await;
    assert_eq!(status, 202, "{theirs}");
    let theirs = theirs["id"].as_str().unwrap().to_owned();
    for job in [&mine, &theirs] {
        service
            .wait_for_as(&service.admin, job, |j| j["status"] == "succeeded")
            .await;
    }
    for path in [
        format!("/v1/jobs/{theirs}"),
        format!("/v1/jobs/{theirs}/outputs/0"),
        format!("/v1/jobs/{theirs}/input"),
        format!("/v1/jobs/{theirs}/mask"),
        format!("/v1/jobs/{theirs}/events"),
    ] {
        let (status, body) = status_of(service.http.get(service.url(&path))).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (404, "not_found"),
            "{path}"
        );
        let (status, _) = status_of(other.get(service.url(&path))).await;
        assert_ne!(status, 404, "the owner sees {path}");
    }
    let (status, _) = service.delete(&format!("/v1/jobs/{theirs}")).await;
    assert_eq!(status, 404, "nor may it cancel another's job");
    let listed = |body: &Value| -> Vec<String> {
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, page) = service.get("/v1/jobs").await;
    assert_eq!(listed(&page), vec![mine.clone()]);
    let (_, page) = service.get_as("/v1/jobs", &service.admin_key).await;
    assert_eq!(
        listed(&page),
        vec![theirs.clone(), mine.clone()],
        "admins see all"
    );

    // Volunteers vote; they neither submit nor read jobs they do not judge.
    let volunteer = authorized(&service.volunteer("vic", false).await);
    let (status, body) = status_of(
        volunteer
            .post(service.url("/v1/edits"))
            .multipart(edit_form("x")),
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "forbidden"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client")
    );
    let (status, _) = status_of(volunteer.get(service.url("/v1/jobs"))).await;
    assert_eq!(status, 403);
    let (status, _) =
        status_of(volunteer.get(service.url(&format!("/v1/jobs/{mine}/outputs/0")))).await;
    assert_eq!(status, 404);
    let (status, _) = status_of(volunteer.get(service.url("/v1/models"))).await;
    assert_eq!(status, 200, "any key reads the model list");
    // Experts rate comparisons' jobs and admins' jobs, not clients' own.
    let expert_key = service.volunteer("eve", true).await;
    let expert = authorized(&expert_key);
    let (status, _) =
        status_of(expert.get(service.url(&format!("/v1/jobs/{mine}/outputs/0")))).await;
    assert_eq!(status, 404);
    let (status, _) = service
        .post_json(
            &format!("/v1/jobs/{mine}/ratings"),
            Some(&expert_key),
            json!({"coherence": 3, "structure": 3}),
        )
        .await;
    assert_eq!(status, 404);

    // Clients do not manage keys; admins do, and a revoked key stops at once.
    let (status, _) = service
        .post_json("/v1/keys", None, json!({"name": "x", "role": "admin"}))
        .await;
    assert_eq!(status, 403);
    let (status, made) = service
        .post_json(
            "/v1/keys",
            Some(&service.admin_key),
            json!({"name": "third", "role": "client", "rate_limit": 100}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (made["role"].as_str(), made["rate_limit"].as_u64()),
        (Some("client"), Some(100))
    );
    let third = made["key"].as_str().unwrap().to_owned();
    let (status, _) = service.get_as("/v1/jobs", &third).await;
    assert_eq!(status, 200);
    for bad in [
        json!({"name": "", "role": "client"}),
        json!({"name": "y", "role": "root"}),
        json!({"name": "y", "role": "client", "expert": true}),
        json!({"name": "y", "role": "client", "rate_limit": 0}),
        json!({"name": "y", "role": "client", "colour": "red"}),
    ] {
        let (status, body) = service
            .post_json("/v1/keys", Some(&service.admin_key), bad.clone())
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (_, keys) = service.get_as("/v1/keys", &service.admin_key).await;
    // A second key for an existing volunteer: the same voter, not a new one.
    let vic = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "vic")
        .unwrap()["volunteer_id"]
        .clone();
    let (status, again) = service
        .post_json(
            "/v1/keys",
            Some(&service.admin_key),
            json!({"name": "vic's phone", "role": "volunteer", "volunteer_id": vic}),
        )
        .await;
    assert_eq!((status, &again["volunteer_id"]), (201, &vic), "{again}");
    let (status, _) = service
        .get_as("/v1/comparisons/next", again["key"].as_str().unwrap())
        .await;
    assert_eq!(status, 204, "the new key votes (nothing to judge yet)");
    for bad in [
        json!({"name": "x", "role": "volunteer", "volunteer_id": "0190b6a0-0000-7000-8000-000000000000"}),
        json!({"name": "x", "role": "client", "volunteer_id": vic}),
    ] {
        let (status, _) = service
            .post_json("/v1/keys", Some(&service.admin_key), bad.clone())
            .await;
        assert_eq!(status, 422, "{bad}");
    }
    let text = keys.to_string();
    assert!(
        text.contains("third") && !text.contains(&third),
        "no secrets listed"
    );
    let third_id = made["id"].as_str().unwrap();
    let response = service
        .admin
        .delete(service.url(&format!("/v1/keys/{third_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = service.get_as("/v1/jobs", &third).await;
    assert_eq!(status, 401, "revoked");

    // Idempotency keys are per client: the same key from two clients makes two jobs.
    let send = |http: &reqwest::Client| {
        http.post(service.url("/v1/edits"))
            .header("idempotency-key", "retry-1")
            .multipart(edit_form("a pear"))
    };
    let (a, first) = status_of(send(&service.http)).await;
    let (b, second) = status_of(send(&other)).await;
    assert_eq!((a, b), (202, 202));
    assert_ne!(first["id"], second["id"]);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_rate_limit_gets_429_with_retry_after() {
    let service = Service::start_with(0, |api| api.rate_burst = 3).await;
    // 6 a minute with bursts of (at most) 3: the 4th quick request waits ~10 s.
    let slow = service.key("slow", Role::Client, Some(6)).await;
    let slow = authorized(&slow);
    for _ in 0..3 {
        let (status, _) = status_of(slow.get(service.url("/v1/jobs"))).await;
        assert_eq!(status, 200);
    }
    let response = slow.get(service.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited");
    // Other keys have allowances of their own.
    let (status, _) = service.get("/v1/jobs").await;
    assert_eq!(status, 200);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_submissions_until_it_drains() {
    let mut service = Service::start_with(0, |api| api.max_queued = 2).await;
    service.register_model_only().await;
    let mut queued = Vec::new();
    for prompt in ["one", "two"] {
        let (status, job) = service.post_form(edit_form(prompt)).await;
        assert_eq!(status, 202, "{job}");
        queued.push(job["id"].as_str().unwrap().to_owned());
    }
    let response = service
        .http
        .post(service.url("/v1/edits"))
        .multipart(edit_form("three"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "queue_full", "{body}");
    // Nothing was stored or recorded for the refused request.
    let (_, page) = service.get_as("/v1/jobs", &service.admin_key).await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    service.delete(&format!("/v1/jobs/{}", queued[0])).await;
    let (status, _) = service.post_form(edit_form("three")).await;
    assert_eq!(status, 202, "room again after a cancel");
    service.finish().await;
}

/// Every file under `dir`, however deep, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

async fn rows(service: &Service, table: &str) -> i64 {
    let count = format!("SELECT count(*) FROM {table}");
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(count))
        .fetch_one(&service.backends.db)
        .await
        .unwrap();
    n
}

/// Issue 13: a comparison run refused because its baseline's queue is full
/// creates nothing, not even its candidate's job: no row, no stored file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comparison_run_refused_for_a_full_queue_leaves_nothing_behind() {
    let mut service = Service::start_with(0, |api| api.max_queued = 2).await;
    // Two models, registered by a worker that then leaves: jobs wait.
    service.add_worker_for(&["tiny", "tiny-next"]).await;
    service.workers.pop().unwrap().stop().await.unwrap();
    for prompt in ["one", "two"] {
        let form = fixture_form(
            &[
                ("task", "inpaint"),
                ("prompt", prompt),
                ("steps", "1"),
                ("model", "tiny"),
            ],
            true,
        );
        let (status, job) = service.post_form(form).await;
        assert_eq!(status, 202, "{job}");
    }
    let stored = files_under(&service.storage_dir());
    assert_eq!(
        (rows(&service, "jobs").await, stored.len()),
        (2, 4),
        "{stored:?}"
    );

    let run = fixture_form(
        &[
            ("task", "inpaint"),
            ("prompt", "three"),
            ("steps", "1"),
            ("candidate_model", "tiny-next"),
            ("baseline_model", "tiny"),
        ],
        true,
    );
    let response = service
        .admin
        .post(service.url("/v1/comparisons"))
        .multipart(run)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "queue_full", "{body}");
    assert_eq!(
        rows(&service, "jobs").await,
        2,
        "no job row for the refused run"
    );
    assert_eq!(
        files_under(&service.storage_dir()),
        stored,
        "no file for it"
    );
    assert_eq!(rows(&service, "comparisons").await, 0);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byteedit_keys_makes_lists_and_revokes_keys() {
    let service = Service::start(0).await;
    let byteedit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_byteedit"))
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &service.connect.database_url)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, key, err) = byteedit(&["create", "--role", "admin", "--name", "ops"]);
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("bek_"), "only the key on stdout: {key}");
    let (status, keys) = service.get_as("/v1/keys", &key).await;
    assert_eq!(status, 200, "the printed key works: {keys}");
    let (ok, listing, _) = byteedit(&["list"]);
    assert!(
        ok && listing.contains("ops") && !listing.contains(&key),
        "{listing}"
    );
    let id = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ops")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, _, err) = byteedit(&["create", "--role", "client", "--name", "x", "--expert"]);
    assert!(!ok && err.contains("volunteer"), "{err}");
    let (ok, _, err) = byteedit(&["revoke", &id]);
    assert!(ok, "{err}");
    let (status, _) = service.get_as("/v1/keys", &key).await;
    assert_eq!(status, 401);
    service.finish().await;
}
