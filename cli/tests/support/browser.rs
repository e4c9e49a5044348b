//! Real headless Chromium through chromedriver (W3C WebDriver over HTTP),
//! for the browser pages' tests. Needs Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them when missing).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session; both end on drop.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start(width: u32, height: u32) -> Browser {
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

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), url);
        if method == reqwest::Method::POST {
            request = request.json(&body);
        }
        let response: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(
            response["value"].get("error").is_none(),
            "{path}: {response}"
        );
        response["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits (up to 20 s) until the JS expression is true.
    pub async fn wait(&self, expression: &str) {
        for _ in 0..200 {
            if self.eval(&format!("return !!({expression});")).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = self.eval("return document.body.innerText;").await;
        panic!("timed out waiting for `{expression}`; the page says: {text}");
    }

    /// The WebDriver id of the first element matching `css`.
    pub async fn element(&self, css: &str) -> String {
        let element = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        element[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Real typing into an element (for a file input: the file's path).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await;
    }

    /// A real pointer gesture (`pointer`: `mouse` or `touch`) through the
    /// browser's input pipeline: down at the first point (viewport CSS
    /// pixels), moves through the others, up at the last.
    pub async fn gesture(&self, pointer: &str, points: &[(f64, f64)]) {
        let mut actions = Vec::new();
        let (x, y) = points[0];
        actions.push(json!({"type": "pointerMove", "duration": 0, "x": x as i64, "y": y as i64}));
        actions.push(json!({"type": "pointerDown", "button": 0}));
        for &(x, y) in &points[1..] {
            actions
                .push(json!({"type": "pointerMove", "duration": 50, "x": x as i64, "y": y as i64}));
        }
        actions.push(json!({"type": "pointerUp", "button": 0}));
        self.call(
            reqwest::Method::POST,
            "/actions",
            json!({"actions": [{"type": "pointer", "id": pointer,
                "parameters": {"pointerType": pointer}, "actions": actions}]}),
        )
        .await;
        self.call(reqwest::Method::DELETE, "/actions", Value::Null)
            .await;
    }

    /// The element's box in viewport CSS pixels: left, top, width, height.
    pub async fn rect(&self, css: &str) -> (f64, f64, f64, f64) {
        let r = self
            .eval(&format!(
                "const r = document.querySelector({css:?}).getBoundingClientRect(); return [r.left, r.top, r.width, r.height];"
            ))
            .await;
        let v = |i: usize| r[i].as_f64().unwrap();
        (v(0), v(1), v(2), v(3))
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap()
    }

    /// A screenshot, checked to be a picture, kept as `name` in the tests'
    /// scratch folder (`target/tmp`), where docs/images takes its copies from.
    pub async fn save_screenshot(&self, name: &str) {
        let png = self.screenshot().await;
        assert!(image::load_from_memory(&png).unwrap().width() > 0);
        std::fs::write(format!("{}/{name}", env!("CARGO_TARGET_TMPDIR")), png).unwrap();
    }

    /// A real key press (through the browser's input pipeline).
    pub async fn press(&self, key: &str) {
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
