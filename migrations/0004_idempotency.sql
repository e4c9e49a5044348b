-- Issue 6: `Idempotency-Key` on POST /v1/edits. A repeat with the same key
-- and the same request gets the first job; another request under the same
-- key is refused. (When API keys arrive, the key is scoped to its client.)

CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY,
    -- SHA-256 of the request's fields and files.
    fingerprint text NOT NULL,
    -- Null while the first request is still being handled.
    job_id      uuid REFERENCES jobs (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
