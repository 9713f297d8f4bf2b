-- Tenants, API keys and the usage ledger.

CREATE TABLE tenants (
    id                      text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    audio_retention_hours   integer CHECK (audio_retention_hours BETWEEN 0 AND 8760),
    result_retention_days   integer CHECK (result_retention_days BETWEEN 0 AND 3650),
    created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id                      text PRIMARY KEY,
    tenant_id               text NOT NULL REFERENCES tenants (id),
    name                    text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    prefix                  text NOT NULL,
    key_hash                bytea NOT NULL UNIQUE,
    scopes                  text[] NOT NULL,
    requests_per_minute     integer CHECK (requests_per_minute >= 0),
    tokens_per_minute       integer CHECK (tokens_per_minute >= 0),
    audio_seconds_per_hour  integer CHECK (audio_seconds_per_hour >= 0),
    max_concurrent_jobs     integer CHECK (max_concurrent_jobs >= 0),
    expires_at              timestamptz,
    revoked_at              timestamptz,
    last_used_at            timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    created_by              text
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, id DESC);

-- Append-only, summed by queries, never updated. One row per metered request (kind set);
-- requests without a kind (model lists, polling, admin) are rolled up per second, key, route
-- and status into one row whose `requests` counts them and `latency_ms` is their mean.
CREATE TABLE usage_events (
    id                      bigserial PRIMARY KEY,
    created_at              timestamptz NOT NULL,
    tenant_id               text NOT NULL,
    key_id                  text NOT NULL,
    request_id              text NOT NULL,
    route                   text NOT NULL,
    method                  text NOT NULL,
    status                  smallint NOT NULL,
    requests                integer NOT NULL DEFAULT 1 CHECK (requests >= 1),
    latency_ms              real NOT NULL,
    kind                    text CHECK (kind IN ('llm', 'stt', 'diarization')),
    input_tokens            integer NOT NULL DEFAULT 0,
    output_tokens           integer NOT NULL DEFAULT 0,
    audio_seconds           double precision NOT NULL DEFAULT 0,
    diarization_seconds     double precision NOT NULL DEFAULT 0
);
CREATE INDEX usage_events_tenant_time_idx ON usage_events (tenant_id, created_at);
