use std::sync::Arc;
use std::time::Duration;

use certfleet_acme::{AcmeError, Problem, ProblemKind, RetryAfter};
use time::macros::datetime;

use super::*;
use crate::Preset;
use crate::gcra::Limit;
use certfleet_store_sqlite::SqliteStore;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const NEW_ORDER: &str = "https://ca.example/acme/new-order";

fn s(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

#[test]
fn registered_domains_use_private_psl_entries() {
    assert_eq!(registered_domain("www.example.com"), "example.com");
    assert_eq!(registered_domain("a.b.example.co.uk"), "example.co.uk");
    // github.io is a private suffix: each user site is its own registered domain.
    assert_eq!(registered_domain("alice.github.io"), "alice.github.io");
    assert_eq!(registered_domain("www.alice.github.io"), "alice.github.io");
    // A name that is itself a suffix counts as itself.
    assert_eq!(registered_domain("github.io"), "github.io");
    assert_eq!(registered_domain("co.uk"), "co.uk");
    assert_eq!(registered_domain("*.shop.example.com"), "example.com");
    assert_eq!(registered_domain("WWW.Example.COM."), "example.com");
    // Unknown TLDs (Pebble test names) fall under the implicit `*` rule.
    assert_eq!(registered_domain("a.b.test"), "b.test");
}

#[test]
fn name_sets_are_normalized_and_deduplicated() {
    let a = NameSet::new(["b.example.com", "A.example.com.", "a.example.com"]);
    assert_eq!(a.names(), ["a.example.com", "b.example.com"]);
    assert_eq!(a.key(), "a.example.com,b.example.com");
    assert_eq!(
        a.registered_domains().len(),
        1,
        "three names, one domain, one token"
    );
    let long = NameSet::new((0..40).map(|i| format!("host-number-{i}.example.com")));
    assert!(long.key().starts_with("sha256:") && long.key().len() == 71);
}

#[test]
fn endpoint_keys_group_resources() {
    assert_eq!(
        endpoint_key("https://ca/acme/finalize/1/2").0,
        "endpoint:https://ca/acme/finalize"
    );
    assert_eq!(
        endpoint_key("https://localhost:1/finalize-order/xyz").0,
        "endpoint:https://localhost:1/finalize-order"
    );
    assert_eq!(
        endpoint_key("https://localhost:1/order-plz").0,
        "endpoint:https://localhost:1/order-plz"
    );
}

fn rate_limited(detail: &str, retry_after: Option<RetryAfter>) -> AcmeError {
    let mut problem = Problem::new(ProblemKind::RateLimited, detail);
    problem.status = Some(429);
    AcmeError::Api {
        url: NEW_ORDER.into(),
        problem,
        retry_after,
    }
}

fn signal(detail: &str) -> RateLimitSignal {
    RateLimitSignal::from_error(
        &rate_limited(detail, Some(RetryAfter::Delay(Duration::from_secs(120)))),
        T0,
        &ReactiveDefaults::default(),
    )
    .expect("a rate-limit signal")
}

#[test]
fn letsencrypt_detail_texts_name_their_scope() {
    let cases = [
        (
            "too many new orders (300) from this account in the last 3h0m0s, retry after 2025-06-01 12:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account",
            PauseScope::AccountNewOrders,
        ),
        (
            "too many certificates (50) already issued for \"Example.com\" in the last 168h0m0s, retry after 2025-06-01 12:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-registered-domain",
            PauseScope::RegisteredDomain("example.com".into()),
        ),
        (
            "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2025-06-01 12:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-hostnames",
            PauseScope::NameSet,
        ),
        (
            "too many failed authorizations (5) for \"x.example.com\" in the last 1h0m0s, retry after 2025-06-01 12:00:00 UTC",
            PauseScope::Name("x.example.com".into()),
        ),
        (
            "too many new registrations (10) from this IP address in the last 3h0m0s",
            PauseScope::NewRegistrations,
        ),
        (
            "something we have never seen",
            PauseScope::Endpoint(NEW_ORDER.into()),
        ),
    ];
    for (detail, scope) in cases {
        let sig = signal(detail);
        assert_eq!(sig.scope, scope, "{detail}");
        assert_eq!(
            (sig.status, sig.until),
            (429, T0 + s(120)),
            "Retry-After wins"
        );
    }
}

#[test]
fn retry_time_from_detail_then_defaults() {
    let detail = "too many new orders (300) from this account in the last 3h0m0s, retry after 2026-01-01 01:30:00 UTC: see …";
    let d = ReactiveDefaults::default();
    let sig = RateLimitSignal::from_error(&rate_limited(detail, None), T0, &d).expect("signal");
    assert_eq!(sig.until, datetime!(2026-01-01 01:30 UTC));
    let sig = RateLimitSignal::from_error(&rate_limited("too many new orders (1)", None), T0, &d)
        .expect("signal");
    assert_eq!(sig.until, T0 + s(300));
    let far = RetryAfter::Delay(Duration::from_secs(400 * 86_400));
    let sig = RateLimitSignal::from_error(&rate_limited("x", Some(far)), T0, &d).expect("signal");
    assert_eq!(sig.until, T0 + s(8 * 86_400), "absurd waits are cut");
}

#[test]
fn a_503_pauses_the_endpoint_and_other_errors_pause_nothing() {
    let mut p = Problem::new(
        ProblemKind::Other("about:blank".into()),
        "Service Unavailable",
    );
    p.status = Some(503);
    let url = "https://ca.example/acme/finalize/1/2";
    let err = AcmeError::Api {
        url: url.into(),
        problem: p,
        retry_after: Some(RetryAfter::Delay(Duration::from_secs(7))),
    };
    let sig = RateLimitSignal::from_error(&err, T0, &ReactiveDefaults::default()).expect("signal");
    assert_eq!(
        (sig.scope, sig.status, sig.until),
        (PauseScope::Endpoint(url.into()), 503, T0 + s(7))
    );
    let mut bad = Problem::new(ProblemKind::Malformed, "no");
    bad.status = Some(400);
    let err = AcmeError::Api {
        url: url.into(),
        problem: bad,
        retry_after: None,
    };
    assert_eq!(
        RateLimitSignal::from_error(&err, T0, &ReactiveDefaults::default()),
        None
    );
}

async fn governor(limits: Limits) -> (Governor, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open");
    (
        Governor::new(Arc::new(store), limits).with_grant_slack(Duration::ZERO),
        dir,
    )
}

/// A governor with the default slack (500 ms) over a new-order limit of `capacity` per 60 s.
async fn slack_governor(capacity: u32) -> (Governor, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open");
    let limits = Limits {
        new_orders_per_account: Some(Limit {
            capacity,
            period: Duration::from_secs(60),
        }),
        ..Limits::preset(Preset::None)
    };
    let g = Governor::new(Arc::new(store), limits).with_grant_slack(GRANT_SLACK);
    (g, dir)
}

/// The cost of one order for `a.example.org` at `t`.
async fn order_cost_at(g: &Governor, t: OffsetDateTime) -> OrderCost {
    let ctx = OrderContext::new("acct", ["a.example.org"]);
    g.order_cost(&ctx, NEW_ORDER, t).await.expect("cost")
}

/// A grant keeps its slack from the boundary: the token the bucket frees at `t` goes at
/// `t + slack`, never a moment earlier, while the rate stays the bucket's.
#[tokio::test]
async fn grants_keep_their_slack_from_the_boundary() {
    let (g, _dir) = slack_governor(2).await;
    let cost_at = |t| order_cost_at(&g, t);
    let first = g.reserve(&cost_at(T0).await, T0).await.expect("reserve");
    assert!(matches!(first, Reserve::Granted(_)), "{first:?}");
    // The second token of the burst is 0.5 s of slack away from the first.
    let until = match g.reserve(&cost_at(T0).await, T0).await.expect("reserve") {
        Reserve::Wait { until, .. } => until.expect("some time"),
        other => panic!("{other:?}"),
    };
    assert_eq!(until, T0 + time::Duration::milliseconds(500));
    let second = g
        .reserve(&cost_at(until).await, until)
        .await
        .expect("reserve");
    assert!(matches!(second, Reserve::Granted(_)), "{second:?}");
    // The bucket frees its next token 30 s after the first grant; the grant comes 0.5 s
    // after that, not before.
    let boundary = T0 + s(30);
    let early = boundary + time::Duration::milliseconds(499);
    match g
        .reserve(&cost_at(early).await, early)
        .await
        .expect("reserve")
    {
        Reserve::Wait { until, .. } => {
            assert_eq!(until, Some(boundary + time::Duration::milliseconds(500)));
        }
        other => panic!("granted inside the slack: {other:?}"),
    }
    let on_time = boundary + time::Duration::milliseconds(500);
    let third = g
        .reserve(&cost_at(on_time).await, on_time)
        .await
        .expect("reserve");
    assert!(matches!(third, Reserve::Granted(_)), "{third:?}");
}

/// A newOrder answered late widens the slack to that answer time: the CA whose bucket was
/// full counted from the late arrival, so the next paced grant waits as long past our
/// boundary. The slack never shrinks within the run, is capped, and zero stays zero.
#[tokio::test]
async fn a_late_order_answer_widens_the_slack() {
    let (g, _dir) = slack_governor(1).await;
    let cost_at = |t| order_cost_at(&g, t);
    let first = g.reserve(&cost_at(T0).await, T0).await.expect("reserve");
    assert!(matches!(first, Reserve::Granted(_)), "{first:?}");
    g.note_order_answered(Duration::from_millis(300));
    assert_eq!(
        g.grant_slack(),
        Duration::from_millis(500),
        "faster than the floor"
    );
    g.note_order_answered(Duration::from_millis(2_000));
    g.note_order_answered(Duration::from_millis(700));
    assert_eq!(
        g.grant_slack(),
        Duration::from_secs(2),
        "the slowest answer counts"
    );
    // The bucket frees its token 60 s after the first grant; the grant comes 2 s later.
    let boundary = T0 + s(60);
    let early = boundary + time::Duration::milliseconds(1_999);
    match g
        .reserve(&cost_at(early).await, early)
        .await
        .expect("reserve")
    {
        Reserve::Wait { until, .. } => assert_eq!(until, Some(boundary + s(2))),
        other => panic!("granted inside the widened slack: {other:?}"),
    }
    let on_time = boundary + s(2);
    let second = g
        .reserve(&cost_at(on_time).await, on_time)
        .await
        .expect("reserve");
    assert!(matches!(second, Reserve::Granted(_)), "{second:?}");
    g.note_order_answered(Duration::from_secs(600));
    assert_eq!(g.grant_slack(), MAX_GRANT_SLACK);
    let (exact, _dir) = governor(Limits::preset(Preset::None)).await;
    exact.note_order_answered(Duration::from_secs(5));
    assert_eq!(
        exact.grant_slack(),
        Duration::ZERO,
        "a zero slack stays exact"
    );
}

fn small_limits() -> Limits {
    Limits {
        new_orders_per_account: Some(Limit {
            capacity: 20,
            period: Duration::from_secs(60),
        }),
        certificates_per_registered_domain: Some(Limit {
            capacity: 3,
            period: Duration::from_secs(60),
        }),
        certificates_per_name_set: Some(Limit {
            capacity: 5,
            period: Duration::from_secs(600),
        }),
        failed_authorizations_per_name: Some(Limit {
            capacity: 2,
            period: Duration::from_secs(3600),
        }),
        ..Limits::preset(Preset::None)
    }
}

#[tokio::test]
async fn jobs_wait_for_their_domain_tokens_while_others_go() {
    let (g, _dir) = governor(small_limits()).await;
    for i in 0..3 {
        let ctx = OrderContext::new(
            "acct",
            [
                format!("h{i}.busy.example"),
                format!("www.h{i}.busy.example"),
            ],
        );
        let cost = g.order_cost(&ctx, NEW_ORDER, T0).await.expect("cost");
        assert!(
            matches!(
                g.reserve(&cost, T0).await.expect("reserve"),
                Reserve::Granted(_)
            ),
            "{i}"
        );
    }
    let ctx = OrderContext::new("acct", ["h3.busy.example"]);
    let cost = g.order_cost(&ctx, NEW_ORDER, T0).await.expect("cost");
    assert_eq!(g.earliest(&cost, T0).await.expect("peek"), Some(T0 + s(20)));
    match g.reserve(&cost, T0).await.expect("reserve") {
        Reserve::Wait { until, key, cause } => {
            assert_eq!(
                (until, key, cause),
                (
                    Some(T0 + s(20)),
                    registered_domain_key("busy.example"),
                    DenyCause::Limit
                )
            );
        }
        other => panic!("expected a wait, got {other:?}"),
    }
    let other = OrderContext::new("acct", ["www.calm.example"]);
    let cost = g.order_cost(&other, NEW_ORDER, T0).await.expect("cost");
    assert!(matches!(
        g.reserve(&cost, T0).await.expect("reserve"),
        Reserve::Granted(_)
    ));
}

#[tokio::test]
async fn rate_limit_pauses_only_its_scope() {
    let (g, _dir) = governor(Limits::preset(Preset::None)).await;
    let ctx = OrderContext::new("acct", ["a.limited.example"]);
    let sig =
        signal("too many certificates (3) already issued for \"limited.example\" in the last 1m0s");
    assert_eq!(
        g.on_rate_limited(&ctx, &sig).await.expect("pause"),
        (T0 + s(120), registered_domain_key("limited.example"))
    );
    let same_domain = OrderContext::new("acct", ["b.limited.example"]);
    let cost = g
        .order_cost(&same_domain, NEW_ORDER, T0)
        .await
        .expect("cost");
    assert!(
        matches!(g.reserve(&cost, T0 + s(1)).await.expect("reserve"), Reserve::Wait { until: Some(t), cause: DenyCause::Paused, .. } if t == T0 + s(120))
    );
    let other = OrderContext::new("acct", ["b.free.example"]);
    let cost = g.order_cost(&other, NEW_ORDER, T0).await.expect("cost");
    assert!(matches!(
        g.reserve(&cost, T0 + s(1)).await.expect("reserve"),
        Reserve::Granted(_)
    ));
    // A 503 on finalize pauses finalize requests, checked in memory.
    let mut p = Problem::new(ProblemKind::Other("about:blank".into()), "busy");
    p.status = Some(503);
    let fin = "https://ca.example/acme/finalize/1/9";
    let err = AcmeError::Api {
        url: fin.into(),
        problem: p,
        retry_after: Some(RetryAfter::Delay(Duration::from_secs(5))),
    };
    let sig = RateLimitSignal::from_error(&err, T0, g.reactive_defaults()).expect("signal");
    g.on_rate_limited(&ctx, &sig).await.expect("pause");
    assert_eq!(
        g.endpoint_paused("https://ca.example/acme/finalize/1/10", T0 + s(1)),
        Some(T0 + s(5))
    );
    assert_eq!(g.endpoint_paused(NEW_ORDER, T0 + s(1)), None);
    assert_eq!(g.endpoint_paused(fin, T0 + s(5)), None);
}

#[tokio::test]
async fn renewals_are_exempt_where_the_ca_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(dir.path()).await.expect("open"));
    let g = Governor::new(store.clone(), Limits::preset(Preset::LetsEncrypt))
        .with_grant_slack(Duration::ZERO);
    let mut ari = OrderContext::new("acct", ["www.example.com"]);
    ari.replaces = Some("aki.serial".into());
    ari.in_renewal_window = true;
    let cost = g.order_cost(&ari, NEW_ORDER, T0).await.expect("cost");
    assert_eq!(cost.exemption, Some(Exemption::AriRenewal));
    assert!(
        cost.charges
            .iter()
            .all(|(c, _)| *c == Charge::EndpointPause)
    );
    ari.in_renewal_window = false;
    let cost = g.order_cost(&ari, NEW_ORDER, T0).await.expect("cost");
    assert_eq!(cost.exemption, None, "outside the window: no exemption");
    // What the job driver writes with `issued`.
    store
        .record_issuance(&g.issuance(&ari, "01", T0 + s(86_400 * 90), T0))
        .await
        .expect("record");
    let cost = g
        .order_cost(&ari, NEW_ORDER, T0 + s(86_400 * 60))
        .await
        .expect("cost");
    assert_eq!(cost.exemption, Some(Exemption::SameSetRenewal));
    let kinds: Vec<Charge> = cost.charges.iter().map(|(c, _)| *c).collect();
    assert!(!kinds.contains(&Charge::NewOrder) && !kinds.contains(&Charge::RegisteredDomain));
    assert!(kinds.contains(&Charge::NameSet));
    let cost = g
        .order_cost(&ari, NEW_ORDER, T0 + s(86_400 * 121))
        .await
        .expect("cost");
    assert_eq!(cost.exemption, None, "past 120 days");
}

