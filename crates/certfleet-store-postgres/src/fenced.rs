//! Fenced writes: every write about a job is one `UPDATE … WHERE fence = <token> AND
//! lease_node = <node>` (the transition check of `update_job` too), so an accepted write is
//! one round-trip; a write that matches nothing is diagnosed (no such job, a stale lease —
//! refused and recorded in `fenced_writes` — or an invalid transition).

use std::sync::LazyLock;
use std::time::Duration;

use certfleet_store::{Job, JobStatus, JobUpdate, Lease, StoreError};
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use crate::buckets::{INSERT_ISSUANCE, IssuanceColumns};
use crate::error::corrupt;
use crate::jobs::{COLS, decode, to_time};
use crate::{Db, ts};

/// Why a fenced write matched no row: no such job, a stale lease (recorded), or (`Ok`)
/// the job's current status for the transition check.
async fn diagnose(db: &Db, lease: &Lease, operation: &str) -> Result<JobStatus, StoreError> {
    let rows = db
        .rows(
            "SELECT status, fence, lease_node FROM jobs WHERE id = $1",
            &[&lease.job.0],
        )
        .await?;
    let row = rows.first().ok_or(StoreError::NoSuchJob(lease.job))?;
    let e = |e| db.err(e);
    let status: String = row.try_get(0).map_err(e)?;
    let fence: i64 = row.try_get(1).map_err(e)?;
    let node: Option<String> = row.try_get(2).map_err(e)?;
    if let Err(refused) = certfleet_store::fence::check(lease, fence, node.clone()) {
        db.stats
            .fenced
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Evidence for operators and tests; the refusal stands even if this fails.
        let _ = db
            .exec(
                "INSERT INTO fenced_writes (job_id, node, presented, current_fence, holder, \
                 operation, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &lease.job.0,
                    &lease.node,
                    &lease.token.0,
                    &fence,
                    &node,
                    &operation,
                    &ts(OffsetDateTime::now_utc()),
                ],
            )
            .await;
        tracing::warn!(job = %lease.job, node = %lease.node, operation, "fenced: write refused, the lease is stale");
        return Err(refused);
    }
    status.parse().map_err(|e| corrupt(&db.location, e))
}

/// For a fenced insert that matched no job: [`StoreError::Fenced`] (recorded) or no such
/// job; `Ok` if the lease is current after all (the caller's write then raced a claim and
/// is treated as refused).
pub(crate) async fn check_lease(db: &Db, lease: &Lease, operation: &str) -> Result<(), StoreError> {
    diagnose(db, lease, operation).await?;
    Err(certfleet_store::fence::changed_concurrently(lease))
}

pub(crate) async fn renew_lease(
    db: &Db,
    lease: &Lease,
    now: OffsetDateTime,
    lease_for: Duration,
) -> Result<Lease, StoreError> {
    let expires_at = now + to_time(lease_for);
    let n = db
        .exec(
            "UPDATE jobs SET lease_expires = $1 WHERE id = $2 AND fence = $3 AND lease_node = $4",
            &[&ts(expires_at), &lease.job.0, &lease.token.0, &lease.node],
        )
        .await?;
    if n == 0 {
        diagnose(db, lease, "renew_lease").await?;
    }
    Ok(Lease {
        expires_at,
        ..lease.clone()
    })
}

pub(crate) async fn release(db: &Db, lease: &Lease) -> Result<(), StoreError> {
    let n = db
        .exec(
            "UPDATE jobs SET lease_node = NULL, lease_expires = NULL \
             WHERE id = $1 AND fence = $2 AND lease_node = $3",
            &[&lease.job.0, &lease.token.0, &lease.node],
        )
        .await?;
    if n == 0 {
        diagnose(db, lease, "release_job").await?;
    }
    Ok(())
}

pub(crate) async fn update(
    db: &Db,
    lease: &Lease,
    u: &JobUpdate,
    now: OffsetDateTime,
) -> Result<Job, StoreError> {
    u.check_write(lease.job, None)?;
    // The connection goes back to the pool before a refusal is diagnosed on another.
    let written = update_on(db, &db.client().await?, lease, u, now).await?;
    match written {
        Some(job) => Ok(job),
        None => Err(refusal(db, lease, u).await),
    }
}

