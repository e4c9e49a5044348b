-- Issue 14: trained reward checkpoints. One row per registered reward
-- folder: its kind (R_α aesthetic, R_β alignment, R_γ coherence), version
-- within its name, parent, the data it learned from, its held-out score and
-- the normalisation stored with it.

CREATE TABLE reward_models (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('aesthetic', 'alignment', 'coherence')),
    version         integer NOT NULL CHECK (version > 0),
    -- The registered checkpoint it was fine-tuned from, if any; `parent_path`
    -- keeps the folder when that one was never registered (the release).
    parent_id       uuid REFERENCES reward_models (id),
    parent_path     text,
    -- The reward folder (what `score --reward` and `--init` read).
    location        text NOT NULL,
    -- The data file, its counts and the config: what it was trained on.
    data            jsonb NOT NULL,
    -- Held-out pairwise accuracy (aesthetic, alignment) or per-pixel AUC (coherence).
    metric          text NOT NULL CHECK (metric IN ('accuracy', 'auc')),
    held_out_score  double precision NOT NULL,
    score_mean      double precision NOT NULL,
    score_std       double precision NOT NULL,
    steps           bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);
CREATE INDEX reward_models_kind ON reward_models (kind, created_at DESC);
