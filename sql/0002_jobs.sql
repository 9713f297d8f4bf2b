-- Jobs (transcriptions and diarizations share one id with their job) and webhook deliveries.

CREATE TABLE jobs (
    id                          text PRIMARY KEY,
    tenant_id                   text NOT NULL REFERENCES tenants (id),
    key_id                      text NOT NULL REFERENCES api_keys (id),
    kind                        text NOT NULL CHECK (kind IN ('transcription', 'diarization')),
    mode                        text NOT NULL CHECK (mode IN ('async', 'sync')),
    status                      text NOT NULL DEFAULT 'queued'
                                CHECK (status IN ('queued', 'processing', 'completed', 'error', 'cancelled')),
    stage                       text,
    progress                    real NOT NULL DEFAULT 0,
    attempts                    integer NOT NULL DEFAULT 0,
    options                     jsonb NOT NULL DEFAULT '{}',
    result                      jsonb,
    error_code                  text,
    error_message               text,
    warnings                    jsonb NOT NULL DEFAULT '[]',
    audio_path                  text,
    audio_url                   text,
    audio_filename              text,
    audio_duration              double precision,
    webhook_url                 text,
    webhook_auth_header_name    text,
    webhook_auth_header_value   text,
    webhook_status_code         integer,
    metadata                    jsonb,
    audio_retention_hours       integer NOT NULL DEFAULT 0,
    result_retention_days       integer NOT NULL DEFAULT 30,
    idempotency_key             text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    started_at                  timestamptz,
    finished_at                 timestamptz,
    lease_expires_at            timestamptz,
    expires_at                  timestamptz,
    audio_expires_at            timestamptz,
    deleted_at                  timestamptz
);
CREATE INDEX jobs_tenant_kind_idx ON jobs (tenant_id, kind, id DESC);
CREATE INDEX jobs_queued_idx ON jobs (created_at) WHERE status = 'queued';
CREATE INDEX jobs_active_lease_idx ON jobs (lease_expires_at) WHERE status = 'processing';
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants (id),
    resource_id         text NOT NULL REFERENCES jobs (id),
    event               text NOT NULL,
    url                 text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'succeeded', 'failed')),
    payload             jsonb NOT NULL,
    attempts            jsonb NOT NULL DEFAULT '[]',
    next_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_tenant_idx ON webhook_deliveries (tenant_id, id DESC);
CREATE UNIQUE INDEX webhook_deliveries_event_idx ON webhook_deliveries (resource_id, event);

CREATE TABLE webhook_secrets (
    tenant_id           text PRIMARY KEY REFERENCES tenants (id),
    secret              text NOT NULL,
    previous_secret     text,
    previous_expires_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);
