//! Batches and jobs: claims with `FOR UPDATE SKIP LOCKED`, listings, counts, re-queues.
//! The fenced writes are in `fenced.rs`. Semantics mirror the SQLite store exactly.

use std::time::Duration;

use certfleet_store::{
    BatchId, BatchRecord, ClaimRequest, ClaimedJob, FencingToken, Job, JobId, JobStatus, Lease,
    LeaseInfo, NewBatch, NewJob, StatusCounts, StoreError,
};
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::error::corrupt;
use crate::{Db, from_ts, ts};

pub(crate) const COLS: &str = "jobs.id, jobs.batch_id, jobs.job_key, jobs.spec, jobs.status, \
     jobs.order_url, jobs.authz_urls, jobs.cert_key, jobs.attempts, jobs.last_error, \
     jobs.deferred_until, jobs.resume_status, jobs.lease_node, jobs.lease_expires, jobs.fence, \
     jobs.issued, jobs.created_at, jobs.updated_at";

pub(crate) fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

pub(crate) fn decode(row: &Row, db: &Db) -> Result<Job, StoreError> {
    let loc = db.location.as_str();
    let e = |e| db.err(e);
    let id: i64 = row.try_get(0).map_err(e)?;
    let status = |s: &str| s.parse::<JobStatus>().map_err(|e| corrupt(loc, e));
    let json = |what: &str, e: serde_json::Error| corrupt(loc, format!("job #{id} {what}: {e}"));
    let spec: String = row.try_get(3).map_err(e)?;
    let authz: String = row.try_get(6).map_err(e)?;
    let issued: Option<String> = row.try_get(15).map_err(e)?;
    let resume: Option<String> = row.try_get(11).map_err(e)?;
    let lease_node: Option<String> = row.try_get(12).map_err(e)?;
    let lease_expires: Option<i64> = row.try_get(13).map_err(e)?;
    let attempts: i64 = row.try_get(8).map_err(e)?;
    Ok(Job {
        id: JobId(id),
        batch: BatchId(row.try_get(1).map_err(e)?),
        key: row.try_get(2).map_err(e)?,
        spec: serde_json::from_str(&spec).map_err(|e| json("spec", e))?,
        status: status(row.try_get::<_, &str>(4).map_err(e)?)?,
        order_url: row.try_get(5).map_err(e)?,
        authorization_urls: serde_json::from_str(&authz).map_err(|e| json("authorizations", e))?,
        cert_key: row.try_get(7).map_err(e)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error: row.try_get(9).map_err(e)?,
        deferred_until: row.try_get::<_, Option<i64>>(10).map_err(e)?.map(from_ts),
        resume_status: resume.as_deref().map(status).transpose()?,
        lease: match (lease_node, lease_expires) {
            (Some(node), Some(exp)) => Some(LeaseInfo {
                node,
                expires_at: from_ts(exp),
            }),
            _ => None,
        },
        fence: FencingToken(row.try_get(14).map_err(e)?),
        issued: issued
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| json("certificate", e))?,
        created_at: from_ts(row.try_get(16).map_err(e)?),
        updated_at: from_ts(row.try_get(17).map_err(e)?),
    })
}

fn batch_row(row: &Row, db: &Db) -> Result<BatchRecord, StoreError> {
    let e = |e| db.err(e);
    Ok(BatchRecord {
        id: BatchId(row.try_get(0).map_err(e)?),
        name: row.try_get(1).map_err(e)?,
        digest: row.try_get(2).map_err(e)?,
        created_at: from_ts(row.try_get(3).map_err(e)?),
    })
}

pub(crate) async fn job(db: &Db, id: JobId) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {COLS} FROM jobs WHERE id = $1");
    let rows = db.rows(&sql, &[&id.0]).await?;
    rows.first().map(|r| decode(r, db)).transpose()
}

