-- Issue 6: retries with backoff. A job whose attempt failed for a transient
-- reason (storage, queue or database trouble) goes back to `queued` with the
-- earliest time it may run again; workers do not claim it before then.

ALTER TABLE jobs ADD COLUMN run_after timestamptz;
