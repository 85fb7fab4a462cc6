//! What a fleet shares besides job state: bundles, sealed job keys, deployments. Writes by
//! a leaseholder are fenced in the statement (`… FROM jobs WHERE fence AND lease_node`), so
//! a stale node's write inserts nothing and is diagnosed like any fenced write.

use certfleet_store::{BatchId, Deployment, JobId, Lease, StoreError, StoredBundle};

use crate::{Db, fenced, from_ts, ts};

pub(crate) async fn put_bundle(db: &Db, lease: &Lease, b: &StoredBundle) -> Result<(), StoreError> {
    let n = db
        .exec(
            "INSERT INTO bundles (job_id, serial, not_after, cert_pem, chain_pem, meta_json, \
             key_ref, sealed_key, node, stored_at) \
             SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM jobs \
             WHERE id = $1 AND fence = $11 AND lease_node = $12 \
             ON CONFLICT (job_id) DO UPDATE SET serial = EXCLUDED.serial, \
             not_after = EXCLUDED.not_after, cert_pem = EXCLUDED.cert_pem, \
             chain_pem = EXCLUDED.chain_pem, meta_json = EXCLUDED.meta_json, \
             key_ref = EXCLUDED.key_ref, sealed_key = EXCLUDED.sealed_key, \
             node = EXCLUDED.node, stored_at = EXCLUDED.stored_at",
            &[
                &lease.job.0,
                &b.serial,
                &ts(b.not_after),
                &b.cert_pem,
                &b.chain_pem,
                &b.meta_json,
                &b.key_ref,
                &b.sealed_key,
                &b.node,
                &ts(b.stored_at),
                &lease.token.0,
                &lease.node,
            ],
        )
        .await?;
    if n == 0 {
        fenced::check_lease(db, lease, "put_bundle").await?;
    }
    Ok(())
}

pub(crate) async fn bundle(db: &Db, job: JobId) -> Result<Option<StoredBundle>, StoreError> {
    let rows = db
        .rows(
            "SELECT serial, not_after, cert_pem, chain_pem, meta_json, key_ref, sealed_key, \
             node, stored_at FROM bundles WHERE job_id = $1",
            &[&job.0],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let e = |e| db.err(e);
    Ok(Some(StoredBundle {
        job,
        serial: row.try_get(0).map_err(e)?,
        not_after: from_ts(row.try_get(1).map_err(e)?),
        cert_pem: row.try_get(2).map_err(e)?,
        chain_pem: row.try_get(3).map_err(e)?,
        meta_json: row.try_get(4).map_err(e)?,
        key_ref: row.try_get(5).map_err(e)?,
        sealed_key: row.try_get(6).map_err(e)?,
        node: row.try_get(7).map_err(e)?,
        stored_at: from_ts(row.try_get(8).map_err(e)?),
    }))
}

pub(crate) async fn put_job_key(db: &Db, lease: &Lease, sealed: &[u8]) -> Result<(), StoreError> {
    let n = db
        .exec(
            "INSERT INTO job_keys (job_id, sealed_key) \
             SELECT id, $2 FROM jobs WHERE id = $1 AND fence = $3 AND lease_node = $4 \
             ON CONFLICT (job_id) DO UPDATE SET sealed_key = EXCLUDED.sealed_key",
            &[&lease.job.0, &sealed, &lease.token.0, &lease.node],
        )
        .await?;
    if n == 0 {
        fenced::check_lease(db, lease, "put_job_key").await?;
    }
    Ok(())
}

pub(crate) async fn job_key(db: &Db, job: JobId) -> Result<Option<Vec<u8>>, StoreError> {
    let rows = db
        .rows(
            "SELECT sealed_key FROM job_keys WHERE job_id = $1",
            &[&job.0],
        )
        .await?;
    match rows.first() {
        Some(row) => Ok(Some(row.try_get(0).map_err(|e| db.err(e))?)),
        None => Ok(None),
    }
}

pub(crate) async fn record_deployment(db: &Db, d: &Deployment) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO deployments (job_id, host, dir, serial, at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (job_id, host) DO UPDATE SET dir = EXCLUDED.dir, \
         serial = EXCLUDED.serial, at = EXCLUDED.at",
        &[&d.job.0, &d.host, &d.dir, &d.serial, &ts(d.at)],
    )
    .await
    .map(drop)
}

pub(crate) async fn deployments(db: &Db, batch: BatchId) -> Result<Vec<Deployment>, StoreError> {
    let rows = db
        .rows(
            "SELECT d.job_id, d.host, d.dir, d.serial, d.at FROM deployments d \
             JOIN jobs j ON j.id = d.job_id WHERE j.batch_id = $1 ORDER BY d.job_id, d.host",
            &[&batch.0],
        )
        .await?;
    let e = |e| db.err(e);
    rows.iter()
        .map(|row| {
            Ok(Deployment {
                job: JobId(row.try_get(0).map_err(e)?),
                host: row.try_get(1).map_err(e)?,
                dir: row.try_get(2).map_err(e)?,
                serial: row.try_get(3).map_err(e)?,
                at: from_ts(row.try_get(4).map_err(e)?),
            })
        })
        .collect()
}
