//! Token buckets as GCRA (generic cell rate algorithm), the model Let's Encrypt uses: a
//! bucket of `capacity` tokens refilled continuously, one token every `period / capacity`.
//!
//! The state of a bucket is one instant, its *theoretical arrival time* (TAT). A request
//! costing `n` tokens at `now` is allowed when `max(TAT, now) + n·T − period ≤ now`
//! (`T` = emission interval); it then moves the TAT to `max(TAT, now) + n·T`. A fresh
//! bucket (no TAT) is full. This module is pure arithmetic, shared by every store backend:
//! a store loads the states of the requested buckets, calls [`decide`] and writes the
//! result back in one transaction, so several processes debit one bucket safely.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::LimitsError;

/// `capacity` tokens per `period`, refilled continuously.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub capacity: u32,
    #[serde(with = "crate::duration::duration_serde")]
    pub period: Duration,
}

impl Limit {
    /// A limit; refuses a zero capacity or period.
    pub fn new(name: &str, capacity: u32, period: Duration) -> Result<Limit, LimitsError> {
        if capacity == 0 || period.is_zero() {
            return Err(LimitsError::Invalid {
                name: name.to_owned(),
                detail: "capacity and period must be greater than zero".to_owned(),
            });
        }
        Ok(Limit { capacity, period })
    }

    /// Time to refill one token: `period / capacity`.
    pub fn emission_interval(&self) -> Duration {
        self.period / self.capacity.max(1)
    }

    fn cost_span(&self, cost: u32) -> time::Duration {
        to_time(self.emission_interval().saturating_mul(cost))
    }

    fn period_span(&self) -> time::Duration {
        to_time(self.period)
    }

    /// Earliest instant at or after `now` at which `cost` tokens can be taken from a bucket
    /// with state `tat`; `None` if `cost` exceeds the capacity (never).
    pub fn earliest(
        &self,
        tat: Option<OffsetDateTime>,
        cost: u32,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        if cost > self.capacity {
            return None;
        }
        let tat = tat.map_or(now, |t| t.max(now));
        Some((tat + self.cost_span(cost) - self.period_span()).max(now))
    }

    /// The TAT after taking `cost` tokens at `now` (assumes [`Limit::earliest`] ≤ `now`).
    pub fn take(
        &self,
        tat: Option<OffsetDateTime>,
        cost: u32,
        now: OffsetDateTime,
    ) -> OffsetDateTime {
        tat.map_or(now, |t| t.max(now)) + self.cost_span(cost)
    }

    /// The TAT after giving back `cost` tokens; `None` when the bucket is full again.
    pub fn refund(
        &self,
        tat: Option<OffsetDateTime>,
        cost: u32,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let back = tat? - self.cost_span(cost);
        (back > now).then_some(back)
    }

    /// Tokens available at `now` for a bucket with state `tat` (whole tokens).
    pub fn available(&self, tat: Option<OffsetDateTime>, now: OffsetDateTime) -> u32 {
        let Some(tat) = tat.filter(|t| *t > now) else {
            return self.capacity;
        };
        let used = (tat - now).as_seconds_f64() / self.emission_interval().as_secs_f64();
        let used = used.ceil().clamp(0.0, f64::from(self.capacity)) as u32;
        self.capacity - used
    }
}

/// A std duration as a `time` duration (saturating).
pub fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// The name of one bucket (also the unit a reactive pause applies to), such as
/// `new-orders:<account>` or `domain:example.com`. See the constructors in
/// `certfleet_batch::governor`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BucketKey(pub String);

impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Take (or, with `check_only`, just require) `cost` tokens from a bucket. Without a
/// `limit` the request only checks the bucket's reactive pause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub key: BucketKey,
    pub limit: Option<Limit>,
    pub cost: u32,
    /// Require the tokens to be there without taking them (Let's Encrypt checks the
    /// failed-authorization limit at new-order time but spends it only on a failure).
    pub check_only: bool,
}

/// What a store keeps per bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketState {
    pub tat: Option<OffsetDateTime>,
    /// Set by a reactive pause (a 429 or 503 from the CA): nothing passes before it.
    pub paused_until: Option<OffsetDateTime>,
}

