-- certfleet PostgreSQL state store, schema version 1. Times are Unix nanoseconds (BIGINT),
-- as in the SQLite store, so both share the same arithmetic.
CREATE TABLE schema_version (version BIGINT NOT NULL);
INSERT INTO schema_version (version) VALUES (0);

CREATE TABLE batches (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (name, digest)
);

CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    batch_id BIGINT NOT NULL REFERENCES batches (id),
    job_key TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    order_url TEXT,
    authz_urls TEXT NOT NULL DEFAULT '[]',
    cert_key TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    deferred_until BIGINT,
    resume_status TEXT,
    lease_node TEXT,
    lease_expires BIGINT,
    fence BIGINT NOT NULL DEFAULT 0,
    issued TEXT,
    -- The node that made the last accepted write (who issued it, once issued).
    last_node TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (batch_id, job_key)
);
-- Claims: due jobs of a batch, oldest due first.
CREATE INDEX jobs_claimable ON jobs (batch_id, (COALESCE(deferred_until, created_at)), id)
    WHERE status IN ('queued', 'ordering', 'authorizing', 'validating', 'finalizing', 'deferred');
CREATE INDEX jobs_by_status ON jobs (batch_id, status);

CREATE TABLE buckets (
    key TEXT PRIMARY KEY,
    tat BIGINT,
    paused_until BIGINT
);

CREATE TABLE issuances (
    id BIGSERIAL PRIMARY KEY,
    name_set TEXT NOT NULL,
    names TEXT NOT NULL,
    account TEXT NOT NULL,
    serial TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    replaces TEXT
);
CREATE INDEX issuances_by_set ON issuances (name_set, issued_at);

-- Orchestrator nodes that ran against this database (for `certfleet batch status`).
CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    pid BIGINT NOT NULL,
    host TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    ended_at BIGINT
);

-- Writes refused by the fencing check: evidence that a stale node was stopped.
CREATE TABLE fenced_writes (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL,
    node TEXT NOT NULL,
    presented BIGINT NOT NULL,
    current_fence BIGINT NOT NULL,
    holder TEXT,
    operation TEXT NOT NULL,
    at BIGINT NOT NULL
);