pub(crate) async fn open_batch(
    db: &Db,
    batch: &NewBatch,
    now: OffsetDateTime,
) -> Result<(BatchRecord, bool), StoreError> {
    let inserted = db
        .rows(
            "INSERT INTO batches (name, digest, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name, digest) DO NOTHING RETURNING id, name, digest, created_at",
            &[&batch.name, &batch.digest, &ts(now)],
        )
        .await?;
    if let Some(row) = inserted.first() {
        return Ok((batch_row(row, db)?, true));
    }
    let rows = db
        .rows(
            "SELECT id, name, digest, created_at FROM batches WHERE name = $1 AND digest = $2",
            &[&batch.name, &batch.digest],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| corrupt(&db.location, "a batch vanished while being opened"))?;
    Ok((batch_row(row, db)?, false))
}

pub(crate) async fn batches(db: &Db) -> Result<Vec<BatchRecord>, StoreError> {
    db.rows(
        "SELECT id, name, digest, created_at FROM batches ORDER BY id",
        &[],
    )
    .await?
    .iter()
    .map(|r| batch_row(r, db))
    .collect()
}

/// How soon a due job that another node is claiming right now counts as due again.
const CLAIM_RACE: time::Duration = time::Duration::milliseconds(50);

/// Rows per insert statement (keeps each statement's arrays moderate).
const INSERT_CHUNK: usize = 2000;

pub(crate) async fn add_jobs(
    db: &Db,
    batch: BatchId,
    new_jobs: &[NewJob],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let mut client = db.client().await?;
    let tx = client.transaction().await.map_err(|e| db.err(e))?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO jobs (batch_id, job_key, spec, status, created_at, updated_at) \
             SELECT $1, k, s, 'queued', $4, $4 FROM UNNEST($2::text[], $3::text[]) AS t(k, s) \
             ON CONFLICT (batch_id, job_key) DO NOTHING",
        )
        .await
        .map_err(|e| db.err(e))?;
    let mut added = 0u64;
    let mut trips = 2;
    for chunk in new_jobs.chunks(INSERT_CHUNK) {
        let keys: Vec<&str> = chunk.iter().map(|j| j.key.as_str()).collect();
        let specs = chunk
            .iter()
            .map(|j| certfleet_store::store::encode_json(&j.spec, &db.location))
            .collect::<Result<Vec<_>, _>>()?;
        added += tx
            .execute(&stmt, &[&batch.0, &keys, &specs, &ts(now)])
            .await
            .map_err(|e| db.err(e))?;
        trips += 1;
    }
    tx.commit().await.map_err(|e| db.err(e))?;
    db.stats.trips(trips);
    Ok(usize::try_from(added).unwrap_or(usize::MAX))
}

