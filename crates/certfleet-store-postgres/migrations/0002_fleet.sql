-- Schema version 2 (issue 14): the store is a fleet's source of truth.
-- One issuance row per serial: a stale node's late record is a no-op.
DELETE FROM issuances a USING issuances b WHERE a.serial = b.serial AND a.id > b.id;
CREATE UNIQUE INDEX issuances_by_serial ON issuances (serial);

-- The bundle of each issued job: chain, meta.json, key reference, the generated key sealed
-- with the fleet's key-encryption key (AES-256-GCM), and who issued it.
CREATE TABLE bundles (
    job_id BIGINT PRIMARY KEY REFERENCES jobs (id),
    serial TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    cert_pem TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    meta_json TEXT NOT NULL,
    key_ref TEXT NOT NULL,
    sealed_key BYTEA,
    node TEXT NOT NULL,
    stored_at BIGINT NOT NULL
);

-- The sealed key a job finalizes with, stored before `finalizing` so any node can finish it.
CREATE TABLE job_keys (
    job_id BIGINT PRIMARY KEY REFERENCES jobs (id),
    sealed_key BYTEA NOT NULL
);

-- Where hosts materialised bundles (`certfleet batch deploy`).
CREATE TABLE deployments (
    job_id BIGINT NOT NULL REFERENCES jobs (id),
    host TEXT NOT NULL,
    dir TEXT NOT NULL,
    serial TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (job_id, host)
);
