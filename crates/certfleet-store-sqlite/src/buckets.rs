//! Rate buckets and issuance history in SQL. The arithmetic is [`certfleet_store::gcra`]'s; this
//! file only loads and stores states inside one immediate transaction.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use certfleet_store::StoreError;
use certfleet_store::gcra::{BucketKey, BucketState, Decision, TokenRequest, decide, refunds};
use certfleet_store::{IssuanceRecord, TakeOutcome};

use super::{db_err, from_ts, ts};
use crate::tx::{Begin, begin};

pub(super) fn state(
    conn: &Connection,
    loc: &str,
    key: &BucketKey,
) -> Result<BucketState, StoreError> {
    let row: Option<(Option<i64>, Option<i64>)> = conn
        .prepare_cached("SELECT tat, paused_until FROM buckets WHERE key = ?1")
        .map_err(db_err(loc))?
        .query_row([&key.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db_err(loc))?;
    Ok(
        row.map_or_else(BucketState::default, |(tat, paused)| BucketState {
            tat: tat.map(from_ts),
            paused_until: paused.map(from_ts),
        }),
    )
}

fn states(
    conn: &Connection,
    loc: &str,
    requests: &[TokenRequest],
) -> Result<BTreeMap<BucketKey, BucketState>, StoreError> {
    let mut out = BTreeMap::new();
    for r in requests {
        if !out.contains_key(&r.key) {
            out.insert(r.key.clone(), state(conn, loc, &r.key)?);
        }
    }
    Ok(out)
}

fn set_tat(
    conn: &Connection,
    loc: &str,
    key: &BucketKey,
    tat: Option<OffsetDateTime>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO buckets (key, tat) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
    )
    .map_err(db_err(loc))?
    .execute(params![key.0, tat.map(ts)])
    .map_err(db_err(loc))?;
    Ok(())
}

pub(super) fn take(
    conn: &mut Connection,
    loc: &str,
    requests: &[TokenRequest],
    now: OffsetDateTime,
    write: bool,
) -> Result<TakeOutcome, StoreError> {
    let tx = begin(
        conn,
        if write {
            Begin::Immediate
        } else {
            Begin::Deferred
        },
    )
    .map_err(db_err(loc))?;
    let outcome = match decide(requests, &states(&tx, loc, requests)?, now) {
        Decision::Granted { updates } => {
            if write {
                for (key, tat) in &updates {
                    set_tat(&tx, loc, key, Some(*tat))?;
                }
            }
            TakeOutcome::Granted
        }
        Decision::Denied {
            key,
            cause,
            retry_at,
        } => TakeOutcome::Wait {
            key,
            cause,
            retry_at,
        },
    };
    tx.commit().map_err(db_err(loc))?;
    Ok(outcome)
}

pub(super) fn refund(
    conn: &mut Connection,
    loc: &str,
    requests: &[TokenRequest],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let tx = begin(conn, Begin::Immediate).map_err(db_err(loc))?;
    for (key, tat) in refunds(requests, &states(&tx, loc, requests)?, now) {
        set_tat(&tx, loc, &key, tat)?;
    }
    tx.commit().map_err(db_err(loc))
}

pub(super) fn pause(
    conn: &mut Connection,
    loc: &str,
    key: &BucketKey,
    until: OffsetDateTime,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO buckets (key, paused_until) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET paused_until = \
           MAX(COALESCE(paused_until, excluded.paused_until), excluded.paused_until)",
    )
    .map_err(db_err(loc))?
    .execute(params![key.0, ts(until)])
    .map_err(db_err(loc))?;
    Ok(())
}

pub(super) fn record_issuance(
    conn: &Connection,
    loc: &str,
    rec: &IssuanceRecord,
) -> Result<(), StoreError> {
    let names = serde_json::to_string(&rec.names).map_err(|e| StoreError::Corrupt {
        location: loc.to_owned(),
        detail: format!("cannot encode names: {e}"),
    })?;
    conn.prepare_cached(
        "INSERT INTO issuances (name_set, names, account, serial, issued_at, not_after, replaces) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(db_err(loc))?
    .execute(params![
        rec.name_set,
        names,
        rec.account,
        rec.serial,
        ts(rec.issued_at),
        ts(rec.not_after),
        rec.replaces
    ])
    .map_err(db_err(loc))?;
    Ok(())
}

pub(super) fn last_issuance(
    conn: &mut Connection,
    loc: &str,
    name_set: &str,
) -> Result<Option<IssuanceRecord>, StoreError> {
    type Row = (String, String, String, i64, i64, Option<String>);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT names, account, serial, issued_at, not_after, replaces FROM issuances \
             WHERE name_set = ?1 ORDER BY issued_at DESC, id DESC LIMIT 1",
        )
        .map_err(db_err(loc))?
        .query_row([name_set], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()
        .map_err(db_err(loc))?;
    let Some((names, account, serial, issued_at, not_after, replaces)) = row else {
        return Ok(None);
    };
    let names = serde_json::from_str(&names).map_err(|e| StoreError::Corrupt {
        location: loc.to_owned(),
        detail: format!("issuance names: {e}"),
    })?;
    Ok(Some(IssuanceRecord {
        name_set: name_set.to_owned(),
        names,
        account,
        serial,
        issued_at: from_ts(issued_at),
        not_after: from_ts(not_after),
        replaces,
    }))
}
