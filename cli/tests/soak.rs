//! Soak: concurrent clients submit, cancel and read over loopback for a
//! bounded time while the only `byteedit worker` process is SIGKILLed and
//! restarted again and again. At the end every accepted job has ended
//! (succeeded with its outputs recorded once, failed, or canceled): none
//! lost. Prints a report; the numbers measured are in docs/RELIABILITY.md.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::Service;
use uuid::Uuid;

/// How long clients keep submitting, and how many of them there are.
const RUN: Duration = Duration::from_secs(30);
const CLIENTS: u64 = 6;
/// Most unfinished jobs per client, so the backlog stays drainable.
const IN_FLIGHT: usize = 2;
/// Time between two SIGKILLs of the worker.
const KILL_EVERY: Duration = Duration::from_secs(7);

/// A small deterministic generator (no `rand` in tests' dependencies).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default)]
struct Ledger {
    /// Accepted job id → outputs asked.
    accepted: HashMap<String, u64>,
    cancels_asked: u64,
    refused: u64,
    reads: u64,
}

fn terminal(status: &serde_json::Value) -> bool {
    matches!(status.as_str(), Some("succeeded" | "failed" | "canceled"))
}

async fn client(service: Arc<Service>, ledger: Arc<Mutex<Ledger>>, seed: u64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0x2545_F491));
    let mut mine: Vec<String> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < RUN {
        // Reads: our jobs one by one (dropping finished ones), and a listing.
        let mut open = Vec::new();
        for id in mine.drain(..) {
            let (status, job) = service.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if !terminal(&job["status"]) {
                open.push(id);
            }
        }
        mine = open;
        if rng.below(4) == 0 {
            let (status, body) = service.get("/v1/jobs?limit=20").await;
            assert_eq!(status, 200, "{body}");
        }
        if mine.len() < IN_FLIGHT {
            let outputs = 1 + rng.below(2);
            let steps = (2 + rng.below(5)).to_string();
            let seed = rng.below(1000).to_string();
            let fields = [
                ("task", "inpaint"),
                ("prompt", "soak"),
                ("steps", steps.as_str()),
                ("seed", seed.as_str()),
                ("num_outputs", if outputs == 1 { "1" } else { "2" }),
            ];
            let (status, job) = service.submit(&fields, true).await;
            let mut ledger = ledger.lock().unwrap();
            if status == 202 {
                let id = job["id"].as_str().unwrap().to_owned();
                ledger.accepted.insert(id.clone(), outputs);
                mine.push(id);
            } else {
                assert_eq!(status, 503, "{job}");
                ledger.refused += 1;
            }
        }
        // Now and then a client gives up on one of its jobs.
        if !mine.is_empty() && rng.below(25) == 0 {
            let id = mine.swap_remove(rng.below(mine.len() as u64) as usize);
            let (status, body) = service.delete(&format!("/v1/jobs/{id}")).await;
            assert!(matches!(status, 200 | 202 | 409), "{status} {body}");
            ledger.lock().unwrap().cancels_asked += 1;
        }
        ledger.lock().unwrap().reads += 1;
        tokio::time::sleep(Duration::from_millis(50 + rng.below(200))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_a_worker_killed_again_and_again_loses_nothing() {
    let service = Arc::new(Service::start(0).await);
    let worker_args = ["--max-attempts", "6"];
    let mut worker = service.worker_process(&worker_args);
    service.wait_for_workers(1).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(service.clone(), ledger.clone(), i)))
        .collect();
    let mut kills = 0;
    while started.elapsed() < RUN {
        tokio::time::sleep(KILL_EVERY).await;
        worker.kill().unwrap(); // SIGKILL
        worker.wait().unwrap();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        worker = service.worker_process(&worker_args);
    }
    for client in clients {
        client.await.unwrap();
    }
    // Drain: the last worker finishes whatever is left (bounded).
    let accepted: Vec<(String, u64)> = ledger
        .lock()
        .unwrap()
        .accepted
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finals = HashMap::new();
    for (id, _) in &accepted {
        loop {
            let (_, job) = service.get(&format!("/v1/jobs/{id}")).await;
            if terminal(&job["status"]) {
                finals.insert(id.clone(), job);
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    worker.kill().unwrap();
    worker.wait().unwrap();

    let db = &service.backends.db;
    let (mut succeeded, mut failed, mut canceled, mut lost) = (0, 0, 0, Vec::new());
    for (id, outputs) in &accepted {
        let (count, distinct): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT index) FROM job_outputs WHERE job_id = $1",
        )
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_one(db)
        .await
        .unwrap();
        match finals.get(id).and_then(|j| j["status"].as_str()) {
            Some("succeeded") if count == *outputs as i64 && distinct == count => succeeded += 1,
            Some("failed") if count == 0 => failed += 1,
            Some("canceled") if count == 0 => canceled += 1,
            _ => lost.push((id.clone(), finals.get(id).cloned(), count)),
        }
    }
    let (failure_codes,): (serde_json::Value,) = sqlx::query_as(
        "SELECT coalesce(json_object_agg(code, n), '{}') FROM \
         (SELECT error_code AS code, count(*) AS n FROM jobs WHERE status = 'failed' \
          GROUP BY error_code) c",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let (refused, cancels_asked, reads) = {
        let ledger = ledger.lock().unwrap();
        (ledger.refused, ledger.cancels_asked, ledger.reads)
    };
    println!(
        "soak report: {:.0} s, {CLIENTS} clients, worker SIGKILLed {kills} times; \
         jobs accepted {}, succeeded {succeeded}, failed {failed} {failure_codes}, \
         canceled {canceled}, lost {}; submissions refused {}, cancels asked {}, \
         client rounds {}",
        started.elapsed().as_secs_f64(),
        accepted.len(),
        lost.len(),
        refused,
        cancels_asked,
        reads,
    );
    assert!(kills >= 3, "the worker was killed {kills} times");
    assert!(accepted.len() >= 20, "too few jobs to mean anything");
    assert!(lost.is_empty(), "lost jobs: {lost:?}");
    assert_eq!(succeeded + failed + canceled, accepted.len());
    match Arc::try_unwrap(service) {
        Ok(service) => service.finish().await,
        Err(_) => panic!("a client still holds the service"),
    }
}
