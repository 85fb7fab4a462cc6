//! The embedded state store: one SQLite database (`batch.db`, WAL) in the state directory,
//! driven by one dedicated thread that owns the connection (`group.rs`), so async callers
//! never block a runtime worker. One run at a time holds `batch.lock` (see [`StateStore::begin_run`]).

mod buckets;
mod group;
mod jobs;
mod lock;
mod schema;
mod tx;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use rusqlite::config::DbConfig;
use time::OffsetDateTime;

use certfleet_store::StoreError;
use certfleet_store::gcra::{BucketKey, BucketState, TokenRequest};
use certfleet_store::{
    BatchId, BatchRecord, ClaimRequest, ClaimedJob, IssuanceRecord, Job, JobId, JobUpdate, Lease,
    NewBatch, NewJob, RunGuard, RunHolder, StateStore, StatusCounts, TakeOutcome,
};

/// Database file name inside the state directory.
pub const DB_FILE: &str = "batch.db";
/// Run lock file name inside the state directory.
pub const LOCK_FILE: &str = "batch.lock";

/// The SQLite [`StateStore`].
#[derive(Debug)]
pub struct SqliteStore {
    location: String,
    lock_path: PathBuf,
    work: mpsc::Sender<group::Work>,
}

pub(crate) fn db_err(location: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Database {
        location: location.to_owned(),
        source: Box::new(e),
    }
}

