-- Issue 6: API keys with roles. A key is shown once; only the SHA-256 of its
-- secret part is stored. Volunteers vote with a `volunteer` key (their old
-- `vol_` tokens stop working: an admin issues keys instead).

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('client', 'volunteer', 'admin')),
    secret_hash  bytea NOT NULL,
    -- The volunteer a `volunteer` key votes as (one may hold several keys,
    -- e.g. a new one after a leak, and stays one voter).
    volunteer_id uuid REFERENCES volunteers (id),
    -- Requests per minute; null: the API's `--rate-limit` default.
    rate_limit   integer CHECK (rate_limit > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CHECK ((role = 'volunteer') = (volunteer_id IS NOT NULL))
);

ALTER TABLE volunteers ALTER COLUMN token_hash DROP NOT NULL;

-- Who submitted a job: clients see only their own. Null for jobs from
-- before keys (visible to admins only).
ALTER TABLE jobs ADD COLUMN owner_key uuid REFERENCES api_keys (id);
CREATE INDEX jobs_owner_key_id ON jobs (owner_key, id DESC);
-- Admission control counts a model's recently finished jobs (its pace).
CREATE INDEX jobs_model_finished ON jobs (model, finished_at);

-- Idempotency keys become per client (two clients may both send `retry-1`).
-- The old global keys only guarded retries of requests already answered.
DELETE FROM idempotency_keys;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD COLUMN owner_key uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (owner_key, key);