/// The fenced job update: the transition is checked in the WHERE clause (`$16`, the
/// statuses the new one may be reached from), so a valid write is one round trip. Built once:
/// it is the text every job write prepares (cached by it) and sends.
static FENCED_UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET status = $1::text, \
         order_url = COALESCE($2::text, CASE WHEN $13::bool THEN NULL ELSE order_url END), \
         authz_urls = COALESCE($3::text, CASE WHEN $13::bool THEN '[]' ELSE authz_urls END), \
         cert_key = COALESCE($4::text, cert_key), \
         deferred_until = $5::bigint, resume_status = $6::text, \
         last_error = CASE WHEN $1::text = 'issued' THEN NULL \
                      ELSE COALESCE($7::text, last_error) END, \
         attempts = attempts + $8::bigint, issued = COALESCE($9::text, issued), \
         lease_node = CASE WHEN $10::bool THEN lease_node ELSE NULL END, \
         lease_expires = CASE WHEN $10::bool THEN lease_expires ELSE NULL END, \
         last_node = $14::text, updated_at = $11::bigint \
         WHERE id = $12 AND fence = $15 AND lease_node = $14::text AND status = ANY($16::text[]) \
         RETURNING {COLS}"
    )
});

/// [`FENCED_UPDATE`] with the issuance row in the same statement (a data-modifying CTE):
/// written only when the fenced update matched, atomically with it, in the same round trip.
static FENCED_UPDATE_RECORDING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH upd AS ({}), rec AS ({INSERT_ISSUANCE} \
         SELECT $17::text, $18::text, $19::text, $20::text, $21::bigint, $22::bigint, \
         $23::text WHERE EXISTS (SELECT 1 FROM upd) ON CONFLICT (serial) DO NOTHING) \
         SELECT * FROM upd",
        *FENCED_UPDATE
    )
});

/// The fenced update (its transition checked in the WHERE clause) on `client`, a pooled
/// connection or a transaction: the job as written, `None` when nothing matched (see
/// [`refusal`]). The caller has run `check_write(…, None)`.
pub(crate) async fn update_on<C: GenericClient>(
    db: &Db,
    client: &C,
    lease: &Lease,
    u: &JobUpdate,
    now: OffsetDateTime,
) -> Result<Option<Job>, StoreError> {
    let (authz, issued) = u.json_columns(&db.location)?;
    let keeps_lease = u.keeps_lease();
    // The statuses this one may be reached from ($16).
    let from: Vec<&str> = u.status.reachable_from().map(JobStatus::as_str).collect();
    let status = u.status.as_str();
    let resume_status = u.resume_status.map(JobStatus::as_str);
    let deferred_until = u.deferred_until.map(ts);
    let attempts = i64::from(u.count_attempt);
    let now = ts(now);
    let mut params: Vec<crate::Param<'_>> = vec![
        &status,
        &u.order_url,
        &authz,
        &u.cert_key,
        &deferred_until,
        &resume_status,
        &u.last_error,
        &attempts,
        &issued,
        &keeps_lease,
        &now,
        &lease.job.0,
        &u.clear_order,
        &lease.node,
        &lease.token.0,
        &from,
    ];
    let issuance = u
        .issuance
        .as_ref()
        .map(|r| IssuanceColumns::new(r, db))
        .transpose()?;
    let sql: &str = match &issuance {
        None => &FENCED_UPDATE,
        Some(i) => {
            params.extend(i.params());
            &FENCED_UPDATE_RECORDING
        }
    };
    let stmt = client.prepare_cached(sql).await.map_err(|e| db.err(e))?;
    db.stats.trips(1);
    let rows = client.query(&stmt, &params).await.map_err(|e| db.err(e))?;
    rows.first().map(|row| decode(row, db)).transpose()
}

/// Why a fenced update of `u` matched nothing, as the error to return: no such job, a
/// stale lease (recorded), an invalid transition, or a row that changed between the two
/// statements (a racing claim: it is no longer ours).
pub(crate) async fn refusal(db: &Db, lease: &Lease, u: &JobUpdate) -> StoreError {
    let current = match diagnose(db, lease, "update_job").await {
        Ok(current) => current,
        Err(e) => return e,
    };
    match u.check_write(lease.job, Some(current)) {
        Err(e) => e,
        Ok(()) => certfleet_store::fence::changed_concurrently(lease),
    }
}
