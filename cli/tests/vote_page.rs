//! The volunteers' page (`/vote`) in real headless Chromium, driven through
//! chromedriver (W3C WebDriver over HTTP), voting against the running API:
//! a keyboard vote, a click vote, the end of the queue, and the layout on a
//! phone-sized screen. Needs Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them when missing).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::Service;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end on drop.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{driver_bin}` ({e}): install Debian's chromium and chromium-driver")
            });
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags keep Chromium off the (closed) network and out of the sandbox root cannot use.
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {response}"))
            .to_owned();
        Browser {
            http,
            base,
            session,
            driver,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let response: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(
            response["value"].get("error").is_none(),
            "{path}: {response}"
        );
        response["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits (up to 20 s) until the JS expression is true.
    async fn wait(&self, expression: &str) {
        for _ in 0..200 {
            if self.eval(&format!("return !!({expression});")).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = self.eval("return document.body.innerText;").await;
        panic!("timed out waiting for `{expression}`; the page says: {text}");
    }

    async fn click(&self, css: &str) {
        let element = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        let id = element[ELEMENT].as_str().unwrap().to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// A PNG of the window.
    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap()
    }

    /// A real key press (through the browser's input pipeline).
    async fn press(&self, key: &str) {
        self.call(
            reqwest::Method::POST,
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}
            ]}]}),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Both images of the shown pair have loaded.
const PAIR_LOADED: &str = "!document.getElementById('pair').hidden \
    && document.getElementById('left-img').complete && document.getElementById('left-img').naturalWidth > 0 \
    && document.getElementById('right-img').complete && document.getElementById('right-img').naturalWidth > 0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volunteers_vote_in_chromium_with_keys_and_clicks() {
    let mut service = Service::start(0).await;
    service.add_worker_for(&["tiny", "tiny-v2"]).await;
    let first = service.comparison_run("tiny-v2", "tiny", "erase").await;
    let second = service.comparison_run("tiny-v2", "tiny", "inpaint").await;
    let token = service.volunteer("browser", false).await;

    // A phone-sized window.
    let browser = Browser::start(390, 844).await;
    browser
        .goto(&service.url(&format!("/vote?token={token}")))
        .await;
    browser.wait(PAIR_LOADED).await;
    // The token left the address bar and stays in the browser.
    let url = browser.eval("return location.href;").await;
    assert!(!url.as_str().unwrap().contains("token"), "{url}");
    // On a phone the two results stack, and the three buttons fit the screen.
    let layout = browser
        .eval(
            "const l = document.getElementById('left-img').getBoundingClientRect();
             const r = document.getElementById('right-img').getBoundingClientRect();
             const b = document.getElementById('btn-right').getBoundingClientRect();
             return {stacked: r.top >= l.bottom, buttonInside: b.right <= window.innerWidth, width: window.innerWidth};",
        )
        .await;
    assert_eq!(layout["stacked"], true, "{layout}");
    assert_eq!(layout["buttonInside"], true, "{layout}");
    // What a volunteer sees (docs/images/vote-page.png is one of these).
    let shot = browser.screenshot().await;
    let png = image::load_from_memory(&shot).unwrap();
    assert!(png.width() > 0);
    std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/vote-page.png"),
        &shot,
    )
    .unwrap();
    let shown_first = browser
        .eval("return document.getElementById('left-img').src;")
        .await;

    // Key 1: the left image is better.
    browser.press("1").await;
    browser
        .wait(&format!(
            "document.getElementById('left-img').src !== {shown_first} && ({PAIR_LOADED})"
        ))
        .await;
    // A click on "Same" for the second pair, then the queue is empty.
    browser.click("#btn-same").await;
    browser
        .wait("!document.getElementById('done').hidden")
        .await;

    let votes: Vec<(String, Option<bool>, bool)> = sqlx::query_as(
        "SELECT verdict, candidate_left, presentation_id IS NOT NULL FROM votes \
         WHERE aspect = 'overall' ORDER BY created_at",
    )
    .fetch_all(&service.backends.db)
    .await
    .unwrap();
    assert_eq!(votes.len(), 2, "{votes:?}");
    // Left was chosen: good when the candidate was on the left, bad otherwise.
    let (verdict, left, via_presentation) = &votes[0];
    assert!(*via_presentation);
    assert_eq!(
        verdict,
        if *left == Some(true) { "good" } else { "bad" },
        "{votes:?}"
    );
    assert_eq!(votes[1].0, "same");
    let voted: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT comparison_id FROM votes")
        .fetch_all(&service.backends.db)
        .await
        .unwrap();
    for pair in [&first, &second] {
        let id = pair["id"].as_str().unwrap();
        assert!(
            voted.iter().any(|(v,)| v.to_string() == id),
            "{id} not voted"
        );
    }
    drop(browser);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_asks_for_a_valid_one() {
    let service = Service::start(0).await;
    let browser = Browser::start(1200, 900).await;
    browser.goto(&service.url("/vote?token=vol_wrong")).await;
    browser
        .wait("!document.getElementById('token-form').hidden")
        .await;
    browser
        .wait("document.getElementById('message').textContent.includes('not known')")
        .await;
    drop(browser);
    service.finish().await;
}
