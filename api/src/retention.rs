//! The retention sweep: finished jobs older than `--retention` lose their
//! stored images and answer 410 from then on.
//!
//! It runs in the API process (`byteedit api`, and so `serve`), not in the
//! workers: the API owns the uploads and the routes that answer 410, it runs
//! on cheap machines that are always up, while workers hold accelerators,
//! may be scaled to zero, and should spend their time on jobs. Several API
//! replicas may sweep at once: rows are claimed with `FOR UPDATE SKIP
//! LOCKED`, and purging files twice is harmless.

use std::time::Duration;

use byteedit_jobs::db::retention;
use byteedit_jobs::job::keys;
use byteedit_jobs::{Backends, JobsError};

use crate::state::AppState;

/// Jobs handled per statement.
const BATCH: i64 = 100;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub expired: usize,
    pub purged_jobs: usize,
    pub deleted_files: usize,
}

/// Sweeps every `--retention-sweep-secs` until stopped.
pub async fn run(state: AppState) {
    let settings = state.settings.retention;
    let mut ticks = tokio::time::interval(settings.sweep_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match sweep(&state.backends, settings.keep).await {
            Ok(s) if s != Swept::default() => tracing::info!(
                expired = s.expired,
                purged = s.purged_jobs,
                files = s.deleted_files,
                "retention sweep"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("retention sweep failed (retried next time): {e}"),
        }
    }
}

/// Marks the jobs due as expired (when a retention is set), then deletes the
/// files of every expired job not purged yet: also those a failed or
/// interrupted earlier sweep left.
pub async fn sweep(backends: &Backends, retention: Option<Duration>) -> Result<Swept, JobsError> {
    let db = &backends.db;
    let mut swept = Swept::default();
    if let Some(retention) = retention {
        loop {
            let ids = retention::expire_due(db, retention.as_secs_f64(), BATCH).await?;
            swept.expired += ids.len();
            if (ids.len() as i64) < BATCH {
                break;
            }
        }
    }
    loop {
        let ids = retention::purge_due(db, BATCH).await?;
        for id in &ids {
            swept.deleted_files += backends
                .storage
                .delete_prefix(&keys::job_prefix(*id))
                .await?;
            retention::mark_purged(db, *id).await?;
            swept.purged_jobs += 1;
        }
        if (ids.len() as i64) < BATCH {
            break;
        }
    }
    Ok(swept)
}