/// Why a request must wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyCause {
    /// The bucket has too few tokens.
    Limit,
    /// The scope is paused after the CA said so.
    Paused,
    /// More tokens than the bucket can ever hold.
    ExceedsCapacity,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// All requests pass; write these new TATs (only buckets whose state changes).
    Granted {
        updates: Vec<(BucketKey, OffsetDateTime)>,
    },
    /// At least one request must wait; `retry_at` is the latest of the blocking buckets
    /// (the one that frees last is the one that matters). `retry_at` is `None` for
    /// [`DenyCause::ExceedsCapacity`].
    Denied {
        key: BucketKey,
        cause: DenyCause,
        retry_at: Option<OffsetDateTime>,
    },
}

/// Decides all `requests` at `now` together, all or nothing. `states` holds the stored
/// state of each requested key (missing = fresh bucket). Requests for the same key are
/// merged (costs added).
pub fn decide(
    requests: &[TokenRequest],
    states: &BTreeMap<BucketKey, BucketState>,
    now: OffsetDateTime,
) -> Decision {
    let empty = BucketState::default();
    let mut merged: BTreeMap<&BucketKey, (Option<Limit>, u32, u32)> = BTreeMap::new();
    for r in requests {
        let e = merged.entry(&r.key).or_insert((None, 0, 0));
        e.0 = e.0.or(r.limit);
        if r.check_only {
            e.2 = e.2.saturating_add(r.cost);
        } else {
            e.1 = e.1.saturating_add(r.cost);
        }
    }
    let mut worst: Option<(BucketKey, DenyCause, Option<OffsetDateTime>)> = None;
    let mut updates = Vec::new();
    for (key, (limit, spend, check)) in merged {
        let state = states.get(key).unwrap_or(&empty);
        let mut blocked_until = state.paused_until.filter(|p| *p > now);
        let mut cause = DenyCause::Paused;
        if let Some(limit) = limit {
            let need = spend.max(check);
            match limit.earliest(state.tat, need, now) {
                None => {
                    return Decision::Denied {
                        key: key.clone(),
                        cause: DenyCause::ExceedsCapacity,
                        retry_at: None,
                    };
                }
                Some(at) if at > now && blocked_until.is_none_or(|b| at > b) => {
                    blocked_until = Some(at);
                    cause = DenyCause::Limit;
                }
                Some(_) => {}
            }
            if spend > 0 {
                updates.push((key.clone(), limit.take(state.tat, spend, now)));
            }
        }
        if let Some(until) = blocked_until
            && worst
                .as_ref()
                .is_none_or(|(_, _, w)| w.is_some_and(|w| until > w))
        {
            worst = Some((key.clone(), cause, Some(until)));
        }
    }
    match worst {
        Some((key, cause, retry_at)) => Decision::Denied {
            key,
            cause,
            retry_at,
        },
        None => Decision::Granted { updates },
    }
}

/// New TATs after refunding `requests` (check-only requests and limitless ones refund
/// nothing); `None` in a pair means "bucket full again" (the store may delete it).
pub fn refunds(
    requests: &[TokenRequest],
    states: &BTreeMap<BucketKey, BucketState>,
    now: OffsetDateTime,
) -> Vec<(BucketKey, Option<OffsetDateTime>)> {
    let mut tats: BTreeMap<&BucketKey, Option<OffsetDateTime>> = BTreeMap::new();
    let mut out_keys = Vec::new();
    for r in requests.iter().filter(|r| !r.check_only && r.cost > 0) {
        let Some(limit) = r.limit else { continue };
        let tat = *tats
            .entry(&r.key)
            .or_insert_with(|| states.get(&r.key).and_then(|s| s.tat));
        tats.insert(&r.key, limit.refund(tat, r.cost, now));
        if !out_keys.contains(&&r.key) {
            out_keys.push(&r.key);
        }
    }
    out_keys
        .into_iter()
        .map(|k| (k.clone(), tats.get(k).copied().flatten()))
        .collect()
}

#[cfg(test)]
mod tests;
