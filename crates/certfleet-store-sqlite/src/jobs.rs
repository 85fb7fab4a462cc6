//! Batches and jobs in SQL: claims, fenced updates, listings.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use certfleet_store::StoreError;
use certfleet_store::gcra::to_time;
use certfleet_store::{
    BatchId, BatchRecord, ClaimRequest, ClaimedJob, FencingToken, Job, JobId, JobStatus, JobUpdate,
    Lease, LeaseInfo, NewBatch, NewJob, StatusCounts,
};

use super::{db_err, from_ts, ts};
use crate::tx::{Begin, begin};

const JOB_COLUMNS: &str = "id, batch_id, job_key, spec, status, order_url, authz_urls, cert_key, \
     attempts, last_error, deferred_until, resume_status, lease_node, lease_expires, fence, \
     issued, created_at, updated_at";

fn corrupt(location: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        location: location.to_owned(),
        detail: detail.into(),
    }
}

/// A row as read, decoded later (rusqlite's row closure cannot return our error type).
struct RawJob {
    id: i64,
    batch: i64,
    key: String,
    spec: String,
    status: String,
    order_url: Option<String>,
    authz: String,
    cert_key: Option<String>,
    attempts: i64,
    last_error: Option<String>,
    deferred_until: Option<i64>,
    resume_status: Option<String>,
    lease_node: Option<String>,
    lease_expires: Option<i64>,
    fence: i64,
    issued: Option<String>,
    created_at: i64,
    updated_at: i64,
}

fn raw(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: row.get(0)?,
        batch: row.get(1)?,
        key: row.get(2)?,
        spec: row.get(3)?,
        status: row.get(4)?,
        order_url: row.get(5)?,
        authz: row.get(6)?,
        cert_key: row.get(7)?,
        attempts: row.get(8)?,
        last_error: row.get(9)?,
        deferred_until: row.get(10)?,
        resume_status: row.get(11)?,
        lease_node: row.get(12)?,
        lease_expires: row.get(13)?,
        fence: row.get(14)?,
        issued: row.get(15)?,
        created_at: row.get(16)?,
        updated_at: row.get(17)?,
    })
}

fn decode(r: RawJob, loc: &str) -> Result<Job, StoreError> {
    let status = |s: &str| s.parse::<JobStatus>().map_err(|e| corrupt(loc, e));
    let json =
        |what: &str, e: serde_json::Error| corrupt(loc, format!("job #{} {what}: {e}", r.id));
    Ok(Job {
        id: JobId(r.id),
        batch: BatchId(r.batch),
        spec: serde_json::from_str(&r.spec).map_err(|e| json("spec", e))?,
        status: status(&r.status)?,
        order_url: r.order_url,
        authorization_urls: serde_json::from_str(&r.authz)
            .map_err(|e| json("authorizations", e))?,
        cert_key: r.cert_key,
        attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
        last_error: r.last_error,
        deferred_until: r.deferred_until.map(from_ts),
        resume_status: r.resume_status.as_deref().map(status).transpose()?,
        lease: match (r.lease_node, r.lease_expires) {
            (Some(node), Some(exp)) => Some(LeaseInfo {
                node,
                expires_at: from_ts(exp),
            }),
            _ => None,
        },
        fence: FencingToken(r.fence),
        issued: r
            .issued
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| json("certificate", e))?,
        created_at: from_ts(r.created_at),
        updated_at: from_ts(r.updated_at),
        key: r.key,
    })
}

pub(super) fn job(conn: &Connection, loc: &str, id: JobId) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    conn.prepare_cached(&sql)
        .map_err(db_err(loc))?
        .query_row([id.0], raw)
        .optional()
        .map_err(db_err(loc))?
        .map(|r| decode(r, loc))
        .transpose()
}

fn batch_row(row: &Row<'_>) -> rusqlite::Result<BatchRecord> {
    Ok(BatchRecord {
        id: BatchId(row.get(0)?),
        name: row.get(1)?,
        digest: row.get(2)?,
        created_at: from_ts(row.get(3)?),
    })
}

pub(super) fn open_batch(
    conn: &mut Connection,
    loc: &str,
    batch: &NewBatch,
    now: OffsetDateTime,
) -> Result<(BatchRecord, bool), StoreError> {
    let tx = begin(conn, Begin::Immediate).map_err(db_err(loc))?;
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO batches (name, digest, created_at) VALUES (?1, ?2, ?3)",
        )
        .map_err(db_err(loc))?
        .execute(params![batch.name, batch.digest, ts(now)])
        .map_err(db_err(loc))?;
    let record = tx
        .prepare_cached(
            "SELECT id, name, digest, created_at FROM batches WHERE name = ?1 AND digest = ?2",
        )
        .map_err(db_err(loc))?
        .query_row(params![batch.name, batch.digest], batch_row)
        .map_err(db_err(loc))?;
    tx.commit().map_err(db_err(loc))?;
    Ok((record, inserted == 1))
}

