-- Jobs, their outputs, and the workers and models that serve them.
-- Postgres is the source of truth; Redis only carries job ids.

CREATE TABLE models (
    name                   text PRIMARY KEY,
    -- Image sides must be multiples of this (the VAE's downsampling factor).
    vae_scale_factor       integer NOT NULL,
    default_steps          integer NOT NULL,
    max_steps              integer NOT NULL,
    default_guidance_scale double precision NOT NULL,
    default_scheduler      text NOT NULL,
    schedulers             text[] NOT NULL,
    registered_at          timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workers (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    models       text[] NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,  -- UUIDv7: ordered by creation time
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    task             text NOT NULL CHECK (task IN ('inpaint', 'erase', 'outpaint')),
    model            text NOT NULL REFERENCES models (name),
    -- The effective parameters (defaults filled in, seed chosen), so any
    -- result can be reproduced.
    params           jsonb NOT NULL,
    image_key        text NOT NULL,
    mask_key         text,
    width            integer NOT NULL,
    height           integer NOT NULL,
    progress_step    integer NOT NULL DEFAULT 0,
    progress_total   integer NOT NULL,
    cancel_requested boolean NOT NULL DEFAULT false,
    worker_id        uuid REFERENCES workers (id),
    attempts         integer NOT NULL DEFAULT 0,
    error_code       text,
    error_message    text,
    timings          jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    heartbeat_at     timestamptz,
    finished_at      timestamptz
);

-- Queue position and queue depth look only at queued jobs.
CREATE INDEX jobs_queued_by_model ON jobs (model, id) WHERE status = 'queued';
CREATE INDEX jobs_running_by_model ON jobs (model) WHERE status = 'running';

CREATE TABLE job_outputs (
    id          uuid PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    index       integer NOT NULL,
    storage_key text NOT NULL,
    width       integer NOT NULL,
    height      integer NOT NULL,
    seed        bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, index)
);
