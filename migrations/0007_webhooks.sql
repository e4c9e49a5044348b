-- Issue 6: webhooks. A job submitted with a `webhook_url` is announced there
-- when it ends. The delivery row is written by a trigger in the same
-- transaction as the job's final state (an outbox), whichever process and
-- statement ends the job, so a crash between "job done" and "webhook sent"
-- loses nothing; the API's dispatcher delivers due rows and retries them
-- with exponential backoff.

ALTER TABLE jobs ADD COLUMN webhook_url text;

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    url             text NOT NULL,
    -- The final status being announced.
    status          text NOT NULL,
    -- Delivery attempts started so far.
    attempts        integer NOT NULL DEFAULT 0,
    -- When the next attempt is due; a dispatcher that claims the row pushes
    -- it forward first (a lease), so a dispatcher lost mid-delivery only
    -- delays the row.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    -- Set when the attempts ran out.
    gave_up_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE FUNCTION jobs_webhook_outbox() RETURNS trigger AS $$
BEGIN
    INSERT INTO webhook_deliveries (job_id, url, status)
    VALUES (NEW.id, NEW.webhook_url, NEW.status);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

-- Fires once per job: on the update that makes its status final.
CREATE TRIGGER jobs_webhook_outbox
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.webhook_url IS NOT NULL
          AND NEW.status IN ('succeeded', 'failed', 'canceled')
          AND OLD.status NOT IN ('succeeded', 'failed', 'canceled'))
    EXECUTE FUNCTION jobs_webhook_outbox();