pub(super) fn batches(conn: &mut Connection, loc: &str) -> Result<Vec<BatchRecord>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT id, name, digest, created_at FROM batches ORDER BY id")
        .map_err(db_err(loc))?;
    let rows = stmt.query_map([], batch_row).map_err(db_err(loc))?;
    rows.collect::<Result<_, _>>().map_err(db_err(loc))
}

pub(super) fn add_jobs(
    conn: &mut Connection,
    loc: &str,
    batch: BatchId,
    new_jobs: &[NewJob],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let tx = begin(conn, Begin::Immediate).map_err(db_err(loc))?;
    let mut added = 0;
    {
        let mut stmt = tx
            .prepare(
                "INSERT OR IGNORE INTO jobs (batch_id, job_key, spec, status, created_at, \
                 updated_at) VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
            )
            .map_err(db_err(loc))?;
        for j in new_jobs {
            let spec = serde_json::to_string(&j.spec)
                .map_err(|e| corrupt(loc, format!("cannot encode a job spec: {e}")))?;
            added += stmt
                .execute(params![batch.0, j.key, spec, ts(now)])
                .map_err(db_err(loc))?;
        }
    }
    tx.commit().map_err(db_err(loc))?;
    Ok(added)
}

/// Claimable jobs (`(due time, id)`, oldest first, `LIMIT ?3` each): queued, deferred
/// and due, and active ones whose lease is gone. Each follows the `jobs_by_status` index
/// (`batch_id, status, deferred_until`, then rowid).
const CLAIM_CANDIDATES: [&str; 3] = [
    "SELECT COALESCE(deferred_until, created_at), id FROM jobs \
     WHERE batch_id = ?1 AND status = 'queued' \
     AND (lease_expires IS NULL OR lease_expires <= ?2) \
     ORDER BY deferred_until, id LIMIT ?3",
    "SELECT deferred_until, id FROM jobs \
     WHERE batch_id = ?1 AND status = 'deferred' AND deferred_until <= ?2 \
     AND (lease_expires IS NULL OR lease_expires <= ?2) \
     ORDER BY deferred_until, id LIMIT ?3",
    "SELECT COALESCE(deferred_until, created_at), id FROM jobs \
     WHERE batch_id = ?1 \
     AND status IN ('ordering', 'authorizing', 'validating', 'finalizing') \
     AND (lease_expires IS NULL OR lease_expires <= ?2) \
     ORDER BY id LIMIT ?3",
];

pub(super) fn claim(
    conn: &mut Connection,
    loc: &str,
    req: &ClaimRequest,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let now = ts(req.now);
    let expires_at = req.now + to_time(req.lease_for);
    let tx = begin(conn, Begin::Immediate).map_err(db_err(loc))?;
    // Three index-ordered queries with a LIMIT each, merged here, instead of one query
    // ordered by an expression: that one sorted every job of the batch on every claim,
    // which made a 10,000-certificate batch quadratic.
    let limit = i64::try_from(req.max_jobs).unwrap_or(i64::MAX);
    let mut candidates: Vec<(i64, i64)> = Vec::new();
    for sql in CLAIM_CANDIDATES {
        let mut stmt = tx.prepare_cached(sql).map_err(db_err(loc))?;
        let rows = stmt
            .query_map(params![req.batch.0, now, limit], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(db_err(loc))?;
        for row in rows {
            candidates.push(row.map_err(db_err(loc))?);
        }
    }
    // Oldest due first, as one ordered query would have it.
    candidates.sort_unstable();
    candidates.truncate(req.max_jobs);
    let ids: Vec<i64> = candidates.into_iter().map(|(_, id)| id).collect();
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        tx.prepare_cached(
            "UPDATE jobs SET lease_node = ?1, lease_expires = ?2, fence = fence + 1 WHERE id = ?3",
        )
        .map_err(db_err(loc))?
        .execute(params![req.node, ts(expires_at), id])
        .map_err(db_err(loc))?;
        let job = job(&tx, loc, JobId(id))?.ok_or(StoreError::NoSuchJob(JobId(id)))?;
        let lease = Lease {
            job: job.id,
            node: req.node.clone(),
            token: job.fence,
            expires_at,
        };
        claimed.push(ClaimedJob { job, lease });
    }
    tx.commit().map_err(db_err(loc))?;
    Ok(claimed)
}

