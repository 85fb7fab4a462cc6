//! Reactive side: turn a `rateLimited` 429 or a 503 into the scope it pauses and until
//! when, from `Retry-After` and Let's Encrypt's detail texts (spec-notes §1):
//!
//! | detail starts with | scope |
//! |---|---|
//! | `too many new orders (N) from this account` | the account's new orders |
//! | `too many certificates (N) already issued for "D"` | registered domain `D` |
//! | `too many certificates (N) already issued for this exact set of identifiers` | the order's name set |
//! | `too many failed authorizations (N) for "X"` | name `X` (this account) |
//! | `too many new registrations (N) from this IP address` | new registrations |
//! | anything else, or a 503 | the endpoint of the request |

use std::time::Duration;

use certfleet_acme::{AcmeError, Problem, ProblemKind, RetryAfter};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// What a rate-limit answer pauses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PauseScope {
    /// New orders of the account that sent the request.
    AccountNewOrders,
    /// Certificates of one registered domain.
    RegisteredDomain(String),
    /// Certificates of the request's exact name set.
    NameSet,
    /// Orders including this name (failed authorizations).
    Name(String),
    /// New accounts.
    NewRegistrations,
    /// Every request to this endpoint (`endpoint_key` of the URL).
    Endpoint(String),
}

/// A parsed rate-limit or unavailability answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitSignal {
    pub scope: PauseScope,
    /// Do not retry the scope before this.
    pub until: OffsetDateTime,
    /// HTTP status (429 or 503).
    pub status: u16,
    pub detail: String,
}

/// Fallback waits when the CA gives no time, and the longest wait honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReactiveDefaults {
    /// A 503 without `Retry-After` (Let's Encrypt always sends one; 60 s on a 500).
    pub unavailable: Duration,
    /// A 429 with neither `Retry-After` nor a "retry after" time in its detail.
    pub rate_limited: Duration,
    /// Longer waits are cut to this (a bad header must not park a job for a year).
    pub max_wait: Duration,
}

impl Default for ReactiveDefaults {
    fn default() -> Self {
        ReactiveDefaults {
            unavailable: Duration::from_secs(60),
            rate_limited: Duration::from_secs(300),
            max_wait: Duration::from_secs(8 * 24 * 3600),
        }
    }
}

impl RateLimitSignal {
    /// The signal an ACME error carries, if it is a `rateLimited` problem (or a 429) or a
    /// 503; `None` for every other error.
    pub fn from_error(
        err: &AcmeError,
        now: OffsetDateTime,
        defaults: &ReactiveDefaults,
    ) -> Option<RateLimitSignal> {
        match err {
            AcmeError::Api {
                url,
                problem,
                retry_after,
            } => RateLimitSignal::from_problem(url, problem, retry_after.as_ref(), now, defaults),
            _ => None,
        }
    }

    /// The signal of a problem answer to a request for `url`.
    pub fn from_problem(
        url: &str,
        problem: &Problem,
        retry_after: Option<&RetryAfter>,
        now: OffsetDateTime,
        defaults: &ReactiveDefaults,
    ) -> Option<RateLimitSignal> {
        let status = problem.status.unwrap_or(0);
        let limited = problem.is(&ProblemKind::RateLimited) || status == 429;
        if !limited && status != 503 {
            return None;
        }
        let detail = problem.detail.clone().unwrap_or_default();
        let scope = if limited {
            scope_of(&detail).unwrap_or_else(|| PauseScope::Endpoint(url.to_owned()))
        } else {
            PauseScope::Endpoint(url.to_owned())
        };
        let fallback = if limited {
            retry_after_in_detail(&detail).unwrap_or(now + to_time(defaults.rate_limited))
        } else {
            now + to_time(defaults.unavailable)
        };
        let until = retry_after
            .map(|r| r.instant_from(now))
            .unwrap_or(fallback)
            .clamp(now, now + to_time(defaults.max_wait));
        Some(RateLimitSignal {
            scope,
            until,
            status: if limited { 429 } else { 503 },
            detail,
        })
    }
}

fn to_time(d: Duration) -> time::Duration {
    crate::gcra::to_time(d)
}

/// The scope named by one of Let's Encrypt's detail texts.
pub fn scope_of(detail: &str) -> Option<PauseScope> {
    let d = detail.trim();
    let rest = d.strip_prefix("too many ")?;
    if rest.starts_with("new orders") {
        return Some(PauseScope::AccountNewOrders);
    }
    if rest.starts_with("new registrations") {
        return Some(PauseScope::NewRegistrations);
    }
    if let Some(after) = rest.strip_prefix("certificates") {
        let after = skip_count(after);
        let target = after.strip_prefix("already issued for ")?;
        if target.starts_with("this exact set") {
            return Some(PauseScope::NameSet);
        }
        return quoted(target).map(|d| PauseScope::RegisteredDomain(d.to_ascii_lowercase()));
    }
    if let Some(after) = rest.strip_prefix("failed authorizations") {
        let target = skip_count(after).strip_prefix("for ")?;
        return quoted(target).map(|n| PauseScope::Name(n.to_ascii_lowercase()));
    }
    None
}

/// Skips ` (N) ` after a noun.
fn skip_count(s: &str) -> &str {
    let s = s.trim_start();
    match s.strip_prefix('(').and_then(|r| r.split_once(')')) {
        Some((_, rest)) => rest.trim_start(),
        None => s,
    }
}

/// The text between the first pair of double quotes at the start of `s`.
fn quoted(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('"')?;
    inner
        .split_once('"')
        .map(|(q, _)| q)
        .filter(|q| !q.is_empty())
}

/// The `retry after 2025-06-01 12:00:00 UTC` time in a detail text.
pub fn retry_after_in_detail(detail: &str) -> Option<OffsetDateTime> {
    let (_, rest) = detail.split_once("retry after ")?;
    let stamp = rest.get(..19)?;
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(stamp, fmt)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}