pub(crate) fn ts(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub(crate) fn from_ts(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl SqliteStore {
    /// Opens (creating if needed) `batch.db` in `state_dir`, migrates the schema and starts
    /// the store's thread. Refuses a database from a newer certfleet with
    /// [`StoreError::SchemaTooNew`].
    pub async fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let dir = state_dir.to_path_buf();
        tokio::task::spawn_blocking(move || SqliteStore::open_blocking(&dir))
            .await
            .map_err(|_| StoreError::Closed {
                location: state_dir.join(DB_FILE).display().to_string(),
            })?
    }

    fn open_blocking(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        certfleet_fs::ensure_dir(state_dir, 0o700).map_err(|e| StoreError::Io {
            path: state_dir.to_path_buf(),
            source: e.into(),
        })?;
        let db_path = state_dir.join(DB_FILE);
        let location = db_path.display().to_string();
        certfleet_fs::prepare_database_file(&db_path).map_err(|e| StoreError::Io {
            path: db_path.clone(),
            source: e.into(),
        })?;
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(&db_path, flags).map_err(db_err(&location))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_err(&location))?;
        // WAL + NORMAL: a commit survives the process being killed at any point (what
        // resuming relies on); only an OS crash can lose the last transactions.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err(&location))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err(&location))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err(&location))?;
        // Every statement of the hot path stays prepared (parsing was a tenth of the CPU).
        conn.set_prepared_statement_cache_capacity(64);
        // Prepared means prepared: without the planner stability guarantee SQLite
        // re-prepares a statement whenever a bound value it planned with changes (the
        // claim's LIMIT, every claim), which was 4 % of a batch's client CPU.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(db_err(&location))?;
        schema::migrate(&mut conn, &location)?;

        let (tx, rx) = mpsc::channel::<group::Work>();
        std::thread::Builder::new()
            .name("certfleet-sqlite".to_owned())
            // Ends when every sender (the store) is dropped.
            .spawn(move || group::serve(conn, &rx))
            .map_err(|source| StoreError::Io {
                path: db_path.clone(),
                source,
            })?;
        Ok(SqliteStore {
            location,
            lock_path: state_dir.join(LOCK_FILE),
            work: tx,
        })
    }

    /// Runs `f` on the store's thread.
    async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<R, StoreError> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let location = self.location.clone();
        let work: group::Work = Box::new(move |conn| {
            let result = f(conn, &location);
            Box::new(move |group: Result<(), String>| {
                let result = group
                    .map_err(|why| StoreError::Database {
                        location,
                        source: Box::new(std::io::Error::other(why)),
                    })
                    .and(result);
                // The receiver is gone only if the caller stopped waiting; nothing to do then.
                let _ = done.send(result);
            })
        });
        let closed = || StoreError::Closed {
            location: self.location.clone(),
        };
        self.work.send(work).map_err(|_| closed())?;
        result.await.map_err(|_| closed())?
    }

    /// Sets the stored schema version (tests of the "newer schema" refusal).
    #[doc(hidden)]
    pub async fn force_schema_version(&self, version: i64) -> Result<(), StoreError> {
        self.call(move |conn, loc| {
            conn.execute("UPDATE schema_version SET version = ?1", [version])
                .map_err(db_err(loc))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn begin_run(&self, holder: &RunHolder) -> Result<RunGuard, StoreError> {
        let lock = lock::acquire(&self.lock_path, &self.location, holder)?;
        let node = holder.node.clone();
        self.call(move |conn, loc| jobs::end_foreign_leases(conn, loc, &node))
            .await?;
        Ok(RunGuard::new(holder.clone(), Box::new(lock)))
    }

    async fn open_batch(
        &self,
        batch: &NewBatch,
        now: OffsetDateTime,
    ) -> Result<(BatchRecord, bool), StoreError> {
        let batch = batch.clone();
        self.call(move |conn, loc| jobs::open_batch(conn, loc, &batch, now))
            .await
    }

    async fn batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        self.call(jobs::batches).await
    }

    async fn add_jobs(
        &self,
        batch: BatchId,
        new_jobs: &[NewJob],
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        let new_jobs = new_jobs.to_vec();
        self.call(move |conn, loc| jobs::add_jobs(conn, loc, batch, &new_jobs, now))
            .await
    }

    async fn claim_jobs(&self, req: &ClaimRequest) -> Result<Vec<ClaimedJob>, StoreError> {
        let req = req.clone();
        self.call(move |conn, loc| jobs::claim(conn, loc, &req))
            .await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: OffsetDateTime,
        lease_for: Duration,
    ) -> Result<Lease, StoreError> {
        let lease = lease.clone();
        self.call(move |conn, loc| jobs::renew_lease(conn, loc, &lease, now, lease_for))
            .await
    }

    async fn release_job(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.call(move |conn, loc| jobs::release(conn, loc, &lease))
            .await
    }

    async fn update_job(
        &self,
        lease: &Lease,
        update: &JobUpdate,
        now: OffsetDateTime,
    ) -> Result<Job, StoreError> {
        let (lease, update) = (lease.clone(), update.clone());
        self.call(move |conn, loc| jobs::update(conn, loc, &lease, &update, now))
            .await
    }

    async fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.call(move |conn, loc| jobs::job(conn, loc, id)).await
    }

    async fn list_jobs(
        &self,
        batch: BatchId,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.call(move |conn, loc| jobs::list(conn, loc, batch, after, limit))
            .await
    }

    async fn status_counts(&self, batch: BatchId) -> Result<StatusCounts, StoreError> {
        self.call(move |conn, loc| jobs::counts(conn, loc, batch))
            .await
    }

    async fn next_due(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        self.call(move |conn, loc| jobs::next_due(conn, loc, batch, now))
            .await
    }

    async fn requeue_failed(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        self.call(move |conn, loc| jobs::requeue_failed(conn, loc, batch, now))
            .await
    }

    async fn redue_governed(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        self.call(move |conn, loc| jobs::redue_governed(conn, loc, batch, now))
            .await
    }

    async fn requeue_issued(
        &self,
        batch: BatchId,
        ids: &[JobId],
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        let ids = ids.to_vec();
        self.call(move |conn, loc| jobs::requeue_issued(conn, loc, batch, &ids, now))
            .await
    }

    async fn take_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<TakeOutcome, StoreError> {
        let requests = requests.to_vec();
        self.call(move |conn, loc| buckets::take(conn, loc, &requests, now, true))
            .await
    }

    async fn take_tokens_writing(
        &self,
        requests: &[TokenRequest],
        lease: &Lease,
        update: &JobUpdate,
        now: OffsetDateTime,
    ) -> Result<(TakeOutcome, Option<Job>), StoreError> {
        let (requests, lease, update) = (requests.to_vec(), lease.clone(), update.clone());
        self.call(move |conn, loc| {
            // One transaction: the take and the job write nest in it, and a refused job
            // write rolls the take back with it.
            let mut tx = tx::begin(conn, tx::Begin::Immediate).map_err(db_err(loc))?;
            let outcome = buckets::take(tx.conn(), loc, &requests, now, true)?;
            if outcome != TakeOutcome::Granted {
                tx.commit().map_err(db_err(loc))?;
                return Ok((outcome, None));
            }
            let job = jobs::update(tx.conn(), loc, &lease, &update, now)?;
            tx.commit().map_err(db_err(loc))?;
            Ok((outcome, Some(job)))
        })
        .await
    }

    async fn peek_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<TakeOutcome, StoreError> {
        let requests = requests.to_vec();
        self.call(move |conn, loc| buckets::take(conn, loc, &requests, now, false))
            .await
    }

    async fn refund_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let requests = requests.to_vec();
        self.call(move |conn, loc| buckets::refund(conn, loc, &requests, now))
            .await
    }

    async fn pause(&self, key: &BucketKey, until: OffsetDateTime) -> Result<(), StoreError> {
        let key = key.clone();
        self.call(move |conn, loc| buckets::pause(conn, loc, &key, until))
            .await
    }

    async fn bucket(&self, key: &BucketKey) -> Result<BucketState, StoreError> {
        let key = key.clone();
        self.call(move |conn, loc| buckets::state(conn, loc, &key))
            .await
    }

    async fn record_issuance(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.call(move |conn, loc| buckets::record_issuance(conn, loc, &record))
            .await
    }

    async fn last_issuance(&self, name_set: &str) -> Result<Option<IssuanceRecord>, StoreError> {
        let name_set = name_set.to_owned();
        self.call(move |conn, loc| buckets::last_issuance(conn, loc, &name_set))
            .await
    }
}

#[cfg(test)]
mod tests;
