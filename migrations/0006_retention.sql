-- Issue 6: retention. Finished jobs older than the API's `--retention` lose
-- their stored images: the sweep first marks them expired (the API answers
-- 410 from then on), then deletes their files and marks them purged. Jobs
-- that feedback references (comparisons, ratings) are never expired: their
-- images are training data for the reward models.

ALTER TABLE jobs ADD COLUMN expired_at timestamptz;
-- Set once every stored file of the job is deleted; an expired job without
-- it is purged again by the next sweep (a crash or storage error between the
-- two steps leaves nothing behind).
ALTER TABLE jobs ADD COLUMN purged_at timestamptz;

-- What the sweep looks for.
CREATE INDEX jobs_expiry_due ON jobs (finished_at) WHERE expired_at IS NULL AND finished_at IS NOT NULL;
CREATE INDEX jobs_purge_due ON jobs (id) WHERE expired_at IS NOT NULL AND purged_at IS NULL;
-- The exemption check (ratings' primary key already starts with job_id).
CREATE INDEX comparisons_candidate_job ON comparisons (candidate_job);
CREATE INDEX comparisons_baseline_job ON comparisons (baseline_job);
