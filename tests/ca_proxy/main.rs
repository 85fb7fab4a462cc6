//! The CA test double against a real Pebble: limits answered as Let's Encrypt answers them,
//! 503 injection, renewalInfo and profiles in the directory, counters.

use std::sync::Arc;
use std::time::Duration;

use certfleet_acme::{
    AcmeClient, AcmeError, ClientConfig, NewAccount, NewOrder, PollPolicy, ProblemKind, RetryAfter,
};
use certfleet_batch::governor::{PauseScope, RateLimitSignal, ReactiveDefaults};
use certfleet_issue::{
    CertificateRequest, ChallengeSolvers, ExistingKey, IssuedCertificate, Issuer,
};
use certfleet_keys::file::FileKey;
use certfleet_keys::{KeyAlgorithm, SigningKey};
use certfleet_testenv::{
    CaProxy, CaProxyOptions, LimitSpec, Pebble, PebbleOptions, ProxyLimits, require_tool,
};
use time::OffsetDateTime;

struct Env {
    // Dropped in order: the proxy before Pebble.
    proxy: CaProxy,
    pebble: Pebble,
    dir: tempfile::TempDir,
}

async fn env(options: CaProxyOptions) -> Option<Env> {
    if !require_tool("pebble", "pebble") {
        return None;
    }
    let pebble = Pebble::start(PebbleOptions::default().nonce_reject(0).always_valid(true))
        .await
        .expect("pebble");
    let proxy = CaProxy::start(&pebble, options).await.expect("proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    Some(Env { proxy, pebble, dir })
}

impl Env {
    async fn client(&self) -> AcmeClient {
        let root = std::fs::read(self.pebble.tls_root_pem_path()).expect("root");
        let config = ClientConfig {
            extra_roots_pem: vec![root],
            only_extra_roots: true,
            ..ClientConfig::default()
        };
        AcmeClient::connect(&self.proxy.directory_url(), config)
            .await
            .expect("connect through the proxy")
    }

    async fn account(&self, client: &AcmeClient, name: &str) -> certfleet_acme::Account {
        let key =
            FileKey::generate(KeyAlgorithm::EcP256, &self.dir.path().join(name)).expect("key");
        let new = NewAccount {
            terms_of_service_agreed: true,
            ..NewAccount::default()
        };
        client
            .new_account(Arc::new(key) as Arc<dyn SigningKey>, &new)
            .await
            .expect("account")
    }

    async fn issuer(&self, account: certfleet_acme::Account) -> Issuer {
        let server = certfleet_http01::StandaloneServer::bind(
            ([127, 0, 0, 1], self.pebble.http01_port()).into(),
        )
        .await
        .expect("http-01 server");
        Issuer::new(
            account,
            ChallengeSolvers::http01(Arc::new(server)),
            PollPolicy::default(),
        )
    }

    async fn issue(
        &self,
        issuer: &Issuer,
        names: &[&str],
    ) -> Result<IssuedCertificate, certfleet_issue::IssueError> {
        let path = self.dir.path().join(format!("{}.pem", names[0]));
        let key = FileKey::generate(KeyAlgorithm::EcP256, &path).expect("cert key");
        issuer
            .issue(
                &CertificateRequest {
                    names: names.iter().map(|n| (*n).to_owned()).collect(),
                    profile: None,
                    replaces: None,
                    preferred_chain: None,
                },
                &mut ExistingKey(Arc::new(key)),
            )
            .await
    }
}

fn rate_limited(err: &AcmeError) -> (String, Duration) {
    match err {
        AcmeError::Api {
            problem,
            retry_after,
            ..
        } => {
            assert_eq!(problem.kind, ProblemKind::RateLimited, "{err}");
            assert_eq!(problem.status, Some(429));
            let wait = match retry_after {
                Some(RetryAfter::Delay(d)) => *d,
                other => panic!("expected Retry-After seconds, got {other:?}"),
            };
            (problem.detail.clone().unwrap_or_default(), wait)
        }
        other => panic!("expected a 429 problem, got {other}"),
    }
}

#[tokio::test]
async fn new_orders_are_limited_per_account_like_letsencrypt() {
    let mut options = CaProxyOptions::default();
    options.limits.new_orders_per_account = Some(LimitSpec::new(3, Duration::from_secs(60)));
    let Some(env) = env(options).await else {
        return;
    };
    let client = env.client().await;
    let account = env.account(&client, "acct.pem").await;
    for i in 0..3 {
        account
            .new_order(&NewOrder::dns([format!("o{i}.limits.test")]))
            .await
            .expect("within the limit");
    }
    let err = account
        .new_order(&NewOrder::dns(["o3.limits.test"]))
        .await
        .expect_err("the fourth order is over the limit");
    let (detail, wait) = rate_limited(&err);
    assert!(
        detail.starts_with(
            "too many new orders (3) from this account in the last 1m0s, retry after "
        ),
        "{detail}"
    );
    assert!(
        detail.ends_with("see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account"),
        "{detail}"
    );
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(20)).contains(&wait),
        "{wait:?}"
    );
    // The governor reads the answer as a pause of this account's new orders.
    let now = OffsetDateTime::now_utc();
    let signal =
        RateLimitSignal::from_error(&err, now, &ReactiveDefaults::default()).expect("signal");
    assert_eq!(signal.scope, PauseScope::AccountNewOrders);
    // The 429 carried a fresh nonce: the account keeps working (another account is not
    // limited, and this one can still read its orders).
    let other = env.account(&client, "acct2.pem").await;
    other
        .new_order(&NewOrder::dns(["p0.limits.test"]))
        .await
        .expect("another account is not limited");
    let stats = env.proxy.stats();
    assert_eq!(stats.new_orders, 4);
    assert_eq!(stats.rate_limited.get("new-orders-per-account"), Some(&1));
    assert_eq!(stats.requests_to("order-plz"), 5);
    assert_eq!(stats.rate_limited_total(), 1);
}

