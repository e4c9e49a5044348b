//! Image storage against a real S3-compatible server: moto's, started here.
//! moto comes from PyPI; the first run installs it into `target/moto`
//! (about a minute), or set `BYTEEDIT_TEST_MOTO_SERVER` to a `moto_server`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use byteedit_jobs::Storage;
use bytes::Bytes;

fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("BYTEEDIT_TEST_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/moto"));
    let server = venv.join("bin/moto_server");
    if !server.exists() {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "moto[server]"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot install moto[server] from PyPI into {}",
            venv.display()
        );
    }
    server
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn s3_compatible_store_round_trips_images() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts"),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    // Buckets are made by the operator, not by ByteEdit: make one with a raw S3 call.
    let made = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/images")])
        .status()
        .unwrap();
    assert!(made.success());

    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let storage = Storage::from_url_with_options("s3://images/byteedit", options).unwrap();
    let png = Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/tests/fixtures/sd15-inpaint-tiny/expected_image.png"
        ))
        .unwrap(),
    );
    storage.put("jobs/1/input", png.clone()).await.unwrap();
    assert_eq!(storage.get("jobs/1/input").await.unwrap(), png);
    // The key lands under the URL's prefix in the bucket.
    let listing = Command::new("curl")
        .args(["-sf", &format!("{endpoint}/images?list-type=2")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("<Key>byteedit/jobs/1/input</Key>"));
    storage.delete("jobs/1/input").await.unwrap();
    assert!(storage.get("jobs/1/input").await.is_err());
}
