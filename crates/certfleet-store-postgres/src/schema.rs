//! Numbered migrations embedded in the binary, applied in one transaction under an
//! advisory lock so several nodes starting at once migrate exactly once.

use certfleet_store::StoreError;
use deadpool_postgres::Object;

use crate::db;

/// The migrations, in order; version N is the first N applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_fleet.sql"),
];

/// The newest schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Arbitrary constant naming certfleet's migration lock among advisory locks.
const MIGRATION_LOCK: i64 = 0x6365_7274_666c_7431;

/// Brings the schema to [`SCHEMA_VERSION`]; refuses a newer one, naming both versions.
pub(crate) async fn migrate(client: &mut Object, location: &str) -> Result<(), StoreError> {
    let err = |e| db(location, e);
    let tx = client.transaction().await.map_err(err)?;
    // Held until commit/rollback: a second node waits here, then sees the new version.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(err)?
        .get(0);
    let found: i64 = if exists {
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await
            .map_err(err)?
            .get(0)
    } else {
        0
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            location: location.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(err)?;
        let version = i as i64 + 1;
        tx.execute("UPDATE schema_version SET version = $1", &[&version])
            .await
            .map_err(err)?;
        tracing::debug!(location, version, "migrated the state store schema");
    }
    tx.commit().await.map_err(err)
}