pub(crate) async fn claim(db: &Db, req: &ClaimRequest) -> Result<Vec<ClaimedJob>, StoreError> {
    let now = ts(req.now);
    let expires_at = req.now + to_time(req.lease_for);
    let limit = i64::try_from(req.max_jobs).unwrap_or(i64::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    // One statement: pick due jobs skipping rows another claimer holds locked, lease them
    // and bump their fencing tokens.
    let sql = format!(
        "WITH due AS ( \
           SELECT id FROM jobs WHERE batch_id = $1 \
             AND (lease_expires IS NULL OR lease_expires <= $2) \
             AND (status IN ('queued', 'ordering', 'authorizing', 'validating', 'finalizing') \
                  OR (status = 'deferred' AND deferred_until <= $2)) \
           ORDER BY COALESCE(deferred_until, created_at), id LIMIT $3 \
           FOR UPDATE SKIP LOCKED) \
         UPDATE jobs SET lease_node = $4, lease_expires = $5, fence = jobs.fence + 1 \
         FROM due WHERE jobs.id = due.id RETURNING {COLS}"
    );
    let rows = db
        .rows(
            &sql,
            &[&req.batch.0, &now, &limit, &req.node, &ts(expires_at)],
        )
        .await?;
    let mut claimed = rows
        .iter()
        .map(|r| decode(r, db))
        .collect::<Result<Vec<Job>, _>>()?;
    // RETURNING has no order: restore "oldest due first".
    claimed.sort_by_key(|j| (j.deferred_until.unwrap_or(j.created_at), j.id));
    db.stats
        .claim_calls
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    db.stats
        .claimed_jobs
        .fetch_add(claimed.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(claimed
        .into_iter()
        .map(|job| ClaimedJob {
            lease: Lease {
                job: job.id,
                node: req.node.clone(),
                token: job.fence,
                expires_at,
            },
            job,
        })
        .collect())
}

pub(crate) async fn list(
    db: &Db,
    batch: BatchId,
    after: Option<JobId>,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let sql =
        format!("SELECT {COLS} FROM jobs WHERE batch_id = $1 AND id > $2 ORDER BY id LIMIT $3");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    db.rows(&sql, &[&batch.0, &after.map_or(0, |a| a.0), &limit])
        .await?
        .iter()
        .map(|r| decode(r, db))
        .collect()
}

pub(crate) async fn counts(db: &Db, batch: BatchId) -> Result<StatusCounts, StoreError> {
    let rows = db
        .rows(
            "SELECT status, COUNT(*) FROM jobs WHERE batch_id = $1 GROUP BY status",
            &[&batch.0],
        )
        .await?;
    let mut out = StatusCounts::default();
    for row in rows {
        let status: String = row.try_get(0).map_err(|e| db.err(e))?;
        let n: i64 = row.try_get(1).map_err(|e| db.err(e))?;
        let status: JobStatus = status.parse().map_err(|e| corrupt(&db.location, e))?;
        out.0.insert(status, u64::try_from(n).unwrap_or(0));
    }
    Ok(out)
}

pub(crate) async fn next_due(
    db: &Db,
    batch: BatchId,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, StoreError> {
    // A job due now that this node's claim did not get is being claimed by another node
    // (its row was locked, so SKIP LOCKED passed it): it counts as due shortly, so a node
    // never ends its run while another is only about to take the last jobs.
    let soon = ts(now + CLAIM_RACE);
    let rows = db
        .rows(
            "SELECT MIN(t) FROM ( \
               SELECT deferred_until AS t FROM jobs WHERE batch_id = $1 AND status = 'deferred' \
                 AND deferred_until > $2 \
               UNION ALL \
               SELECT lease_expires FROM jobs WHERE batch_id = $1 AND lease_expires > $2 \
                 AND status NOT IN ('issued', 'failed') \
               UNION ALL \
               (SELECT $3::bigint FROM jobs WHERE batch_id = $1 \
                 AND (lease_expires IS NULL OR lease_expires <= $2) \
                 AND (status IN ('queued', 'ordering', 'authorizing', 'validating', 'finalizing') \
                      OR (status = 'deferred' AND deferred_until <= $2)) LIMIT 1)) AS due",
            &[&batch.0, &ts(now), &soon],
        )
        .await?;
    let t: Option<i64> = match rows.first() {
        Some(r) => r.try_get(0).map_err(|e| db.err(e))?,
        None => None,
    };
    Ok(t.map(from_ts))
}

pub(crate) async fn requeue_failed(
    db: &Db,
    batch: BatchId,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let n = db
        .exec(
            "UPDATE jobs SET status = 'queued', order_url = NULL, authz_urls = '[]', \
             deferred_until = NULL, resume_status = NULL, updated_at = $2 \
             WHERE batch_id = $1 AND status = 'failed'",
            &[&batch.0, &ts(now)],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Governor deferrals due at `now` (see `StateStore::redue_governed`).
pub(crate) async fn redue_governed(
    db: &Db,
    batch: BatchId,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let prefix = certfleet_store::GOVERNOR_DEFERRAL;
    let n = db
        .exec(
            "UPDATE jobs SET deferred_until = $2, updated_at = $2 \
             WHERE batch_id = $1 AND status = 'deferred' AND deferred_until > $2 \
             AND left(last_error, length($3::text)) = $3::text",
            &[&batch.0, &ts(now), &prefix],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Moves the listed `issued` jobs back to `queued`, keeping their issued certificate.
pub(crate) async fn requeue_issued(
    db: &Db,
    batch: BatchId,
    ids: &[JobId],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let ids: Vec<i64> = ids.iter().map(|j| j.0).collect();
    let n = db
        .exec(
            "UPDATE jobs SET status = 'queued', order_url = NULL, authz_urls = '[]', \
             deferred_until = NULL, resume_status = NULL, last_error = NULL, \
             attempts = 0, updated_at = $3 \
             WHERE batch_id = $1 AND id = ANY($2) AND status = 'issued'",
            &[&batch.0, &ids, &ts(now)],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}