#[tokio::test]
async fn refunds_and_failed_authorizations() {
    let (g, _dir) = governor(small_limits()).await;
    let ctx = OrderContext::new("acct", ["a.one.example"]);
    let mut reservations = Vec::new();
    for _ in 0..3 {
        let cost = g.order_cost(&ctx, NEW_ORDER, T0).await.expect("cost");
        match g.reserve(&cost, T0).await.expect("reserve") {
            Reserve::Granted(r) => reservations.push(r),
            other => panic!("{other:?}"),
        }
    }
    let cost = g.order_cost(&ctx, NEW_ORDER, T0).await.expect("cost");
    assert!(matches!(
        g.reserve(&cost, T0).await.expect("reserve"),
        Reserve::Wait { .. }
    ));
    g.release(&reservations[0], OrderReached::Created, None, T0)
        .await
        .expect("refund");
    assert!(matches!(
        g.reserve(&cost, T0).await.expect("reserve"),
        Reserve::Granted(_)
    ));
    // Two failed authorizations (the limit) block the name for 30 min (3600 s / 2).
    g.authorization_failed("acct", "bad.two.example", T0)
        .await
        .expect("fail 1");
    g.authorization_failed("acct", "bad.two.example", T0)
        .await
        .expect("fail 2");
    let bad = OrderContext::new("acct", ["bad.two.example"]);
    let cost = g.order_cost(&bad, NEW_ORDER, T0).await.expect("cost");
    assert_eq!(
        g.earliest(&cost, T0).await.expect("peek"),
        Some(T0 + s(1800))
    );
}

