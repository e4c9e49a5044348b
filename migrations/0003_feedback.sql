-- Issue 5: human feedback. Volunteers compare two outputs of the same input
-- (Good / Same / Bad for the candidate against the baseline); experts rate
-- single outputs 1-5. Every vote is kept for reward-model training.

CREATE TABLE volunteers (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    -- Experts may also rate single outputs.
    expert     boolean NOT NULL DEFAULT false,
    -- SHA-256 of the bearer token; the token itself is shown once.
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE comparisons (
    id               uuid PRIMARY KEY,  -- UUIDv7
    task             text NOT NULL,
    prompt           text NOT NULL,
    candidate_job    uuid NOT NULL REFERENCES jobs (id),
    candidate_output integer NOT NULL,
    candidate_model  text NOT NULL,
    baseline_job     uuid NOT NULL REFERENCES jobs (id),
    baseline_output  integer NOT NULL,
    baseline_model   text NOT NULL,
    -- Served to volunteers until it has this many overall votes.
    votes_wanted     integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Each time a pair is shown: which side the candidate was on, so position
-- bias can be measured.
CREATE TABLE presentations (
    id             uuid PRIMARY KEY,
    comparison_id  uuid NOT NULL REFERENCES comparisons (id) ON DELETE CASCADE,
    volunteer_id   uuid NOT NULL REFERENCES volunteers (id),
    candidate_left boolean NOT NULL,
    shown_at       timestamptz NOT NULL DEFAULT now()
);

-- One vote per volunteer, comparison and aspect; voting again replaces it.
CREATE TABLE votes (
    comparison_id   uuid NOT NULL REFERENCES comparisons (id) ON DELETE CASCADE,
    volunteer_id    uuid NOT NULL REFERENCES volunteers (id),
    aspect          text NOT NULL CHECK (aspect IN ('overall', 'coherence', 'structure', 'aesthetics')),
    verdict         text NOT NULL CHECK (verdict IN ('good', 'same', 'bad')),
    presentation_id uuid REFERENCES presentations (id),
    -- As shown when voting through a presentation; null otherwise.
    candidate_left  boolean,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (comparison_id, volunteer_id, aspect)
);

-- Expert scores of one output; rating again replaces the earlier scores.
CREATE TABLE ratings (
    job_id       uuid NOT NULL REFERENCES jobs (id),
    output_index integer NOT NULL,
    volunteer_id uuid NOT NULL REFERENCES volunteers (id),
    coherence    smallint NOT NULL CHECK (coherence BETWEEN 1 AND 5),
    structure    smallint NOT NULL CHECK (structure BETWEEN 1 AND 5),
    aesthetics   smallint CHECK (aesthetics BETWEEN 1 AND 5),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, output_index, volunteer_id)
);