/// Checks `lease` against the stored job; returns the job's current status.
fn check_fence(conn: &Connection, loc: &str, lease: &Lease) -> Result<JobStatus, StoreError> {
    let row: Option<(String, i64, Option<String>)> = conn
        .prepare_cached("SELECT status, fence, lease_node FROM jobs WHERE id = ?1")
        .map_err(db_err(loc))?
        .query_row([lease.job.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(db_err(loc))?;
    let (status, fence, node) = row.ok_or(StoreError::NoSuchJob(lease.job))?;
    certfleet_store::fence::check(lease, fence, node)?;
    status.parse().map_err(|e| corrupt(loc, e))
}

pub(super) fn renew_lease(
    conn: &mut Connection,
    loc: &str,
    lease: &Lease,
    now: OffsetDateTime,
    lease_for: Duration,
) -> Result<Lease, StoreError> {
    let tx = begin(conn, Begin::Immediate).map_err(db_err(loc))?;
    check_fence(&tx, loc, lease)?;
    let expires_at = now + to_time(lease_for);
    tx.prepare_cached("UPDATE jobs SET lease_expires = ?1 WHERE id = ?2")
        .map_err(db_err(loc))?
        .execute(params![ts(expires_at), lease.job.0])
        .map_err(db_err(loc))?;
    tx.commit().map_err(db_err(loc))?;
    Ok(Lease {
        expires_at,
        ..lease.clone()
    })
}

pub(super) fn release(conn: &mut Connection, loc: &str, lease: &Lease) -> Result<(), StoreError> {
    let tx = begin(conn, Begin::Immediate).map_err(db_err(loc))?;
    check_fence(&tx, loc, lease)?;
    tx.prepare_cached("UPDATE jobs SET lease_node = NULL, lease_expires = NULL WHERE id = ?1")
        .map_err(db_err(loc))?
        .execute([lease.job.0])
        .map_err(db_err(loc))?;
    tx.commit().map_err(db_err(loc))
}

/// The fenced write to `to`: the fence and the transition are checked in the WHERE clause
/// and the new row comes back with RETURNING, so a valid write is one statement and only a
/// refused one is diagnosed. Built once per status (every write runs one).
fn update_sql(to: JobStatus) -> &'static str {
    static SQL: OnceLock<HashMap<JobStatus, String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        JobStatus::ALL
            .into_iter()
            .map(|to| {
                let from: Vec<String> = to
                    .reachable_from()
                    .map(|s| format!("'{}'", s.as_str()))
                    .collect();
                let sql = format!(
                    "UPDATE jobs SET status = ?1, \
                     order_url = COALESCE(?2, CASE WHEN ?13 THEN NULL ELSE order_url END), \
                     authz_urls = COALESCE(?3, CASE WHEN ?13 THEN '[]' ELSE authz_urls END), \
                     cert_key = COALESCE(?4, cert_key), \
                     deferred_until = ?5, resume_status = ?6, \
                     last_error = CASE WHEN ?1 = 'issued' THEN NULL \
                                  ELSE COALESCE(?7, last_error) END, \
                     attempts = attempts + ?8, issued = COALESCE(?9, issued), \
                     lease_node = CASE WHEN ?10 THEN lease_node ELSE NULL END, \
                     lease_expires = CASE WHEN ?10 THEN lease_expires ELSE NULL END, \
                     updated_at = ?11 \
                     WHERE id = ?12 AND fence = ?14 AND lease_node = ?15 \
                     AND status IN ({}) RETURNING {JOB_COLUMNS}",
                    from.join(", ")
                );
                (to, sql)
            })
            .collect()
    });
    // Built from `JobStatus::ALL`: every status has its statement.
    &all[&to]
}

pub(super) fn update(
    conn: &mut Connection,
    loc: &str,
    lease: &Lease,
    u: &JobUpdate,
    now: OffsetDateTime,
) -> Result<Job, StoreError> {
    u.check_write(lease.job, None)?;
    let (authz, issued) = u.json_columns(loc)?;
    let keeps_lease = u.keeps_lease();
    let tx = begin(conn, Begin::Immediate).map_err(db_err(loc))?;
    let row = tx
        .prepare_cached(update_sql(u.status))
        .map_err(db_err(loc))?
        .query_row(
            params![
                u.status.as_str(),
                u.order_url,
                authz,
                u.cert_key,
                u.deferred_until.map(ts),
                u.resume_status.map(JobStatus::as_str),
                u.last_error,
                i64::from(u.count_attempt),
                issued,
                keeps_lease,
                ts(now),
                lease.job.0,
                u.clear_order,
                lease.token.0,
                lease.node,
            ],
            raw,
        )
        .optional()
        .map_err(db_err(loc))?;
    let Some(row) = row else {
        let current = check_fence(&tx, loc, lease)?;
        u.check_write(lease.job, Some(current))?;
        // Unreachable within one transaction (nothing can change the row between the two
        // statements); still a refusal, never a write.
        return Err(certfleet_store::fence::changed_concurrently(lease));
    };
    let job = decode(row, loc)?;
    if let Some(issuance) = &u.issuance {
        crate::buckets::record_issuance(&tx, loc, issuance)?;
    }
    tx.commit().map_err(db_err(loc))?;
    Ok(job)
}

