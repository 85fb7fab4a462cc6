//! The one polling rule of every order driver: the policy's backoff or the CA's
//! `Retry-After`, never closer than [`MIN_POLL_INTERVAL`], and one error when it runs out.

use std::time::Duration;

use certfleet_acme::{PollPolicy, RetryAfter};
use time::OffsetDateTime;

use crate::IssueError;

/// No resource is polled more often than this, whatever the policy or `Retry-After` say.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Spaces polls of one resource. Cheap to copy around with the policy.
#[derive(Clone, Debug)]
pub struct Poller {
    policy: PollPolicy,
}

impl Poller {
    pub fn new(policy: PollPolicy) -> Poller {
        Poller { policy }
    }

    pub fn policy(&self) -> &PollPolicy {
        &self.policy
    }

    /// Sleeps before poll number `attempt` (none before the first, `attempt == 0`).
    /// Fails with [`IssueError::PollTimeout`] naming `what` and `url` once the policy's
    /// attempts or time are used up.
    pub async fn pause(
        &self,
        attempt: u32,
        retry_after: Option<&RetryAfter>,
        started: OffsetDateTime,
        what: &'static str,
        url: &str,
    ) -> Result<(), IssueError> {
        if attempt == 0 {
            return Ok(());
        }
        let delay = self.delay(attempt, retry_after, started, what, url)?;
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// The delay [`Poller::pause`] sleeps (exposed for tests).
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<&RetryAfter>,
        started: OffsetDateTime,
        what: &'static str,
        url: &str,
    ) -> Result<Duration, IssueError> {
        let now = OffsetDateTime::now_utc();
        let delay = self
            .policy
            .next_delay(attempt, retry_after, now, started)
            .map_err(|_| IssueError::PollTimeout {
                what,
                url: url.to_owned(),
                attempts: attempt,
                waited_secs: u64::try_from((now - started).whole_seconds()).unwrap_or(0),
            })?;
        Ok(delay.max(MIN_POLL_INTERVAL))
    }
}

/// Waits until `t`, at most `max`: lets a request an interrupted run sent settle at the CA
/// before its outcome is looked up (the batch's lost-order search). Returns at once when
/// `t` has passed.
pub async fn settle_until(t: OffsetDateTime, max: Duration) {
    let left = t - OffsetDateTime::now_utc();
    if left.is_positive() {
        let left = Duration::try_from(left).unwrap_or(max);
        tokio::time::sleep(left.min(max)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_never_go_below_the_floor_and_exhaustion_is_one_error() {
        let poller = Poller::new(PollPolicy {
            initial: Duration::from_millis(1),
            max_interval: Duration::from_millis(2),
            max_attempts: 3,
            timeout: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(1),
        });
        let started = OffsetDateTime::now_utc();
        let d = poller
            .delay(1, None, started, "the order", "https://ca/o/1")
            .expect("within the policy");
        assert_eq!(d, MIN_POLL_INTERVAL);
        let err = poller
            .delay(3, None, started, "the order", "https://ca/o/1")
            .expect_err("attempts used up");
        assert!(
            matches!(&err, IssueError::PollTimeout { what: "the order", url, attempts: 3, .. } if url == "https://ca/o/1"),
            "{err:?}"
        );
    }
}
