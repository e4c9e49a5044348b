//! The README's service walk-through, run for real: `byteedit serve` with the
//! tiny model, then the README's own curl commands, then SIGTERM.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The shell lines between the walk-through markers of README.md.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("walk-through start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("walk-through end marker");
    let mut script = String::from("set -euo pipefail\n");
    let mut in_block = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if in_block {
            script.push_str(line);
            script.push('\n');
        }
    }
    assert!(
        script.contains("curl"),
        "no commands found between the markers"
    );
    script
}

#[test]
fn readme_walkthrough_runs_against_byteedit_serve() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("byteedit_test_{tag}");
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_byteedit"))
        .args([
            "serve",
            "--model",
            &format!("tiny={REPO}/models/tests/fixtures/sd15-inpaint-tiny"),
        ])
        .env("BYTEEDIT_BIND", format!("127.0.0.1:{port}"))
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        )
        .env("BYTEEDIT_REDIS_PREFIX", format!("byteedit-test-{tag}"))
        .env("BYTEEDIT_STORAGE_URL", storage.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = Instant::now();
    while Command::new("curl")
        .args(["-sf", &format!("{api}/readyz")])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "byteedit serve did not become ready"
        );
        assert!(
            server.try_wait().unwrap().is_none(),
            "byteedit serve exited"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let script = walkthrough().replace(
        "models/tests/fixtures",
        &format!("{REPO}/models/tests/fixtures"),
    );
    // `byteedit` on the PATH, as the README asks, pointed at the test database.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_byteedit")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(out.path())
        .env("API", &api)
        .env("PATH", path)
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "walk-through failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("event: succeeded"), "{stdout}");
    let edited = image::open(out.path().join("edited.png")).unwrap();
    assert_eq!((edited.width(), edited.height()), (64, 64));
    let wide = image::open(out.path().join("wide.png")).unwrap();
    assert_eq!((wide.width(), wide.height()), (114, 64), "16:9 outpaint");

    // SIGTERM: a graceful stop with a success status.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "byteedit serve ended with {status}");
    let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
    Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qc", &drop])
        .status()
        .unwrap();
}