pub(super) fn list(
    conn: &mut Connection,
    loc: &str,
    batch: BatchId,
    after: Option<JobId>,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE batch_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    );
    let mut stmt = conn.prepare(&sql).map_err(db_err(loc))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![batch.0, after.map_or(0, |a| a.0), limit], raw)
        .map_err(db_err(loc))?;
    let raws: Vec<RawJob> = rows.collect::<Result<_, _>>().map_err(db_err(loc))?;
    raws.into_iter().map(|r| decode(r, loc)).collect()
}

pub(super) fn counts(
    conn: &mut Connection,
    loc: &str,
    batch: BatchId,
) -> Result<StatusCounts, StoreError> {
    let mut stmt = conn
        .prepare("SELECT status, COUNT(*) FROM jobs WHERE batch_id = ?1 GROUP BY status")
        .map_err(db_err(loc))?;
    let rows = stmt
        .query_map([batch.0], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(db_err(loc))?;
    let mut out = StatusCounts::default();
    for row in rows {
        let (status, n) = row.map_err(db_err(loc))?;
        let status: JobStatus = status.parse().map_err(|e| corrupt(loc, e))?;
        out.0.insert(status, u64::try_from(n).unwrap_or(0));
    }
    Ok(out)
}

pub(super) fn next_due(
    conn: &mut Connection,
    loc: &str,
    batch: BatchId,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, StoreError> {
    conn.prepare_cached(
        "SELECT MIN(t) FROM ( \
           SELECT deferred_until AS t FROM jobs WHERE batch_id = ?1 AND status = 'deferred' \
             AND deferred_until > ?2 \
           UNION ALL \
           SELECT lease_expires FROM jobs WHERE batch_id = ?1 AND lease_expires > ?2 \
             AND status NOT IN ('issued', 'failed'))",
    )
    .map_err(db_err(loc))?
    .query_row(params![batch.0, ts(now)], |r| r.get::<_, Option<i64>>(0))
    .map(|t| t.map(from_ts))
    .map_err(db_err(loc))
}

pub(super) fn requeue_failed(
    conn: &mut Connection,
    loc: &str,
    batch: BatchId,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET status = 'queued', order_url = NULL, authz_urls = '[]', \
         deferred_until = NULL, resume_status = NULL, updated_at = ?2 \
         WHERE batch_id = ?1 AND status = 'failed'",
    )
    .map_err(db_err(loc))?
    .execute(params![batch.0, ts(now)])
    .map_err(db_err(loc))
}

/// Governor deferrals due at `now` (see `StateStore::redue_governed`).
pub(super) fn redue_governed(
    conn: &mut Connection,
    loc: &str,
    batch: BatchId,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET deferred_until = ?2, updated_at = ?2 \
         WHERE batch_id = ?1 AND status = 'deferred' AND deferred_until > ?2 \
         AND substr(last_error, 1, length(?3)) = ?3",
    )
    .map_err(db_err(loc))?
    .execute(params![
        batch.0,
        ts(now),
        certfleet_store::GOVERNOR_DEFERRAL
    ])
    .map_err(db_err(loc))
}

/// Moves the listed `issued` jobs back to `queued`, keeping their issued certificate.
pub(super) fn requeue_issued(
    conn: &mut Connection,
    loc: &str,
    batch: BatchId,
    ids: &[JobId],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let tx = begin(conn, Begin::Deferred).map_err(db_err(loc))?;
    let mut moved = 0;
    {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE jobs SET status = 'queued', order_url = NULL, authz_urls = '[]', \
                 deferred_until = NULL, resume_status = NULL, last_error = NULL, \
                 attempts = 0, updated_at = ?3 \
                 WHERE batch_id = ?1 AND id = ?2 AND status = 'issued'",
            )
            .map_err(db_err(loc))?;
        for id in ids {
            moved += stmt
                .execute(params![batch.0, id.0, ts(now)])
                .map_err(db_err(loc))?;
        }
    }
    tx.commit().map_err(db_err(loc))?;
    Ok(moved)
}

/// Ends every lease not held by `node` (only a single-writer store may do this).
pub(super) fn end_foreign_leases(
    conn: &mut Connection,
    loc: &str,
    node: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET lease_node = NULL, lease_expires = NULL \
         WHERE lease_node IS NOT NULL AND lease_node <> ?1",
    )
    .map_err(db_err(loc))?
    .execute([node])
    .map_err(db_err(loc))?;
    Ok(())
}
