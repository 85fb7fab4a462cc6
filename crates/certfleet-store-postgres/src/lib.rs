//! The PostgreSQL [`StateStore`](certfleet_store::StateStore): several orchestrator nodes (processes, hosts) work on one
//! batch through one database.
//!
//! - **Claims** take due jobs with `SELECT … FOR UPDATE SKIP LOCKED` (oldest due first) in
//!   one statement that also sets the lease (node, expiry) and bumps the job's fencing
//!   token, so concurrent claimers never wait on each other and never get the same job.
//! - **Fencing**: every write (`update_job`, `renew_lease`, `release_job`) is one
//!   `UPDATE … WHERE fence = <token> AND lease_node = <node>`; a write that matches no row
//!   is refused with [`StoreError::Fenced`] (and recorded in `fenced_writes`), so a paused
//!   or partitioned node cannot overwrite the job's new owner.
//! - **Rate buckets** live in the `buckets` table and are debited in one transaction that
//!   locks every bucket row involved (`FOR UPDATE`, in key order so two debits never
//!   deadlock) and decides with [`certfleet_store::gcra::decide`]: all nodes together stay
//!   within one account's limits.
//! - **Runs**: [`StateStore::begin_run`](certfleet_store::StateStore::begin_run) registers the node in `nodes` (with a heartbeat,
//!   shown by `certfleet batch status`) and never ends other nodes' leases.
//! - **Schema**: numbered migrations embedded in the crate, applied under an advisory lock
//!   (several nodes may start at once); a newer schema is refused naming both versions.
//!
//! The [location](certfleet_store::StateStore::location) and every error show the URL with the password as
//! `***`. See `docs/scale-out.md` for the model and its limits.

mod buckets;
mod error;
mod fenced;
mod jobs;
mod nodes;
mod schema;
mod shared;
mod store;
mod tls;
mod url;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use certfleet_store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use time::OffsetDateTime;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

pub use error::PgError;
pub use nodes::NodeInfo;
pub use schema::SCHEMA_VERSION;
pub use url::{PgOptions, SessionTimeouts, is_postgres_url, redact_url};

/// Default connections per store.
const DEFAULT_POOL: usize = 8;
const DEFAULT_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Counters of what the store did (for benchmarks: round-trips per certificate).
#[derive(Debug, Default)]
pub struct PgStats {
    round_trips: AtomicU64,
    claim_calls: AtomicU64,
    claimed_jobs: AtomicU64,
    fenced: AtomicU64,
}

/// A copy of [`PgStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgStatsSnapshot {
    /// Statements, `BEGIN`s and `COMMIT`s sent (each one network round-trip; statement
    /// preparation, once per connection and statement, is not counted).
    pub round_trips: u64,
    pub claim_calls: u64,
    pub claimed_jobs: u64,
    /// Writes refused by the fencing check.
    pub fenced: u64,
}

impl PgStats {
    pub fn snapshot(&self) -> PgStatsSnapshot {
        PgStatsSnapshot {
            round_trips: self.round_trips.load(Ordering::Relaxed),
            claim_calls: self.claim_calls.load(Ordering::Relaxed),
            claimed_jobs: self.claimed_jobs.load(Ordering::Relaxed),
            fenced: self.fenced.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn trips(&self, n: u64) {
        self.round_trips.fetch_add(n, Ordering::Relaxed);
    }
}

/// The PostgreSQL [`StateStore`](certfleet_store::StateStore).
#[derive(Clone)]
pub struct PgStore {
    pub(crate) db: Arc<Db>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.db.location)
            .finish_non_exhaustive()
    }
}

/// The pool and what every query needs.
pub(crate) struct Db {
    pub pool: Pool,
    pub location: String,
    pub stats: PgStats,
}

pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

