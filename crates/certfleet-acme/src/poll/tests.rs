use reqwest::header::HeaderValue;
use time::macros::datetime;

use super::*;

#[test]
fn retry_after_delta_seconds() {
    assert_eq!(
        RetryAfter::parse("120"),
        Some(RetryAfter::Delay(Duration::from_secs(120)))
    );
    assert_eq!(
        RetryAfter::parse(" 0 "),
        Some(RetryAfter::Delay(Duration::ZERO))
    );
    assert_eq!(RetryAfter::parse("-5"), None);
    assert_eq!(RetryAfter::parse("1.5"), None);
    assert_eq!(RetryAfter::parse(""), None);
    assert_eq!(RetryAfter::parse("soon"), None);
}

#[test]
fn retry_after_http_dates() {
    let expected = datetime!(1994-11-06 08:49:37 UTC);
    // IMF-fixdate, RFC 850 and asctime (RFC 9110 §5.6.7 examples).
    for v in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(RetryAfter::parse(v), Some(RetryAfter::At(expected)), "{v}");
    }
    // Go's http.TimeFormat, as Pebble sends it.
    assert_eq!(
        RetryAfter::parse("Wed, 21 Oct 2026 07:28:00 GMT"),
        Some(RetryAfter::At(datetime!(2026-10-21 07:28:00 UTC)))
    );
    assert_eq!(RetryAfter::parse("Wed, 21 Oct 2026 07:28:00 PST"), None);
}

#[test]
fn retry_after_from_headers_and_delays() {
    let mut h = HeaderMap::new();
    assert_eq!(RetryAfter::from_headers(&h), None);
    h.insert(RETRY_AFTER, HeaderValue::from_static("30"));
    let ra = RetryAfter::from_headers(&h).expect("present");
    let now = datetime!(2026-01-01 00:00:00 UTC);
    assert_eq!(ra.delay_from(now), Duration::from_secs(30));
    assert_eq!(ra.instant_from(now), datetime!(2026-01-01 00:00:30 UTC));

    let at = RetryAfter::At(datetime!(2026-01-01 00:01:00 UTC));
    assert_eq!(at.delay_from(now), Duration::from_secs(60));
    // A date in the past means "now".
    assert_eq!(
        at.delay_from(datetime!(2026-01-01 00:05:00 UTC)),
        Duration::ZERO
    );
}

fn policy() -> PollPolicy {
    PollPolicy {
        initial: Duration::from_secs(1),
        max_interval: Duration::from_secs(10),
        max_attempts: 8,
        timeout: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(20),
    }
}

#[test]
fn backs_off_exponentially_up_to_the_cap() {
    let p = policy();
    let t0 = datetime!(2026-01-01 00:00:00 UTC);
    let delays: Vec<u64> = (0..7)
        .map(|a| {
            p.next_delay(a, None, t0, t0)
                .expect("not exhausted")
                .as_secs()
        })
        .collect();
    assert_eq!(delays, [1, 1, 2, 4, 8, 10, 10]);
}

#[test]
fn honours_retry_after_clamped() {
    let p = policy();
    let t0 = datetime!(2026-01-01 00:00:00 UTC);
    let ra = RetryAfter::Delay(Duration::from_secs(3));
    assert_eq!(
        p.next_delay(5, Some(&ra), t0, t0),
        Ok(Duration::from_secs(3)),
        "Retry-After wins over the backoff"
    );
    let long = RetryAfter::Delay(Duration::from_secs(3600));
    assert_eq!(
        p.next_delay(1, Some(&long), t0, t0),
        Ok(Duration::from_secs(20))
    );
    let date = RetryAfter::At(datetime!(2026-01-01 00:00:07 UTC));
    assert_eq!(
        p.next_delay(1, Some(&date), t0, t0),
        Ok(Duration::from_secs(7))
    );
}

#[test]
fn never_sleeps_past_the_deadline() {
    let p = policy();
    let t0 = datetime!(2026-01-01 00:00:00 UTC);
    let now = datetime!(2026-01-01 00:00:55 UTC);
    assert_eq!(p.next_delay(6, None, now, t0), Ok(Duration::from_secs(5)));
}

#[test]
fn exhausts_on_attempts_and_time() {
    let p = policy();
    let t0 = datetime!(2026-01-01 00:00:00 UTC);
    assert_eq!(
        p.next_delay(8, None, t0, t0),
        Err(PollExhausted::Attempts {
            attempts: 8,
            max_attempts: 8
        })
    );
    let late = datetime!(2026-01-01 00:01:00 UTC);
    assert_eq!(
        p.next_delay(2, None, late, t0),
        Err(PollExhausted::Timeout {
            elapsed: Duration::from_secs(60),
            timeout: Duration::from_secs(60)
        })
    );
}

fn drive(p: &PollPolicy, retry_after: Option<RetryAfter>) -> (PollExhausted, u32, Duration) {
    // A driver loop with a fake clock: the order never becomes ready.
    let t0 = datetime!(2026-01-01 00:00:00 UTC);
    let mut now = t0;
    let mut attempt = 0;
    loop {
        match p.next_delay(attempt, retry_after.as_ref(), now, t0) {
            Ok(d) => {
                now += d;
                attempt += 1;
            }
            Err(e) => {
                let elapsed = Duration::try_from(now - t0).expect("positive");
                return (e, attempt, elapsed);
            }
        }
    }
}

#[test]
fn simulated_poll_loops_terminate() {
    let p = PollPolicy::default();
    // Backoff alone: the 5 minute deadline comes first, and is hit exactly.
    let (err, _, elapsed) = drive(&p, None);
    assert!(matches!(err, PollExhausted::Timeout { .. }), "{err:?}");
    assert_eq!(elapsed, Duration::from_secs(300));
    // A server asking for 1 s each time: the attempt limit comes first.
    let (err, attempts, elapsed) = drive(&p, Some(RetryAfter::Delay(Duration::from_secs(1))));
    assert!(
        matches!(err, PollExhausted::Attempts { attempts: 60, .. }),
        "{err:?}"
    );
    assert_eq!(attempts, 60);
    assert_eq!(elapsed, Duration::from_secs(60));
}

#[test]
fn default_policy() {
    let p = PollPolicy::default();
    assert_eq!(p.initial, Duration::from_secs(1));
    assert_eq!(p.max_interval, Duration::from_secs(10));
    assert_eq!(p.max_attempts, 60);
    assert_eq!(p.timeout, Duration::from_secs(300));
}
