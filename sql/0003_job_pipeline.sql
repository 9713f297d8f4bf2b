-- Async job pipeline: idempotency fingerprints, enqueue bookkeeping for the sweeper, the lease
-- owner, one-shot redeliveries, and the indexes of the list, retention and recovery queries.

ALTER TABLE jobs
    ADD COLUMN idempotency_fingerprint  text,
    ADD COLUMN idempotency_expires_at   timestamptz,
    ADD COLUMN enqueued_at              timestamptz,
    ADD COLUMN enqueues                 integer NOT NULL DEFAULT 0,
    ADD COLUMN worker                   text;

-- /v1/jobs lists transcriptions and diarizations together, newest first: order by the ULID part.
CREATE INDEX jobs_tenant_ulid_idx ON jobs (tenant_id, right(id, 26) DESC);
CREATE INDEX jobs_result_expiry_idx ON jobs (expires_at)
    WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX jobs_audio_expiry_idx ON jobs (audio_expires_at) WHERE audio_path IS NOT NULL;
CREATE INDEX jobs_idempotency_expiry_idx ON jobs (idempotency_expires_at)
    WHERE idempotency_key IS NOT NULL;

ALTER TABLE webhook_deliveries
    ADD COLUMN manual boolean NOT NULL DEFAULT false;

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_resource_idx ON webhook_deliveries (tenant_id, resource_id);