impl PgStore {
    /// Connects (bounded retries with backoff for an unreachable server; none for a refused
    /// password), migrates the schema and returns the store. Refuses a schema from a newer
    /// certfleet with [`StoreError::SchemaTooNew`].
    pub async fn open(url: &str, options: &PgOptions) -> Result<PgStore, StoreError> {
        let parsed = url::StoreUrl::parse(url, options).map_err(|e| db(&redact_url(url), e))?;
        let location = parsed.redacted();
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls::connector(&parsed.tls).map_err(|e| db(&location, e))? {
            Some(tls) => Manager::from_config(parsed.driver_config(), tls, manager_config),
            None => Manager::from_config(parsed.driver_config(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.unwrap_or(DEFAULT_POOL).max(1))
            .build()
            .map_err(|e| db(&location, PgError::Pool(e.to_string())))?;
        let attempts = options.connect_attempts.unwrap_or(DEFAULT_ATTEMPTS).max(1);
        let mut client = first_connection(&pool, &parsed, attempts)
            .await
            .map_err(|e| db(&location, e))?;
        schema::migrate(&mut client, &location).await?;
        drop(client);
        tracing::debug!(location, "PostgreSQL state store open");
        Ok(PgStore {
            db: Arc::new(Db {
                pool,
                location,
                stats: PgStats::default(),
            }),
        })
    }

    /// The store's counters.
    pub fn stats(&self) -> PgStatsSnapshot {
        self.db.stats.snapshot()
    }

    /// The nodes that have run against this database, newest heartbeat first.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        nodes::list(&self.db).await
    }

    /// A setting of the pool's sessions (`current_setting`), e.g. the session timeouts.
    pub async fn session_setting(&self, name: &str) -> Result<String, StoreError> {
        let rows = self.db.rows("SELECT current_setting($1)", &[&name]).await?;
        let row = rows.first().ok_or_else(|| StoreError::Corrupt {
            location: self.db.location.clone(),
            detail: format!("no value for setting {name}"),
        })?;
        row.try_get(0).map_err(|e| self.db.err(e))
    }

    /// Sets the stored schema version (tests of the "newer schema" refusal).
    #[doc(hidden)]
    pub async fn force_schema_version(&self, version: i64) -> Result<(), StoreError> {
        self.db
            .exec("UPDATE schema_version SET version = $1", &[&version])
            .await
            .map(drop)
    }
}

async fn first_connection(
    pool: &Pool,
    url: &url::StoreUrl,
    attempts: u32,
) -> Result<Object, PgError> {
    let started = Instant::now();
    let mut delay = FIRST_BACKOFF;
    let mut last = String::new();
    // Bounded: `attempts` tries, the waits doubling (0.2 s, 0.4 s, …).
    for attempt in 1..=attempts {
        match pool.get().await {
            Ok(client) => return Ok(client),
            Err(deadpool_postgres::PoolError::Backend(e)) => {
                if let Some(dbe) = e.as_db_error() {
                    let code = dbe.code();
                    if let Some(tls) = tls::diagnose(url, "", Some(dbe.message())) {
                        return Err(tls);
                    }
                    if *code == SqlState::INVALID_PASSWORD
                        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    {
                        return Err(PgError::Auth {
                            address: url.address(),
                            user: url.user.clone(),
                            detail: dbe.message().to_owned(),
                        });
                    }
                    // The server answered (no such database, too many connections …):
                    // retrying would not change its mind.
                    return Err(PgError::Server {
                        address: url.address(),
                        detail: dbe.message().to_owned(),
                    });
                }
                last = error_chain(&e);
                // Not trusted either way: retrying will not change a certificate.
                if let Some(tls) = tls::diagnose(url, &last, None) {
                    return Err(tls);
                }
            }
            Err(other) => last = other.to_string(),
        }
        if attempt < attempts {
            tracing::debug!(address = %url.address(), attempt, "PostgreSQL not reachable yet: {last}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
    Err(PgError::Unreachable {
        address: url.address(),
        attempts,
        waited_ms: started.elapsed().as_millis(),
        detail: last,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub(crate) fn db(location: &str, e: impl Into<PgError>) -> StoreError {
    error::db(location, e)
}

pub(crate) fn ts(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub(crate) fn from_ts(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Db {
    pub async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| db(&self.location, e))
    }

    pub fn err(&self, e: tokio_postgres::Error) -> StoreError {
        db(&self.location, e)
    }

    /// One statement on a pooled connection (prepared once per connection).
    pub async fn rows(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(|e| self.err(e))?;
        self.stats.trips(1);
        client.query(&stmt, params).await.map_err(|e| self.err(e))
    }

    pub async fn exec(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(|e| self.err(e))?;
        self.stats.trips(1);
        client.execute(&stmt, params).await.map_err(|e| self.err(e))
    }
}
