//! The queue against the real Redis (BYTEEDIT_TEST_REDIS, or the local
//! one), each test under its own key prefix: every entry Redis delivers to a
//! consumer reaches its caller, the models' streams take turns, and an entry
//! given back is another consumer's to take at once.

use std::collections::HashSet;
use std::time::Duration;

use byteedit_jobs::{Delivery, Queue, QueueConsumer};
use redis::aio::ConnectionManager;
use redis::streams::StreamPendingCountReply;
use uuid::Uuid;

const GROUP: &str = "workers";

struct Setup {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    queue: Queue,
}

async fn setup() -> Setup {
    let url =
        std::env::var("BYTEEDIT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url).unwrap();
    let conn = ConnectionManager::new(client.clone())
        .await
        .expect("Redis must be running");
    let prefix = format!("byteedit-test-{}", Uuid::new_v4().simple());
    let queue = Queue::new(conn.clone(), &prefix);
    Setup {
        client,
        conn,
        prefix,
        queue,
    }
}

impl Setup {
    async fn consumer(&self, name: &str, models: &[&str]) -> QueueConsumer {
        let models: Vec<String> = models.iter().map(|m| m.to_string()).collect();
        QueueConsumer::new(&self.client, self.conn.clone(), &self.prefix, name, &models)
            .await
            .unwrap()
    }

    /// The entries of `model`'s stream pending on any consumer.
    async fn pending(&self, model: &str) -> HashSet<String> {
        let mut conn = self.conn.clone();
        let reply: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(format!("{}:jobs:{model}", self.prefix))
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(100)
            .query_async(&mut conn)
            .await
            .unwrap();
        reply.ids.into_iter().map(|p| p.id).collect()
    }

    async fn cleanup(&self, models: &[&str]) {
        let mut conn = self.conn.clone();
        for model in models {
            let _: () = redis::cmd("DEL")
                .arg(format!("{}:jobs:{model}", self.prefix))
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

fn entries(deliveries: &[Delivery]) -> HashSet<String> {
    deliveries.iter().map(|d| d.entry.clone()).collect()
}

#[tokio::test]
async fn streams_take_turns_and_each_entry_is_delivered_once() {
    let s = setup().await;
    let mut consumer = s.consumer("c1", &["a", "b"]).await;
    let a: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let b: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
    for id in &a {
        s.queue.enqueue("a", *id).await.unwrap();
    }
    for id in &b {
        s.queue.enqueue("b", *id).await.unwrap();
    }
    let mut order = Vec::new();
    loop {
        let delivered = consumer.next(Duration::from_millis(50)).await.unwrap();
        if delivered.is_empty() {
            break;
        }
        // With entries waiting, one read takes one entry: the rest stay
        // for other workers.
        assert_eq!(delivered.len(), 1, "{delivered:?}");
        for d in delivered {
            order.push((d.model.clone(), d.job.unwrap()));
            consumer.ack(&d).await.unwrap();
        }
    }
    let models: Vec<&str> = order.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(models, ["a", "b", "a", "b", "a"], "round robin");
    let jobs: Vec<Uuid> = order.iter().map(|(_, j)| *j).collect();
    assert_eq!(
        jobs,
        [a[0], b[0], a[1], b[1], a[2]],
        "oldest first per model"
    );
    s.cleanup(&["a", "b"]).await;
}

/// A blocking read over several streams may get an entry of each at once
/// (COUNT applies per stream): all of them are returned, none is left
/// pending unseen.
#[tokio::test]
async fn a_blocking_read_returns_every_entry_it_was_given() {
    let s = setup().await;
    let mut consumer = s.consumer("c1", &["a", "b"]).await;
    let waiting = tokio::spawn(async move {
        let delivered = consumer.next(Duration::from_secs(10)).await.unwrap();
        (consumer, delivered)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both entries in one transaction: the blocked read wakes up with both
    // streams ready.
    let (ja, jb) = (Uuid::now_v7(), Uuid::now_v7());
    let mut conn = s.conn.clone();
    let mut both = redis::pipe();
    both.atomic();
    for (model, job) in [("a", ja), ("b", jb)] {
        both.cmd("XADD")
            .arg(format!("{}:jobs:{model}", s.prefix))
            .arg("*")
            .arg("job")
            .arg(job.to_string())
            .ignore();
    }
    let _: () = both.query_async(&mut conn).await.unwrap();
    let (mut consumer, mut delivered) = waiting.await.unwrap();
    assert!(!delivered.is_empty());
    let mut pending = s.pending("a").await;
    pending.extend(s.pending("b").await);
    assert_eq!(
        pending,
        entries(&delivered),
        "pending only what was returned"
    );
    // What this read did not get, the next one does.
    delivered.extend(consumer.next(Duration::from_millis(50)).await.unwrap());
    let jobs: HashSet<Uuid> = delivered.iter().filter_map(|d| d.job).collect();
    assert_eq!(jobs, HashSet::from([ja, jb]));
    s.cleanup(&["a", "b"]).await;
}

#[tokio::test]
async fn a_requeued_entry_is_anyones_at_once() {
    let s = setup().await;
    let mut first = s.consumer("c1", &["a"]).await;
    let mut second = s.consumer("c2", &["a"]).await;
    let job = Uuid::now_v7();
    s.queue.enqueue("a", job).await.unwrap();
    let delivered = first.next(Duration::from_millis(50)).await.unwrap();
    assert_eq!(delivered.len(), 1);
    assert!(
        second
            .next(Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    first.requeue(&delivered[0]).await.unwrap();
    assert!(
        s.pending("a").await.is_empty(),
        "the old entry is acknowledged"
    );
    let again = second.next(Duration::from_millis(50)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job, Some(job));
    assert_ne!(again[0].entry, delivered[0].entry);
    s.cleanup(&["a"]).await;
}
