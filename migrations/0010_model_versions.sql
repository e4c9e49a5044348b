-- Issue 15: editing models fine-tuned with feedback, as servable versions.
-- One row per registered export: its line (`name`) and version, what it was
-- fine-tuned from, the phase and steps, the data, config and rewards used,
-- the step count it is served with, and where its files are in the object
-- storage with their digest (workers download and check them).

CREATE TABLE model_versions (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    -- The registered version it was fine-tuned from (its folder was one
    -- that version's download), else the folder it started from.
    parent_id       uuid REFERENCES model_versions (id),
    parent_path     text NOT NULL,
    phase           smallint NOT NULL CHECK (phase > 0),
    steps           bigint NOT NULL,
    data            jsonb NOT NULL,
    config          jsonb NOT NULL,
    rewards         jsonb NOT NULL,
    -- Serving defaults: a phase-2 model runs with 8 steps when a job gives none.
    default_steps   integer NOT NULL CHECK (default_steps > 0),
    -- The folder's files under `storage_prefix/`, and the SHA-256 of its manifest.
    storage_prefix  text NOT NULL,
    files           jsonb NOT NULL,
    digest          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);
CREATE INDEX model_versions_digest ON model_versions (digest);
