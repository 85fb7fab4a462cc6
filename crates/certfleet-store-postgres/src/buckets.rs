//! Rate buckets and issuance history. A debit is one transaction that locks every bucket
//! row involved (`FOR UPDATE`, in key order: two debits with overlapping keys lock in the
//! same order and never deadlock), decides with [`certfleet_store::gcra::decide`] and
//! writes the new TATs, so any number of nodes together stay within the limits.

use std::collections::BTreeMap;

use certfleet_store::gcra::{BucketKey, BucketState, Decision, TokenRequest, decide, refunds};
use certfleet_store::{IssuanceRecord, Job, JobUpdate, Lease, StoreError, TakeOutcome};
use deadpool_postgres::Transaction;
use time::OffsetDateTime;

use crate::error::corrupt;
use crate::{Db, from_ts, ts};

fn keys(requests: &[TokenRequest]) -> Vec<String> {
    let mut keys: Vec<String> = requests.iter().map(|r| r.key.0.clone()).collect();
    keys.sort();
    keys.dedup();
    keys
}

fn to_states(
    db: &Db,
    rows: &[tokio_postgres::Row],
) -> Result<BTreeMap<BucketKey, BucketState>, StoreError> {
    let mut out = BTreeMap::new();
    for r in rows {
        let e = |e| db.err(e);
        let key: String = r.try_get(0).map_err(e)?;
        let tat: Option<i64> = r.try_get(1).map_err(e)?;
        let paused: Option<i64> = r.try_get(2).map_err(e)?;
        out.insert(
            BucketKey(key),
            BucketState {
                tat: tat.map(from_ts),
                paused_until: paused.map(from_ts),
            },
        );
    }
    Ok(out)
}

/// Creates missing rows, then locks and reads all of `keys` (sorted) in `tx`.
async fn lock_states(
    db: &Db,
    tx: &Transaction<'_>,
    keys: &Vec<String>,
) -> Result<BTreeMap<BucketKey, BucketState>, StoreError> {
    let e = |e| db.err(e);
    // Inserted in key order too: concurrent first debits of new buckets cannot deadlock.
    let ensure = tx
        .prepare_cached(
            "INSERT INTO buckets (key) SELECT k FROM UNNEST($1::text[]) AS k ORDER BY k \
             ON CONFLICT (key) DO NOTHING",
        )
        .await
        .map_err(e)?;
    tx.execute(&ensure, &[keys]).await.map_err(e)?;
    let select = tx
        .prepare_cached(
            "SELECT key, tat, paused_until FROM buckets WHERE key = ANY($1) ORDER BY key \
             FOR UPDATE",
        )
        .await
        .map_err(e)?;
    let rows = tx.query(&select, &[keys]).await.map_err(e)?;
    to_states(db, &rows)
}

async fn write_tats(
    db: &Db,
    tx: &Transaction<'_>,
    updates: &[(BucketKey, Option<OffsetDateTime>)],
) -> Result<u64, StoreError> {
    if updates.is_empty() {
        return Ok(0);
    }
    let keys: Vec<&str> = updates.iter().map(|(k, _)| k.0.as_str()).collect();
    let tats: Vec<Option<i64>> = updates.iter().map(|(_, t)| t.map(ts)).collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE buckets SET tat = u.tat FROM UNNEST($1::text[], $2::bigint[]) AS u(key, tat) \
             WHERE buckets.key = u.key",
        )
        .await
        .map_err(|e| db.err(e))?;
    tx.execute(&stmt, &[&keys, &tats])
        .await
        .map_err(|e| db.err(e))?;
    Ok(1)
}

fn outcome(decision: Decision) -> (TakeOutcome, Vec<(BucketKey, Option<OffsetDateTime>)>) {
    match decision {
        Decision::Granted { updates } => (
            TakeOutcome::Granted,
            updates.into_iter().map(|(k, t)| (k, Some(t))).collect(),
        ),
        Decision::Denied {
            key,
            cause,
            retry_at,
        } => (
            TakeOutcome::Wait {
                key,
                cause,
                retry_at,
            },
            Vec::new(),
        ),
    }
}

pub(crate) async fn take(
    db: &Db,
    requests: &[TokenRequest],
    now: OffsetDateTime,
) -> Result<TakeOutcome, StoreError> {
    let mut client = db.client().await?;
    let tx = client.transaction().await.map_err(|e| db.err(e))?;
    let out = debit(db, &tx, requests, now).await?;
    tx.commit().await.map_err(|e| db.err(e))?;
    Ok(out)
}

/// [`take`], and when granted the fenced job update `u` in the same transaction: a
/// refused update rolls the debit back with it.
pub(crate) async fn take_writing(
    db: &Db,
    requests: &[TokenRequest],
    lease: &Lease,
    u: &JobUpdate,
    now: OffsetDateTime,
) -> Result<(TakeOutcome, Option<Job>), StoreError> {
    u.check_write(lease.job, None)?;
    let mut client = db.client().await?;
    let tx = client.transaction().await.map_err(|e| db.err(e))?;
    let out = debit(db, &tx, requests, now).await?;
    let written = match out {
        TakeOutcome::Wait { .. } => None,
        TakeOutcome::Granted => match crate::fenced::update_on(db, &tx, lease, u, now).await? {
            Some(job) => Some(job),
            None => {
                tx.rollback().await.map_err(|e| db.err(e))?;
                // Back to the pool before the refusal is diagnosed on another connection.
                drop(client);
                return Err(crate::fenced::refusal(db, lease, u).await);
            }
        },
    };
    tx.commit().await.map_err(|e| db.err(e))?;
    Ok((out, written))
}

