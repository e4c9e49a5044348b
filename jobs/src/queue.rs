//! The job queue: one Redis stream per model, read by the consumer group
//! `workers`. Entries carry only the job id; the job itself is in Postgres.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use uuid::Uuid;

use crate::error::Result;

const GROUP: &str = "workers";
const JOB_FIELD: &str = "job";

fn stream_key(prefix: &str, model: &str) -> String {
    format!("{prefix}:jobs:{model}")
}

/// Puts job ids on the queue (the API side).
#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    prefix: String,
}

impl Queue {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    pub async fn enqueue(&self, model: &str, job: Uuid) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("XADD")
            .arg(stream_key(&self.prefix, model))
            .arg("*")
            .arg(JOB_FIELD)
            .arg(job.to_string())
            .query_async::<String>(&mut conn)
            .await?;
        Ok(())
    }

    /// The job ids that have an entry in `model`'s stream (pending or not).
    pub async fn queued_ids(&self, model: &str) -> Result<std::collections::HashSet<Uuid>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream_key(&self.prefix, model))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|e| e.get::<String>(JOB_FIELD))
            .filter_map(|s| Uuid::parse_str(&s).ok())
            .collect())
    }
}

/// A job id handed to this worker; acknowledge it once the result is recorded.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub model: String,
    pub entry: String,
    /// `None` for an entry without a readable job id (acknowledge and skip).
    pub job: Option<Uuid>,
}

/// One worker's reading end of the queue.
pub struct QueueConsumer {
    /// Blocking reads get a connection of their own with no response
    /// timeout: redis' 500 ms default would cut a long `BLOCK` short.
    blocking: ConnectionManager,
    conn: ConnectionManager,
    prefix: String,
    consumer: String,
    models: Vec<String>,
    /// Where each stream's `XAUTOCLAIM` scan goes on from.
    cursors: std::collections::HashMap<String, String>,
    /// The stream `next` looks at first (the one after the last it served).
    turn: usize,
}

impl QueueConsumer {
    /// Joins the consumer group of each model's stream, creating them as
    /// needed (from the start, so jobs queued before any worker are kept).
    pub async fn new(
        client: &redis::Client,
        conn: ConnectionManager,
        prefix: &str,
        consumer: &str,
        models: &[String],
    ) -> Result<Self> {
        let blocking = crate::config::reconnecting(client, None).await?;
        let consumer = Self {
            blocking,
            conn,
            prefix: prefix.to_owned(),
            consumer: consumer.to_owned(),
            models: models.to_vec(),
            cursors: Default::default(),
            turn: 0,
        };
        consumer.create_groups().await?;
        Ok(consumer)
    }

