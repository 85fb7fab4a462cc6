//! The rate governor: Let's Encrypt-style token buckets kept in the [`StateStore`], so the
//! limits hold across runs and across nodes sharing a store.
//!
//! **Proactive.** Before a new order, [`Governor::order_cost`] lists the tokens it needs —
//! one new order for the account, one certificate per distinct registered domain (names
//! deduplicated per order), one for the exact name set, and a check (no spend) of the
//! failed-authorization bucket of every name — and [`Governor::reserve`] takes them all or
//! tells when to come back: a job waits for its tokens instead of provoking a 429.
//! Certificate tokens are taken at order time (the CA spends them at issuance) and given
//! back by [`Governor::release`] when none is issued.
//!
//! **Reactive.** [`Governor::on_rate_limited`] pauses exactly the scope a 429 or 503 names
//! ([`RateLimitSignal`]); reservations touching that scope wait until the pause ends, and
//! the refused token of that scope stays spent (see [`Governor::release`]).
//!
//! **Exemptions.** An ARI renewal (`replaces`, inside the suggested window) is exempt from
//! all limits when [`Limits::ari_renewals_exempt`]; a renewal of a name set issued within
//! [`Limits::same_set_renewal_exemption`] skips the new-order and per-domain limits.

mod names;
mod rate_limited;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

pub use names::{
    NameSet, endpoint_key, failed_authz_key, name_set_key, new_orders_key, new_registrations_key,
    registered_domain, registered_domain_key,
};
pub use rate_limited::{
    PauseScope, RateLimitSignal, ReactiveDefaults, retry_after_in_detail, scope_of,
};

use crate::error::StoreError;
use crate::gcra::{BucketKey, DenyCause, TokenRequest, to_time};
use crate::limits::Limits;
use crate::store::{IssuanceRecord, Job, JobUpdate, Lease, StateStore, TakeOutcome};

/// The order about to be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderContext {
    /// Account URL (the `kid`).
    pub account: String,
    pub names: NameSet,
    /// ARI CertID sent as `replaces`, if this is a renewal.
    pub replaces: Option<String>,
    /// The renewal is inside the CA's suggested window.
    pub in_renewal_window: bool,
}

impl OrderContext {
    pub fn new<I, S>(account: impl Into<String>, names: I) -> OrderContext
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        OrderContext {
            account: account.into(),
            names: NameSet::new(names),
            replaces: None,
            in_renewal_window: false,
        }
    }
}

/// Why an order costs less than usual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    /// ARI renewal inside its window: no limit applies.
    AriRenewal,
    /// Same name set issued recently: no new-order or per-domain token.
    SameSetRenewal,
}

/// What a token is for, so the right ones are refunded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    NewOrder,
    RegisteredDomain,
    NameSet,
    FailedAuthorizationCheck,
    EndpointPause,
}

impl Charge {
    /// The [`Limits`] field this charge counts against.
    pub fn limit_name(self) -> &'static str {
        match self {
            Charge::NewOrder => "new_orders_per_account",
            Charge::RegisteredDomain => "certificates_per_registered_domain",
            Charge::NameSet => "certificates_per_name_set",
            Charge::FailedAuthorizationCheck => "failed_authorizations_per_name",
            Charge::EndpointPause => "endpoint pause",
        }
    }
}

/// An instant in RFC 3339 to the second, as the logs print times.
fn seconds(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The tokens one order needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderCost {
    pub charges: Vec<(Charge, TokenRequest)>,
    pub exemption: Option<Exemption>,
}

impl OrderCost {
    fn requests(&self) -> Vec<TokenRequest> {
        self.charges.iter().map(|(_, r)| r.clone()).collect()
    }

    fn requests_for(&self, which: &[Charge]) -> Vec<TokenRequest> {
        self.charges
            .iter()
            .filter(|(c, _)| which.contains(c))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// Taken tokens, to hand back if the order or certificate does not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub cost: OrderCost,
}

/// How far an order that produced no certificate got: what [`Governor::release`] gives
/// back depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderReached {
    /// The CA did not create the order (it refused newOrder, or the request never left).
    NotCreated,
    /// The CA created the order (and spent its new-order token), but no certificate came.
    Created,
}

/// The answer of [`Governor::reserve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserve {
    Granted(Reservation),
    /// Come back at `until` (`None`: never — the order needs more tokens than a bucket
    /// holds, such as more certificates for one domain than its capacity).
    Wait {
        until: Option<OffsetDateTime>,
        key: BucketKey,
        cause: DenyCause,
    },
}