/// Locks the buckets of `requests`, decides and writes the new TATs in `tx`.
async fn debit(
    db: &Db,
    tx: &Transaction<'_>,
    requests: &[TokenRequest],
    now: OffsetDateTime,
) -> Result<TakeOutcome, StoreError> {
    let states = lock_states(db, tx, &keys(requests)).await?;
    let (out, updates) = outcome(decide(requests, &states, now));
    let wrote = write_tats(db, tx, &updates).await?;
    // BEGIN, insert, select, [update], COMMIT.
    db.stats.trips(4 + wrote);
    Ok(out)
}

pub(crate) async fn peek(
    db: &Db,
    requests: &[TokenRequest],
    now: OffsetDateTime,
) -> Result<TakeOutcome, StoreError> {
    let keys = keys(requests);
    let rows = db
        .rows(
            "SELECT key, tat, paused_until FROM buckets WHERE key = ANY($1)",
            &[&keys],
        )
        .await?;
    Ok(outcome(decide(requests, &to_states(db, &rows)?, now)).0)
}

pub(crate) async fn refund(
    db: &Db,
    requests: &[TokenRequest],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let keys = keys(requests);
    let mut client = db.client().await?;
    let tx = client.transaction().await.map_err(|e| db.err(e))?;
    let states = lock_states(db, &tx, &keys).await?;
    let wrote = write_tats(db, &tx, &refunds(requests, &states, now)).await?;
    tx.commit().await.map_err(|e| db.err(e))?;
    db.stats.trips(4 + wrote);
    Ok(())
}

pub(crate) async fn pause(
    db: &Db,
    key: &BucketKey,
    until: OffsetDateTime,
) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO buckets (key, paused_until) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET paused_until = \
           GREATEST(COALESCE(buckets.paused_until, excluded.paused_until), excluded.paused_until)",
        &[&key.0, &ts(until)],
    )
    .await
    .map(drop)
}

pub(crate) async fn state(db: &Db, key: &BucketKey) -> Result<BucketState, StoreError> {
    let rows = db
        .rows(
            "SELECT key, tat, paused_until FROM buckets WHERE key = $1",
            &[&key.0],
        )
        .await?;
    Ok(to_states(db, &rows)?.remove(key).unwrap_or_default())
}

/// The insert of one issuance row, before its values (`VALUES …` or a `SELECT`).
pub(crate) const INSERT_ISSUANCE: &str =
    "INSERT INTO issuances (name_set, names, account, serial, issued_at, not_after, replaces)";

/// An issuance record as the `issuances` columns take it.
pub(crate) struct IssuanceColumns<'r> {
    record: &'r IssuanceRecord,
    names: String,
    issued_at: i64,
    not_after: i64,
}

impl<'r> IssuanceColumns<'r> {
    pub(crate) fn new(
        record: &'r IssuanceRecord,
        db: &Db,
    ) -> Result<IssuanceColumns<'r>, StoreError> {
        Ok(IssuanceColumns {
            record,
            names: serde_json::to_string(&record.names)
                .map_err(|e| corrupt(&db.location, format!("cannot encode names: {e}")))?,
            issued_at: ts(record.issued_at),
            not_after: ts(record.not_after),
        })
    }

    /// The values in the order of [`INSERT_ISSUANCE`]'s columns.
    pub(crate) fn params(&self) -> [crate::Param<'_>; 7] {
        [
            &self.record.name_set,
            &self.names,
            &self.record.account,
            &self.record.serial,
            &self.issued_at,
            &self.not_after,
            &self.record.replaces,
        ]
    }
}

pub(crate) async fn record_issuance(db: &Db, rec: &IssuanceRecord) -> Result<(), StoreError> {
    let columns = IssuanceColumns::new(rec, db)?;
    db.exec(
        &format!(
            "{INSERT_ISSUANCE} VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (serial) DO NOTHING"
        ),
        &columns.params(),
    )
    .await
    .map(drop)
}

pub(crate) async fn last_issuance(
    db: &Db,
    name_set: &str,
) -> Result<Option<IssuanceRecord>, StoreError> {
    let rows = db
        .rows(
            "SELECT names, account, serial, issued_at, not_after, replaces FROM issuances \
             WHERE name_set = $1 ORDER BY issued_at DESC, id DESC LIMIT 1",
            &[&name_set],
        )
        .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let e = |e| db.err(e);
    let names: String = r.try_get(0).map_err(e)?;
    let names = serde_json::from_str(&names)
        .map_err(|e| corrupt(&db.location, format!("issuance names: {e}")))?;
    Ok(Some(IssuanceRecord {
        name_set: name_set.to_owned(),
        names,
        account: r.try_get(1).map_err(e)?,
        serial: r.try_get(2).map_err(e)?,
        issued_at: from_ts(r.try_get(3).map_err(e)?),
        not_after: from_ts(r.try_get(4).map_err(e)?),
        replaces: r.try_get(5).map_err(e)?,
    }))
}
