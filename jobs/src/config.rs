//! Where the backing services are, and connecting to them.

use std::time::Duration;

use clap::Args;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::error::Result;
use crate::storage::Storage;

/// A duration flag in seconds: finite, 0 to a year. (Durations built from a
/// NaN or an infinity panic, so such values are refused while parsing.)
pub fn parse_seconds(raw: &str) -> std::result::Result<f64, String> {
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("`{raw}` is not a number of seconds"))?;
    if !(0.0..=31_536_000.0).contains(&secs) {
        return Err(format!("`{raw}` must be 0 to 31536000 seconds (a year)"));
    }
    Ok(secs)
}

/// A URL with its password and query removed, for logs and errors.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/byteedit";

/// Connection settings shared by `byteedit api`, `worker` and `serve`.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Postgres URL; the database is created if missing and migrated at start.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Redis URL (job queue and progress events).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Where images go: a folder path (or file:///path), memory://, or an
    /// S3-compatible store such as s3://bucket/prefix (credentials and
    /// endpoint from the usual AWS_* variables).
    #[arg(long, env = "BYTEEDIT_STORAGE_URL", default_value = "./data/storage")]
    pub storage_url: String,
    /// Prefix of every Redis key and channel, so several deployments (or
    /// test runs) can share one Redis.
    #[arg(long, env = "BYTEEDIT_REDIS_PREFIX", default_value = "byteedit")]
    pub redis_prefix: String,
    /// Most Postgres connections this process opens.
    #[arg(long, env = "BYTEEDIT_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Longest wait for a Postgres connection, in seconds. Short, so that
    /// while Postgres is down requests get a 503 quickly instead of hanging.
    #[arg(long, env = "BYTEEDIT_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 3.0, value_parser = parse_seconds)]
    pub db_acquire_timeout_secs: f64,
}

/// Live handles to Postgres, Redis and storage.
#[derive(Clone)]
pub struct Backends {
    pub db: PgPool,
    pub redis: redis::Client,
    /// Shared multiplexed connection for short commands; it reconnects by
    /// itself after Redis restarts.
    pub conn: ConnectionManager,
    pub storage: Storage,
    pub prefix: String,
}

/// Connects to Postgres alone (as `byteedit keys` does), creating and
/// migrating the database as needed. A request waits at most
/// `acquire_timeout_secs` for a connection, so an outage answers quickly.
pub async fn connect_database(
    url: &str,
    max_connections: u32,
    acquire_timeout_secs: f64,
) -> Result<PgPool> {
    if !sqlx::Postgres::database_exists(url).await? {
        tracing::info!("creating database {}", redacted(url));
        // Two processes starting together may race to create it.
        if let Err(e) = sqlx::Postgres::create_database(url).await
            && !sqlx::Postgres::database_exists(url).await?
        {
            return Err(e.into());
        }
    }
    let db = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs_f64(
            acquire_timeout_secs.clamp(0.1, 300.0),
        ))
        .connect(url)
        .await?;
    sqlx::migrate!("../migrations").run(&db).await?;
    Ok(db)
}

impl Backends {
    /// Connects to everything, creating and migrating the database as needed.
    pub async fn connect(args: &ConnectArgs) -> Result<Self> {
        let db = connect_database(
            &args.database_url,
            args.db_connections,
            args.db_acquire_timeout_secs,
        )
        .await?;
        let redis = redis::Client::open(args.redis_url.as_str())?;
        let conn = reconnecting(&redis, Some(Duration::from_secs(5))).await?;
        let storage = Storage::from_url(&args.storage_url)?;
        Ok(Self {
            db,
            redis,
            conn,
            storage,
            prefix: args.redis_prefix.clone(),
        })
    }

    pub fn queue(&self) -> crate::queue::Queue {
        crate::queue::Queue::new(self.conn.clone(), &self.prefix)
    }

    /// Checks that Postgres and Redis answer (for readiness probes).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.db).await?;
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}

/// A Redis connection that reconnects in the background after the server
/// restarts or the link drops (a command meanwhile fails fast, and is retried
/// by its caller). `response_timeout: None` for blocking reads.
pub async fn reconnecting(
    client: &redis::Client,
    response_timeout: Option<Duration>,
) -> Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    Ok(ConnectionManager::new_with_config(client.clone(), config).await?)
}
