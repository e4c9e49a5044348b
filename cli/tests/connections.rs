//! Hostile clients at the connection level, with a real TCP client that
//! sends slowly, lies about its body or sends bytes HTTP forbids: each is
//! cut or answered in bounded time, and every answer has the JSON error
//! shape. Timeouts are set short here; the defaults are in `ApiArgs`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(svc: &Service) -> String {
    svc.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `limit` passes).
/// Returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(start.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw answer: status, lower-cased head, and the body as JSON.
fn parse(raw: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Sends `request` whole and reads the answer up to the close.
async fn exchange(svc: &Service, request: &[u8]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr(svc)).await.unwrap();
    // The server may answer and close before it read everything (a URL
    // too long): what it answered is what counts.
    let _ = stream.write_all(request).await;
    let (raw, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "no answer in 10 s");
    parse(&raw)
}

fn assert_json_error(status: u16, head: &str, body: &Value, want: (u16, &str)) {
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap_or("")),
        want,
        "{head}\n{body}"
    );
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_cut_at_the_header_timeout() {
    let svc = Service::start_with(0, |api| api.header_timeout_secs = 1.0).await;
    // A bare connection that sends nothing.
    let mut idle = TcpStream::connect(addr(&svc)).await.unwrap();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    let closed = closed.expect("an idle connection is closed");
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );

    // Headers trickled a line every 300 ms: never complete, cut all the same.
    let mut slow = TcpStream::connect(addr(&svc)).await.unwrap();
    let (mut reader, mut writer) = slow.split();
    let started = Instant::now();
    let trickle = async {
        writer.write_all(b"GET /healthz HTTP/1.1\r\n").await?;
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            writer
                .write_all(format!("x-line-{i}: 1\r\n").as_bytes())
                .await?;
        }
        std::io::Result::Ok(())
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    let elapsed = tokio::time::timeout(Duration::from_secs(6), async {
        tokio::select! {
            elapsed = closed => elapsed,
            _ = trickle => panic!("9 s of trickled headers were accepted"),
        }
    })
    .await
    .expect("the slow-header connection is cut");
    assert!(elapsed < Duration::from_secs(3), "cut after {elapsed:?}");

    // A kept-alive connection: answered, then closed once idle.
    let mut kept = TcpStream::connect(addr(&svc)).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (raw, closed) = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(closed.is_some(), "an idle kept-alive connection is closed");
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_at_the_body_timeout() {
    let svc = Service::start_with(0, |api| api.body_timeout_secs = 2.0).await;
    let mut stream = TcpStream::connect(addr(&svc)).await.unwrap();
    let head = format!(
        "POST /v1/edits HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: multipart/form-data; boundary=b\r\ncontent-length: 100000\r\n\r\n",
        svc.client_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    // 10 bytes every 200 ms: alive, but never done.
    let trickle = async {
        writer.write_all(b"--b\r\n").await?;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer.write_all(b"xxxxxxxxxx").await?;
        }
        #[allow(unreachable_code)]
        std::io::Result::Ok(())
    };
    let answer = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return (got, started.elapsed()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let (raw, elapsed) = tokio::time::timeout(Duration::from_secs(8), async {
        tokio::select! {
            answer = answer => answer,
            _ = trickle => panic!("the trickle ended first"),
        }
    })
    .await
    .expect("the trickled body is cut");
    let (status, head, body) = parse(&raw);
    assert_json_error(status, &head, &body, (408, "body_timeout"));
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(5)).contains(&elapsed),
        "{elapsed:?}"
    );
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let svc = Service::start_with(0, |api| api.max_upload_mb = 1).await;
    for (path, key, kind) in [
        (
            "/v1/edits",
            &svc.client_key,
            "multipart/form-data; boundary=b",
        ),
        (
            "/v1/comparisons",
            &svc.admin_key,
            "multipart/form-data; boundary=b",
        ),
        ("/v1/keys", &svc.admin_key, "application/json"),
    ] {
        let mut stream = TcpStream::connect(addr(&svc)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
             content-type: {kind}\r\ncontent-length: 100000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // No byte of the body is sent: the answer must come regardless.
        let (raw, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        let (status, head, body) = parse(&raw);
        assert_json_error(status, &head, &body, (413, "payload_too_large"));
        let limit = if path == "/v1/keys" { "64 KB" } else { "1 MB" };
        assert!(
            body["error"]["message"].as_str().unwrap().contains(limit),
            "{path}: {body}"
        );
    }
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_a_json_503_and_the_rest_are_served() {
    const CAP: u64 = 4;
    let svc = Service::start_with(0, |api| api.max_connections = CAP).await;
    // The harness's own clients may hold pooled connections: open raw ones
    // until one is refused; it must happen within the cap.
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..CAP + 2 {
        let mut stream = TcpStream::connect(addr(&svc)).await.unwrap();
        // A refused connection is answered at once; a served one waits
        // for its request.
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.truncate(n);
                let (more, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
                buf.extend(more);
                refused = Some(buf);
                break;
            }
            _ => open.push(stream),
        }
    }
    let raw = refused.expect("a connection over the cap is refused");
    assert!(
        open.len() as u64 <= CAP,
        "{} connections served",
        open.len()
    );
    let (status, head, body) = parse(&raw);
    assert_json_error(status, &head, &body, (503, "too_many_connections"));
    assert!(head.contains("retry-after: 1"), "{head}");
    // The connections held are served as usual.
    let mut held = open.pop().unwrap();
    held.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (raw, _) = read_until_closed(&mut held, Duration::from_secs(5)).await;
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // Once they close, new ones are served again.
    drop(open);
    drop(held);
    let served = async {
        loop {
            let (status, _, _) = exchange(
                &svc,
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
            if status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("served again after the others closed");
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_made_before_any_handler_have_the_json_error_body() {
    let svc = Service::start(0).await;
    // A 100 kB query string: hyper's 414.
    let long = format!(
        "GET /v1/jobs?x={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(100_000)
    );
    let (status, head, body) = exchange(&svc, long.as_bytes()).await;
    assert_json_error(status, &head, &body, (414, "uri_too_long"));
    // A NUL byte in a header: hyper's 400.
    let mut nul = b"GET /v1/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer a".to_vec();
    nul.extend_from_slice(b"\0b\r\n\r\n");
    let (status, head, body) = exchange(&svc, &nul).await;
    assert_json_error(status, &head, &body, (400, "bad_request"));
    // A 0xFF byte (obs-text): read as a header, refused as a key.
    let mut ff =
        b"GET /v1/jobs HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer \xff"
            .to_vec();
    ff.extend_from_slice(b"\r\n\r\n");
    let (status, head, body) = exchange(&svc, &ff).await;
    assert_json_error(status, &head, &body, (401, "unauthorized"));
    // More headers than hyper takes: its 431.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..150)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let (status, head, body) = exchange(&svc, big.as_bytes()).await;
    assert_json_error(status, &head, &body, (431, "headers_too_large"));
    // Malformed request lines.
    let (status, head, body) = exchange(&svc, b"BLAH\r\n\r\n").await;
    assert_json_error(status, &head, &body, (400, "bad_request"));
    // Framework rejections inside the router: a JSON route sent text.
    let answer = svc
        .admin
        .post(svc.url("/v1/keys"))
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let kind = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = answer.json().await.unwrap();
    assert!(
        status >= 400 && kind.starts_with("application/json"),
        "{status} {kind} {body}"
    );
    assert!(body["error"]["code"].is_string(), "{body}");
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_in_queries_paths_and_json_are_a_422_not_a_500() {
    let svc = Service::start(0).await;
    for query in ["candidate=%00", "baseline=a%00b", "task=inpaint&aspect=%00"] {
        let (status, body) = svc
            .get_as(&format!("/v1/stats/gsb?{query}"), &svc.admin_key)
            .await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (422, "invalid_field"),
            "{query}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("NUL"), "{message}");
        let name = query.rsplit('&').next().unwrap().split('=').next().unwrap();
        assert!(message.contains(&format!("`{name}`")), "{message}");
    }
    let (status, body) = svc.get("/v1/jobs?before=%00").await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (422, "invalid_field"),
        "{body}"
    );
    // A path part.
    let (status, body) = svc.get("/v1/jobs/%00").await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "not_found"),
        "{body}"
    );
    // A JSON string, named by its field.
    let (status, body) = svc
        .post_json(
            "/v1/keys",
            Some(&svc.admin_key),
            serde_json::json!({"name": "a\u{0}b", "role": "client"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (422, "invalid_field"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`name`"),
        "{body}"
    );
    // Nothing was created.
    let (_, keys) = svc.get_as("/v1/keys", &svc.admin_key).await;
    assert!(!keys.to_string().contains("a\\u0000b"), "{keys}");
    svc.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_query_and_json_values_are_quoted_by_a_short_prefix() {
    let svc = Service::start(0).await;
    let long = "9".repeat(50_000);
    for query in [
        format!("limit={long}"),
        format!("before={long}"),
        format!("status={long}"),
        format!("{long}=1"),
    ] {
        let answer = svc
            .http
            .get(svc.url(&format!("/v1/jobs?{query}")))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        assert!((400..500).contains(&status), "{status} {body}");
        assert!(body.len() < 1000, "{} bytes: {}", body.len(), &body[..200]);
    }
    // serde's messages quote a bad JSON value whole: cut as well.
    let (status, body) = svc
        .post_json(
            "/v1/keys",
            Some(&svc.admin_key),
            serde_json::json!({"name": "x", "role": "r".repeat(50_000)}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().len() < 1000, "{}", body.to_string().len());
    svc.finish().await;
}
