use std::collections::BTreeMap;
use std::time::Duration;

use time::macros::datetime;

use super::*;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

fn s(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

fn limit(capacity: u32, secs: u64) -> Limit {
    Limit {
        capacity,
        period: Duration::from_secs(secs),
    }
}

/// Takes one token as early as possible, `n` times; returns the instants.
fn schedule(l: Limit, n: usize, start: OffsetDateTime) -> Vec<OffsetDateTime> {
    let mut tat = None;
    let mut now = start;
    let mut out = Vec::new();
    for _ in 0..n {
        now = l.earliest(tat, 1, now).expect("possible");
        tat = Some(l.take(tat, 1, now));
        out.push(now);
    }
    out
}

#[test]
fn burst_then_one_per_interval() {
    // 20 orders per 60 s: 20 at once, then one every 3 s.
    let times = schedule(limit(20, 60), 23, T0);
    assert!(times[..20].iter().all(|t| *t == T0));
    assert_eq!(&times[20..], &[T0 + s(3), T0 + s(6), T0 + s(9)]);
}

#[test]
fn letsencrypt_new_orders_schedule() {
    // 300 per 3 h = one per 36 s after the burst: order 301 at 36 s, 310 at 360 s.
    let times = schedule(limit(300, 3 * 3600), 310, T0);
    assert_eq!(times[299], T0);
    assert_eq!(times[300], T0 + s(36));
    assert_eq!(times[309], T0 + s(360));
}

#[test]
fn refill_is_continuous() {
    let l = limit(3, 60);
    let tat = Some(T0 + s(60)); // empty at T0
    assert_eq!(l.available(tat, T0), 0);
    assert_eq!(l.available(tat, T0 + s(20)), 1);
    assert_eq!(l.available(tat, T0 + s(45)), 2);
    assert_eq!(l.available(tat, T0 + s(60)), 3);
    // Two tokens at once need 40 s of refill from empty.
    assert_eq!(l.earliest(tat, 2, T0), Some(T0 + s(40)));
    assert_eq!(l.earliest(tat, 4, T0), None);
}

#[test]
fn refund_gives_tokens_back() {
    let l = limit(2, 60);
    let tat = l.take(None, 2, T0);
    assert_eq!(tat, T0 + s(60));
    let back = l.refund(Some(tat), 1, T0);
    assert_eq!(back, Some(T0 + s(30)));
    assert_eq!(l.refund(back, 1, T0), None, "full again");
}

fn req(key: &str, l: Option<Limit>, cost: u32, check_only: bool) -> TokenRequest {
    TokenRequest {
        key: BucketKey(key.into()),
        limit: l,
        cost,
        check_only,
    }
}

#[test]
fn decide_is_all_or_nothing_and_reports_the_latest_blocker() {
    let mut states = BTreeMap::new();
    states.insert(
        BucketKey("a".into()),
        BucketState {
            tat: Some(T0 + s(60)),
            paused_until: None,
        },
    );
    states.insert(
        BucketKey("b".into()),
        BucketState {
            tat: None,
            paused_until: Some(T0 + s(500)),
        },
    );
    let reqs = [
        req("a", Some(limit(3, 60)), 1, false),
        req("b", Some(limit(3, 60)), 1, false),
        req("c", Some(limit(3, 60)), 1, false),
    ];
    assert_eq!(
        decide(&reqs, &states, T0),
        Decision::Denied {
            key: BucketKey("b".into()),
            cause: DenyCause::Paused,
            retry_at: Some(T0 + s(500))
        }
    );
    let d = decide(&reqs[2..], &states, T0);
    assert_eq!(
        d,
        Decision::Granted {
            updates: vec![(BucketKey("c".into()), T0 + s(20))]
        }
    );
}

#[test]
fn check_only_requires_without_spending() {
    let mut states = BTreeMap::new();
    // 5 failures per hour, all 5 used: TAT one hour ahead.
    states.insert(
        BucketKey("f".into()),
        BucketState {
            tat: Some(T0 + s(3600)),
            paused_until: None,
        },
    );
    let r = [req("f", Some(limit(5, 3600)), 1, true)];
    assert_eq!(
        decide(&r, &states, T0),
        Decision::Denied {
            key: BucketKey("f".into()),
            cause: DenyCause::Limit,
            retry_at: Some(T0 + s(720))
        }
    );
    assert_eq!(
        decide(&r, &states, T0 + s(720)),
        Decision::Granted { updates: vec![] }
    );
}

#[test]
fn merged_costs_for_one_key() {
    let states = BTreeMap::new();
    let reqs = [
        req("k", Some(limit(2, 60)), 1, false),
        req("k", Some(limit(2, 60)), 1, false),
    ];
    assert_eq!(
        decide(&reqs, &states, T0),
        Decision::Granted {
            updates: vec![(BucketKey("k".into()), T0 + s(60))]
        }
    );
    let three = [reqs[0].clone(), reqs[0].clone(), reqs[0].clone()];
    assert!(matches!(
        decide(&three, &states, T0),
        Decision::Denied {
            cause: DenyCause::ExceedsCapacity,
            ..
        }
    ));
}
