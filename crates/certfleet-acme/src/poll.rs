//! Polling without sleeping: [`RetryAfter`] from the server and [`PollPolicy`] that turns
//! it (or exponential backoff) into the next delay. The caller owns the clock and the
//! sleep, so both are testable.
//!
//! RFC 8555 §7.5.1 and §7.4: clients poll orders and authorizations and SHOULD honour
//! `Retry-After` ([RFC 9110 §10.2.3](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3)).

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// A `Retry-After` value: delta-seconds or an HTTP-date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    Delay(Duration),
    At(OffsetDateTime),
}

const IMF_FIXDATE: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);
const RFC850_AS_FIXDATE: &[FormatItem<'static>] = format_description!(
    "[weekday repr:long], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);
const ASCTIME: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
);

impl RetryAfter {
    /// Parses a header value: `120` or `Fri, 31 Dec 1999 23:59:59 GMT` (also the obsolete
    /// RFC 850 and asctime forms RFC 9110 §5.6.7 requires recipients to accept).
    pub fn parse(value: &str) -> Option<RetryAfter> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Absurd values saturate rather than fail: the policy clamps them anyway.
            let secs = value.parse::<u64>().unwrap_or(u64::MAX);
            return Some(RetryAfter::Delay(Duration::from_secs(secs)));
        }
        parse_http_date(value).map(RetryAfter::At)
    }

    /// The `Retry-After` header of a response, if present and valid.
    pub fn from_headers(headers: &HeaderMap) -> Option<RetryAfter> {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(RetryAfter::parse)
    }

    /// How long to wait from `now` (zero for a date in the past).
    pub fn delay_from(&self, now: OffsetDateTime) -> Duration {
        match *self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(at) => Duration::try_from(at - now).unwrap_or(Duration::ZERO),
        }
    }

    /// The instant to retry at, relative to `now`.
    pub fn instant_from(&self, now: OffsetDateTime) -> OffsetDateTime {
        match *self {
            RetryAfter::Delay(d) => now.saturating_add(time_duration(d)),
            RetryAfter::At(at) => at,
        }
    }
}

fn time_duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    if let Ok(dt) = PrimitiveDateTime::parse(value, IMF_FIXDATE) {
        return Some(dt.assume_utc());
    }
    if let Ok(dt) = PrimitiveDateTime::parse(value, ASCTIME) {
        return Some(dt.assume_utc());
    }
    // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT". Two-digit years are read as the year
    // within 50 years of 2000 (RFC 9110 §5.6.7 asks for "the most recent year in the past
    // that had the same last two digits"; certificates do not predate 1950).
    let (weekday, rest) = value.split_once(", ")?;
    let (date, time_part) = rest.split_once(' ')?;
    let mut parts = date.split('-');
    let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 2 {
        return None;
    }
    let yy: u32 = year.parse().ok()?;
    let full = if yy >= 50 { 1900 + yy } else { 2000 + yy };
    let rebuilt = format!("{weekday}, {day} {month} {full} {time_part}");
    PrimitiveDateTime::parse(&rebuilt, RFC850_AS_FIXDATE)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Why polling stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PollExhausted {
    #[error("gave up after {attempts} polls (the limit is {max_attempts})")]
    Attempts { attempts: u32, max_attempts: u32 },
    #[error("gave up after {elapsed:?} (the limit is {timeout:?})")]
    Timeout {
        elapsed: Duration,
        timeout: Duration,
    },
}

/// How to space polls of an order, authorization or challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollPolicy {
    /// First backoff delay (default 1 s), doubled per attempt.
    pub initial: Duration,
    /// Cap on the backoff delay (default 10 s).
    pub max_interval: Duration,
    /// Polls allowed (default 60).
    pub max_attempts: u32,
    /// Time allowed since the first poll (default 5 min).
    pub timeout: Duration,
    /// Cap on a server's `Retry-After` (default 60 s).
    pub max_retry_after: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
            max_attempts: 60,
            timeout: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl PollPolicy {
    /// The delay before the next poll.
    ///
    /// `attempt` is the number of polls made so far, `started` when polling began. A
    /// `Retry-After` is honoured, clamped to [`max_retry_after`](Self::max_retry_after);
    /// otherwise the delay is `initial * 2^(attempt-1)` capped at `max_interval`. A delay
    /// never runs past the deadline, so the last poll happens at it. Errs once `attempt`
    /// reaches `max_attempts` or the deadline has passed.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<&RetryAfter>,
        now: OffsetDateTime,
        started: OffsetDateTime,
    ) -> Result<Duration, PollExhausted> {
        if attempt >= self.max_attempts {
            return Err(PollExhausted::Attempts {
                attempts: attempt,
                max_attempts: self.max_attempts,
            });
        }
        let elapsed = Duration::try_from(now - started).unwrap_or(Duration::ZERO);
        if elapsed >= self.timeout {
            return Err(PollExhausted::Timeout {
                elapsed,
                timeout: self.timeout,
            });
        }
        let delay = match retry_after {
            Some(ra) => ra.delay_from(now).min(self.max_retry_after),
            None => self.backoff(attempt),
        };
        Ok(delay.min(self.timeout - elapsed))
    }

    /// `initial * 2^(attempt-1)`, capped at `max_interval`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max_interval)
            .min(self.max_interval)
    }
}

#[cfg(test)]
mod tests;