/// The CA's new-order bucket frees its tokens a second later than ours (its count started
/// when the burst's first request arrived, a second after we took the tokens). One paced
/// order meets a 429; the refused token stays spent, so the orders after it are paced
/// behind the CA's bucket instead of each meeting the same refusal (a refund would keep
/// ours freeing tokens first).
#[tokio::test]
async fn one_refusal_realigns_a_bucket_that_frees_tokens_before_the_cas() {
    let limit = Limit {
        capacity: 20,
        period: Duration::from_secs(60),
    };
    let (g, _dir) = governor(Limits {
        new_orders_per_account: Some(limit),
        ..Limits::preset(Preset::None)
    })
    .await;
    let ctx = OrderContext::new("acct", ["a.example.org"]);
    let (mut ca_tat, mut created, mut refusals) = (None, 0, 0);
    let mut t = T0;
    for _ in 0..100 {
        let cost = g.order_cost(&ctx, NEW_ORDER, t).await.expect("cost");
        let r = match g.reserve(&cost, t).await.expect("reserve") {
            Reserve::Granted(r) => r,
            Reserve::Wait { until, .. } => {
                t = until.expect("a time");
                continue;
            }
        };
        // The burst reaches the CA a second after its grants; paced orders at once.
        let arrival = if created < 20 { T0 + s(1) } else { t };
        let ca_at = limit.earliest(ca_tat, 1, arrival).expect("fits");
        if ca_at <= arrival {
            ca_tat = Some(limit.take(ca_tat, 1, arrival));
            created += 1;
            if created == 32 {
                break;
            }
            continue;
        }
        refusals += 1;
        let wait = (ca_at - arrival).as_seconds_f64().ceil() as u64;
        let err = rate_limited(
            "too many new orders (20) from this account in the last 1m0s",
            Some(RetryAfter::Delay(Duration::from_secs(wait))),
        );
        let sig = RateLimitSignal::from_error(&err, arrival, g.reactive_defaults()).expect("429");
        let (_, paused) = g.on_rate_limited(&ctx, &sig).await.expect("pause");
        assert_eq!(paused, new_orders_key("acct"));
        g.release(&r, OrderReached::NotCreated, Some(&paused), arrival)
            .await
            .expect("release");
    }
    assert_eq!(created, 32, "every order created within the loop's bound");
    assert_eq!(refusals, 1, "one refusal realigns the bucket");
}
