//! Schema creation, version check and migrations.

use rusqlite::{Connection, OptionalExtension};

use certfleet_store::SCHEMA_VERSION;
use certfleet_store::StoreError;

use super::db_err;

const V1: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (name, digest)
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    job_key TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    order_url TEXT,
    authz_urls TEXT NOT NULL DEFAULT '[]',
    cert_key TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    deferred_until INTEGER,
    resume_status TEXT,
    lease_node TEXT,
    lease_expires INTEGER,
    fence INTEGER NOT NULL DEFAULT 0,
    issued TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (batch_id, job_key)
);
CREATE INDEX jobs_by_status ON jobs (batch_id, status, deferred_until);
CREATE TABLE buckets (
    key TEXT PRIMARY KEY,
    tat INTEGER,
    paused_until INTEGER
);
CREATE TABLE issuances (
    id INTEGER PRIMARY KEY,
    name_set TEXT NOT NULL,
    names TEXT NOT NULL,
    account TEXT NOT NULL,
    serial TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    replaces TEXT
);
CREATE INDEX issuances_by_set ON issuances (name_set, issued_at);
INSERT INTO schema_version (version) VALUES (1);
";

/// The stored schema version; 0 for an empty database.
pub(crate) fn version(conn: &Connection, location: &str) -> Result<i64, StoreError> {
    let has_table: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err(location))?;
    if has_table.is_none() {
        return Ok(0);
    }
    conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map(|v| v.unwrap_or(0))
    .map_err(db_err(location))
}

/// Brings the schema to [`SCHEMA_VERSION`]; refuses a newer one, naming both versions.
pub(crate) fn migrate(conn: &mut Connection, location: &str) -> Result<(), StoreError> {
    let found = version(conn, location)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            location: location.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        let tx = conn.transaction().map_err(db_err(location))?;
        tx.execute_batch(V1).map_err(db_err(location))?;
        tx.commit().map_err(db_err(location))?;
        tracing::debug!(
            location,
            version = SCHEMA_VERSION,
            "created the state store schema"
        );
    }
    Ok(())
}