/// How far a grant stays from a bucket's boundary at least (see [`Governor::reserve`]).
pub const GRANT_SLACK: std::time::Duration = std::time::Duration::from_millis(500);

/// The most the slack grows to when newOrder answers come late
/// ([`Governor::note_order_answered`]).
pub const MAX_GRANT_SLACK: std::time::Duration = std::time::Duration::from_secs(30);

/// The rate governor over one store.
#[derive(Debug)]
pub struct Governor {
    store: Arc<dyn StateStore>,
    limits: Limits,
    defaults: ReactiveDefaults,
    /// Endpoint pauses, also persisted; kept here too so per-request checks cost nothing.
    endpoints: Mutex<HashMap<BucketKey, OffsetDateTime>>,
    grant_slack: std::time::Duration,
    /// The slowest answer to a granted newOrder seen by this process, in µs.
    slowest_order_answer_us: AtomicU64,
    /// Buckets whose first deferral this run has already logged at INFO.
    announced: Mutex<std::collections::HashSet<BucketKey>>,
}

impl Governor {
    pub fn new(store: Arc<dyn StateStore>, limits: Limits) -> Governor {
        Governor {
            store,
            limits,
            defaults: ReactiveDefaults::default(),
            endpoints: Mutex::new(HashMap::new()),
            grant_slack: GRANT_SLACK,
            slowest_order_answer_us: AtomicU64::new(0),
            announced: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Replaces [`GRANT_SLACK`] (zero: grants right at a bucket's boundary, as the bucket
    /// arithmetic alone says, whatever [`Governor::note_order_answered`] sees).
    pub fn with_grant_slack(mut self, slack: std::time::Duration) -> Governor {
        self.grant_slack = slack;
        self
    }

    pub fn with_reactive_defaults(mut self, defaults: ReactiveDefaults) -> Governor {
        self.defaults = defaults;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn reactive_defaults(&self) -> &ReactiveDefaults {
        &self.defaults
    }

    /// The tokens the order in `ctx` needs at `now` (reads the issuance history for the
    /// same-set renewal exemption).
    pub async fn order_cost(
        &self,
        ctx: &OrderContext,
        new_order_url: &str,
        now: OffsetDateTime,
    ) -> Result<OrderCost, StoreError> {
        let l = &self.limits;
        let mut charges = vec![(
            Charge::EndpointPause,
            TokenRequest {
                key: endpoint_key(new_order_url),
                limit: None,
                cost: 0,
                check_only: true,
            },
        )];
        if l.ari_renewals_exempt && ctx.replaces.is_some() && ctx.in_renewal_window {
            return Ok(OrderCost {
                charges,
                exemption: Some(Exemption::AriRenewal),
            });
        }
        let mut exemption = None;
        if let Some(window) = l.same_set_renewal_exemption
            && let Some(last) = self.store.last_issuance(&ctx.names.key()).await?
            && last.issued_at + to_time(window) >= now
        {
            exemption = Some(Exemption::SameSetRenewal);
        }
        let spend = |key: BucketKey, limit| TokenRequest {
            key,
            limit,
            cost: 1,
            check_only: false,
        };
        if exemption.is_none() {
            charges.push((
                Charge::NewOrder,
                spend(new_orders_key(&ctx.account), l.new_orders_per_account),
            ));
            for domain in ctx.names.registered_domains() {
                charges.push((
                    Charge::RegisteredDomain,
                    spend(
                        registered_domain_key(&domain),
                        l.certificates_per_registered_domain,
                    ),
                ));
            }
        }
        charges.push((
            Charge::NameSet,
            spend(name_set_key(&ctx.names), l.certificates_per_name_set),
        ));
        for name in ctx.names.names() {
            charges.push((
                Charge::FailedAuthorizationCheck,
                TokenRequest {
                    key: failed_authz_key(&ctx.account, name),
                    limit: l.failed_authorizations_per_name,
                    cost: 1,
                    check_only: true,
                },
            ));
        }
        Ok(OrderCost { charges, exemption })
    }

    /// Notes how long after its grant a newOrder was answered, created or refused.
    ///
    /// A CA whose bucket is full starts counting at the request's arrival, which can be
    /// that late (a slow first connection, a loaded host): its bucket then frees every
    /// later token that much after ours. Grants keep the slowest such answer of this
    /// process (at most [`MAX_GRANT_SLACK`]) from a bucket's boundary, so an order paced
    /// at our boundary does not reach the CA before the CA's.
    pub fn note_order_answered(&self, since_grant: std::time::Duration) {
        let us = u64::try_from(since_grant.as_micros()).unwrap_or(u64::MAX);
        let before = self
            .slowest_order_answer_us
            .fetch_max(us, Ordering::Relaxed);
        let floor = u64::try_from(self.grant_slack.as_micros()).unwrap_or(u64::MAX);
        if us > before.max(floor) && !self.grant_slack.is_zero() {
            tracing::debug!(
                answered_after_ms = since_grant.as_millis(),
                "a newOrder was answered late: grants now keep {} ms from a bucket's boundary",
                self.grant_slack().as_millis()
            );
        }
    }

    /// How far grants keep from a bucket's boundary now: [`GRANT_SLACK`] (or the slack set
    /// by [`Governor::with_grant_slack`]), or the slowest newOrder answer seen, whichever is
    /// longer.
    pub fn grant_slack(&self) -> std::time::Duration {
        if self.grant_slack.is_zero() {
            return self.grant_slack;
        }
        let slowest =
            std::time::Duration::from_micros(self.slowest_order_answer_us.load(Ordering::Relaxed));
        self.grant_slack.max(slowest.min(MAX_GRANT_SLACK))
    }

    /// Takes the order's tokens, or says when to come back. A grant keeps
    /// [`Governor::grant_slack`] from every limited bucket's boundary: the CA counts the
    /// request a moment after we take our token (signing, sending), and that moment varies
    /// from one request to the next, so a grant right at the boundary could arrive early.
    pub async fn reserve(
        &self,
        cost: &OrderCost,
        now: OffsetDateTime,
    ) -> Result<Reserve, StoreError> {
        Ok(self.reserve_writing(cost, None, now).await?.0)
    }

    /// [`Governor::reserve`], writing `job`'s update with the grant in one store write
    /// ([`StateStore::take_tokens_writing`]): the job as stored comes back with a grant.
    pub async fn reserve_writing(
        &self,
        cost: &OrderCost,
        job: Option<(&Lease, &JobUpdate)>,
        now: OffsetDateTime,
    ) -> Result<(Reserve, Option<Job>), StoreError> {
        let answer = self.reserve_quietly(cost, job, now).await?;
        if let (Reserve::Wait { until, key, cause }, _) = &answer {
            self.announce(cost, key, *cause, *until);
        }
        Ok(answer)
    }

    /// The first deferral per bucket in this run is logged at INFO with the limit, its
    /// scope and the time the tokens are back; later ones at DEBUG.
    fn announce(
        &self,
        cost: &OrderCost,
        key: &BucketKey,
        cause: DenyCause,
        until: Option<OffsetDateTime>,
    ) {
        let first = self
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        let Some((charge, request)) = cost.charges.iter().find(|(_, r)| &r.key == key) else {
            return;
        };
        let limit = match (cause, request.limit) {
            (DenyCause::Paused, _) => "a pause the CA asked for".to_owned(),
            (_, Some(l)) => format!(
                "{} ({} per {})",
                charge.limit_name(),
                l.capacity,
                crate::format_duration(l.period)
            ),
            (_, None) => charge.limit_name().to_owned(),
        };
        let until = until.map_or_else(|| "never (the order exceeds the limit)".to_owned(), seconds);
        if first {
            tracing::info!(
                limit = %limit,
                scope = %key,
                until = %until,
                "rate limit {limit} reached for {key}: deferring orders until {until}"
            );
        } else {
            tracing::debug!(scope = %key, until = %until, "deferring an order: {limit}");
        }
    }

    async fn reserve_quietly(
        &self,
        cost: &OrderCost,
        job: Option<(&Lease, &JobUpdate)>,
        now: OffsetDateTime,
    ) -> Result<(Reserve, Option<Job>), StoreError> {
        let requests = cost.requests();
        let slack = self.grant_slack();
        if !slack.is_zero() && requests.iter().any(|r| r.limit.is_some()) {
            let slack = crate::gcra::to_time(slack);
            if let TakeOutcome::Wait {
                key,
                cause,
                retry_at,
            } = self.store.peek_tokens(&requests, now - slack).await?
            {
                let wait = Reserve::Wait {
                    until: retry_at.map(|at| at.max(now - slack) + slack),
                    key,
                    cause,
                };
                return Ok((wait, None));
            }
        }
        let (outcome, written) = match job {
            Some((lease, update)) => {
                self.store
                    .take_tokens_writing(&requests, lease, update, now)
                    .await?
            }
            None => (self.store.take_tokens(&requests, now).await?, None),
        };
        let answer = match outcome {
            TakeOutcome::Granted => Reserve::Granted(Reservation { cost: cost.clone() }),
            TakeOutcome::Wait {
                key,
                cause,
                retry_at,
            } => Reserve::Wait {
                until: retry_at,
                key,
                cause,
            },
        };
        Ok((answer, written))
    }

    /// When [`Governor::reserve`] would grant the order (`Some(now)` if at once), without
    /// taking anything; `None` if never.
    pub async fn earliest(
        &self,
        cost: &OrderCost,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(match self.store.peek_tokens(&cost.requests(), now).await? {
            TakeOutcome::Granted => Some(now),
            TakeOutcome::Wait { retry_at, .. } => retry_at,
        })
    }

    /// Gives back what `r` took for an order that produced no certificate, by how far it
    /// `reached`: everything when the CA did not create the order (Let's Encrypt refunds
    /// the new-order token), only the certificate tokens when it did (the CA spends those
    /// at issuance).
    ///
    /// `refused_by`, the bucket a rate-limit refusal named ([`Governor::on_rate_limited`]),
    /// keeps its token: the CA's bucket frees its tokens later than ours (it counted a
    /// request we did not, or started counting when our first request arrived rather than
    /// when we took its token), and a refund would keep ours freeing them first, so every
    /// order paced after this one would meet the same refusal in turn. Kept, the token
    /// makes ours free its next one an interval later.
    pub async fn release(
        &self,
        r: &Reservation,
        reached: OrderReached,
        refused_by: Option<&BucketKey>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let back = match reached {
            OrderReached::Created => r
                .cost
                .requests_for(&[Charge::RegisteredDomain, Charge::NameSet]),
            OrderReached::NotCreated => r.cost.requests(),
        };
        let back: Vec<TokenRequest> = back
            .into_iter()
            .filter(|q| Some(&q.key) != refused_by)
            .collect();
        self.store.refund_tokens(&back, now).await
    }

    /// An authorization for `name` failed: spends a failed-authorization token (if the
    /// bucket is already empty the CA refuses new orders for the name anyway).
    pub async fn authorization_failed(
        &self,
        account: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let Some(limit) = self.limits.failed_authorizations_per_name else {
            return Ok(());
        };
        let req = TokenRequest {
            key: failed_authz_key(account, &name.to_ascii_lowercase()),
            limit: Some(limit),
            cost: 1,
            check_only: false,
        };
        self.store.take_tokens(&[req], now).await.map(|_| ())
    }

    /// The issuance-history record of a certificate just issued for `ctx`, written with
    /// the job's `issued` ([`crate::store::JobUpdate::recording`]).
    pub fn issuance(
        &self,
        ctx: &OrderContext,
        serial: &str,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> IssuanceRecord {
        IssuanceRecord {
            name_set: ctx.names.key(),
            names: ctx.names.names().to_vec(),
            account: ctx.account.clone(),
            serial: serial.to_owned(),
            issued_at: now,
            not_after,
            replaces: ctx.replaces.clone(),
        }
    }

    /// The bucket a signal pauses, for the order `ctx` that received it.
    pub fn pause_key(&self, ctx: &OrderContext, signal: &RateLimitSignal) -> BucketKey {
        match &signal.scope {
            PauseScope::AccountNewOrders => new_orders_key(&ctx.account),
            PauseScope::RegisteredDomain(d) => registered_domain_key(d),
            PauseScope::NameSet => name_set_key(&ctx.names),
            PauseScope::Name(n) => failed_authz_key(&ctx.account, n),
            PauseScope::NewRegistrations => new_registrations_key(),
            PauseScope::Endpoint(url) => endpoint_key(url),
        }
    }

    /// Pauses the scope `signal` names; returns until when (the affected job's
    /// `deferred_until`) and the paused bucket.
    pub async fn on_rate_limited(
        &self,
        ctx: &OrderContext,
        signal: &RateLimitSignal,
    ) -> Result<(OffsetDateTime, BucketKey), StoreError> {
        let key = self.pause_key(ctx, signal);
        if matches!(signal.scope, PauseScope::Endpoint(_)) {
            let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(key.clone()).or_insert(signal.until);
            *entry = (*entry).max(signal.until);
        }
        tracing::info!(scope = %key, until = %signal.until, status = signal.status, "rate limited by the CA: pausing the scope");
        self.store.pause(&key, signal.until).await?;
        Ok((signal.until, key))
    }

    /// If requests to `url`'s endpoint are paused at `now`, until when (in-memory check,
    /// for every request).
    pub fn endpoint_paused(&self, url: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let key = endpoint_key(url);
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests;
