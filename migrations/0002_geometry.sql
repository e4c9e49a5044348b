-- Issue 4: models report their working size and erase default; jobs report
-- the geometry they were edited with (canvas, crop, working size).

ALTER TABLE models
    ADD COLUMN native_size integer NOT NULL DEFAULT 512,
    ADD COLUMN erase_negative_prompt text NOT NULL DEFAULT '';

ALTER TABLE jobs ADD COLUMN geometry jsonb;