    async fn create_groups(&self) -> Result<()> {
        let mut c = self.conn.clone();
        for model in &self.models {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream_key(&self.prefix, model))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A stream or group that vanished (Redis restarted without its data, or
    /// the key was deleted) is created again; the jobs it held are re-added
    /// by the workers' sweep from Postgres.
    async fn recover<T>(&self, result: redis::RedisResult<T>) -> Result<Option<T>> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!("job stream or consumer group missing; creating it again");
                self.create_groups().await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `block` for the next job of the served models, and returns
    /// every entry Redis delivered. Each is pending on this consumer from now
    /// on, so the caller must run or hand back all of them: one dropped here
    /// would wait for a reclaim, a whole lease later.
    ///
    /// The streams are first read one at a time without blocking, from the
    /// one after the stream served last (round robin: a busy model cannot
    /// starve the others), stopping at the first entry, so this worker takes
    /// only what it can start now and leaves the rest to other workers. Only
    /// when all are empty does it block on all of them; then COUNT applies
    /// per stream, and entries of several models may come at once.
    pub async fn next(&mut self, block: Duration) -> Result<Vec<Delivery>> {
        let streams = self.models.len();
        for i in 0..streams {
            let stream = (self.turn + i) % streams;
            let found = self.read(&[stream], 1, None).await?;
            if !found.is_empty() {
                self.turn = (stream + 1) % streams;
                return Ok(found);
            }
        }
        let all: Vec<usize> = (0..streams).collect();
        self.read(&all, 1, Some(block)).await
    }

    /// Up to `count` more new entries of `model`'s stream, without waiting:
    /// jobs to batch with one this worker is about to run. Like [`Self::next`]'s,
    /// each is pending on this consumer from now on.
    pub async fn more(&mut self, model: &str, count: usize) -> Result<Vec<Delivery>> {
        match self.models.iter().position(|m| m == model) {
            Some(stream) if count > 0 => self.read(&[stream], count, None).await,
            _ => Ok(Vec::new()),
        }
    }

    /// One `XREADGROUP ... COUNT count` of new entries on the streams of the
    /// models at `streams` (indices into `models`), blocking for `block`.
    async fn read(
        &mut self,
        streams: &[usize],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        let keys: Vec<String> = streams
            .iter()
            .map(|&i| stream_key(&self.prefix, &self.models[i]))
            .collect();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&keys);
        for _ in &keys {
            cmd.arg(">");
        }
        let reply = cmd
            .query_async::<Option<StreamReadReply>>(&mut self.blocking)
            .await;
        let Some(Some(reply)) = self.recover(reply).await? else {
            return Ok(Vec::new());
        };
        let mut deliveries = Vec::new();
        for stream in reply.keys {
            let model = stream
                .key
                .strip_prefix(&format!("{}:jobs:", self.prefix))
                .unwrap_or(&stream.key)
                .to_owned();
            for entry in stream.ids {
                let job = entry
                    .get::<String>(JOB_FIELD)
                    .and_then(|s| Uuid::parse_str(&s).ok());
                deliveries.push(Delivery {
                    model: model.clone(),
                    entry: entry.id,
                    job,
                });
            }
        }
        Ok(deliveries)
    }

    /// Takes over one entry that another consumer has held for at least
    /// `min_idle` without acknowledging it (its worker may be dead), from any
    /// served model's stream (`XAUTOCLAIM`).
    pub async fn reclaim(&mut self, min_idle: Duration) -> Result<Option<Delivery>> {
        for model in self.models.clone() {
            let key = stream_key(&self.prefix, &model);
            // Reply: [next cursor, [[id, [field, value, ...]], ...], [deleted ids]].
            let reply = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(min_idle.as_millis() as u64)
                .arg(
                    self.cursors
                        .get(&model)
                        .map(String::as_str)
                        .unwrap_or("0-0"),
                )
                .arg("COUNT")
                .arg(1)
                .query_async::<redis::Value>(&mut self.conn)
                .await;
            let Some(redis::Value::Array(parts)) = self.recover(reply).await? else {
                continue;
            };
            // The next scan starts where this one stopped ("0-0" after a full pass).
            if let Some(Ok(next)) = parts
                .first()
                .map(|c| redis::from_redis_value::<String>(c.clone()))
            {
                self.cursors.insert(model.clone(), next);
            }
            let Some(redis::Value::Array(entries)) = parts.get(1) else {
                continue;
            };
            for entry in entries {
                let redis::Value::Array(pair) = entry else {
                    continue;
                };
                let (Some(id), Some(fields)) = (pair.first(), pair.get(1)) else {
                    continue;
                };
                let Ok(id) = redis::from_redis_value::<String>(id.clone()) else {
                    continue;
                };
                let fields: Vec<String> =
                    redis::from_redis_value(fields.clone()).unwrap_or_default();
                let job = fields
                    .chunks(2)
                    .find(|kv| kv.first().map(String::as_str) == Some(JOB_FIELD))
                    .and_then(|kv| kv.get(1))
                    .and_then(|s| Uuid::parse_str(s).ok());
                return Ok(Some(Delivery {
                    model,
                    entry: id,
                    job,
                }));
            }
        }
        Ok(None)
    }

    /// What settles this consumer's entries, for tasks of their own.
    pub fn settler(&self) -> QueueSettler {
        QueueSettler {
            conn: self.conn.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// See [`QueueSettler::ack`].
    pub async fn ack(&self, delivery: &Delivery) -> Result<()> {
        self.settler().ack(delivery).await
    }

    /// See [`QueueSettler::requeue`].
    pub async fn requeue(&self, delivery: &Delivery) -> Result<()> {
        self.settler().requeue(delivery).await
    }
}

/// Acknowledges or requeues delivered entries: a cheap handle on a
/// consumer's connection, so a job's entry is settled by whichever task
/// recorded it, at once.
#[derive(Clone)]
pub struct QueueSettler {
    conn: ConnectionManager,
    prefix: String,
}

impl QueueSettler {
    /// Acknowledges and deletes the entry, so the stream length stays the
    /// number of jobs not yet finished.
    pub async fn ack(&self, delivery: &Delivery) -> Result<()> {
        let key = stream_key(&self.prefix, &delivery.model);
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(&delivery.entry)
            .ignore()
            .cmd("XDEL")
            .arg(&key)
            .arg(&delivery.entry)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Gives an entry this consumer will not run back to every consumer: a
    /// fresh entry for its job at the stream's end, then the old one
    /// acknowledged. In this order, a crash in between leaves a duplicate
    /// (harmless: the claim in Postgres runs a job once), never no entry.
    pub async fn requeue(&self, delivery: &Delivery) -> Result<()> {
        if let Some(job) = delivery.job {
            Queue::new(self.conn.clone(), &self.prefix)
                .enqueue(&delivery.model, job)
                .await?;
        }
        self.ack(delivery).await
    }
}