#[tokio::test]
async fn certificates_per_registered_domain_and_finalization_counts() {
    let options = CaProxyOptions {
        limits: ProxyLimits {
            certificates_per_registered_domain: Some(LimitSpec::new(1, Duration::from_secs(600))),
            ..ProxyLimits::default()
        },
        ..CaProxyOptions::default()
    };
    let Some(env) = env(options).await else {
        return;
    };
    let client = env.client().await;
    let issuer = env.issuer(env.account(&client, "acct.pem").await).await;
    env.issue(&issuer, &["www.shop.test", "shop.test"])
        .await
        .expect("first certificate");
    let err = env
        .issue(&issuer, &["api.shop.test"])
        .await
        .expect_err("domain spent");
    let acme = match &err {
        certfleet_issue::IssueError::Acme(e) => e,
        other => panic!("expected an ACME error, got {other}"),
    };
    let (detail, _) = rate_limited(acme);
    assert!(
        detail.starts_with(
            "too many certificates (1) already issued for \"shop.test\" in the last 10m0s"
        ),
        "{detail}"
    );
    let signal = RateLimitSignal::from_error(
        acme,
        OffsetDateTime::now_utc(),
        &ReactiveDefaults::default(),
    )
    .expect("signal");
    assert_eq!(
        signal.scope,
        PauseScope::RegisteredDomain("shop.test".into())
    );
    // Other registered domains (including private-suffix ones) keep issuing.
    env.issue(&issuer, &["www.other.test"])
        .await
        .expect("other domain");
    let stats = env.proxy.stats();
    assert_eq!(stats.finalizations.get("shop.test,www.shop.test"), Some(&1));
    assert_eq!(stats.finalizations.get("www.other.test"), Some(&1));
    assert_eq!(stats.finalizations.len(), 2);
    assert_eq!(
        stats.rate_limited.get("certificates-per-registered-domain"),
        Some(&1)
    );
    assert_eq!(stats.requests_to("finalize-order"), 2);
}

#[tokio::test]
async fn injected_503s_carry_retry_after() {
    let options = CaProxyOptions {
        unavailable_retry_after: Duration::from_secs(7),
        ..CaProxyOptions::default()
    };
    let Some(env) = env(options).await else {
        return;
    };
    let client = env.client().await;
    let account = env.account(&client, "acct.pem").await;
    env.proxy.set_unavailable_rate(1.0);
    let err = account
        .new_order(&NewOrder::dns(["x.busy.test"]))
        .await
        .expect_err("every request is refused");
    let signal = RateLimitSignal::from_error(
        &err,
        OffsetDateTime::now_utc(),
        &ReactiveDefaults::default(),
    )
    .expect("a 503 is a signal");
    assert_eq!(signal.status, 503);
    assert!(matches!(signal.scope, PauseScope::Endpoint(_)));
    assert_eq!(
        err.retry_after(),
        Some(&RetryAfter::Delay(Duration::from_secs(7)))
    );
    env.proxy.set_unavailable_rate(0.0);
    account
        .new_order(&NewOrder::dns(["x.busy.test"]))
        .await
        .expect("works again");
    let stats = env.proxy.stats();
    assert!(stats.injected_unavailable >= 1);
    assert_eq!(stats.new_orders, 1);
}

#[tokio::test]
async fn renewal_info_and_profiles_in_the_directory() {
    let mut options = CaProxyOptions::default();
    options.profiles.insert("classic".into(), "90 days".into());
    options
        .profiles
        .insert("shortlived".into(), "160 hours".into());
    let Some(env) = env(options).await else {
        return;
    };
    let client = env.client().await;
    let dir = client.directory();
    assert!(dir.supports_ari(), "renewalInfo added");
    assert!(dir.has_profile("shortlived") && dir.has_profile("classic"));
    assert!(
        dir.new_order
            .starts_with(&env.proxy.directory_url().replace("/dir", "")),
        "URLs point at the proxy: {}",
        dir.new_order
    );
    let account = env.account(&client, "acct.pem").await;
    let issuer = env.issuer(account.clone()).await;
    let issued = env
        .issue(&issuer, &["ari.renew.test"])
        .await
        .expect("issued");
    let cert_id = issued.cert_id.expect("CertID");
    let start = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let end = start + time::Duration::hours(1);
    env.proxy.set_renewal_window(cert_id.as_str(), start, end);
    let info = client
        .renewal_info(&cert_id)
        .await
        .expect("renewalInfo served");
    assert_eq!(info.window.start.unix_timestamp(), start.unix_timestamp());
    assert_eq!(info.window.end.unix_timestamp(), end.unix_timestamp());
    assert_eq!(
        info.retry_after,
        Some(RetryAfter::Delay(Duration::from_secs(6 * 3600)))
    );
    // An unknown profile is refused like Let's Encrypt does; `replaces` is recorded.
    let mut bad = NewOrder::dns(["p.renew.test"]);
    bad.profile = Some("tlsclient".into());
    let err = account.new_order(&bad).await.expect_err("unknown profile");
    assert_eq!(
        err.problem_kind(),
        Some(&ProblemKind::InvalidProfile),
        "{err}"
    );
    let mut renewal = NewOrder::dns(["ari.renew.test"]);
    renewal.replaces = Some(cert_id.as_str().to_owned());
    account.new_order(&renewal).await.expect("renewal order");
    let stats = env.proxy.stats();
    assert_eq!(stats.replaces, [cert_id.as_str().to_owned()]);
    assert_eq!(stats.requests_to("renewal-info"), 1);
}
