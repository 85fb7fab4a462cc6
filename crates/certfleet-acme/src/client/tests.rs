//! The request pipeline against an in-process mock CA: nonces, badNonce retries, error
//! mapping, counters, directory retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::*;
use crate::test_support::mock::{MockServer, Recorded, Reply};
use crate::test_support::{TestKey, install_crypto_provider, verify_es256};
use crate::{NewAccount, RetryAfter};

pub(super) const ACCOUNT_JSON: &str = r#"{"status":"valid","orders":"https://ca.test/orders/1"}"#;

pub(super) fn config() -> ClientConfig {
    install_crypto_provider();
    ClientConfig {
        connect_backoff: Duration::from_millis(10),
        // The mock CA is plain HTTP on loopback.
        allow_http: true,
        ..ClientConfig::default()
    }
}

/// Serves the directory and a nonce endpoint; everything else goes to `rest`.
pub(super) async fn ca<F>(rest: F) -> MockServer
where
    F: Fn(&str, &Recorded, usize) -> Reply + Send + Sync + 'static,
{
    let nonces = AtomicUsize::new(0);
    MockServer::start(move |base, req, i| match req.path.as_str() {
        "/dir" => Reply::json(200, &MockServer::directory_json(base)),
        "/new-nonce" => {
            let n = nonces.fetch_add(1, Ordering::Relaxed);
            Reply::new(200).nonce(&format!("head{n}"))
        }
        _ => rest(base, req, i),
    })
    .await
}

pub(super) async fn connect(server: &MockServer) -> AcmeClient {
    AcmeClient::connect(&server.url("/dir"), config())
        .await
        .expect("connects")
}

pub(super) fn posts(server: &MockServer) -> Vec<Recorded> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

#[tokio::test]
async fn connect_reads_the_directory() {
    let server = ca(|_, _, _| Reply::new(404)).await;
    let client = connect(&server).await;
    assert_eq!(client.directory().new_order, server.url("/new-order"));
    assert_eq!(client.directory_url(), server.url("/dir"));
    assert_eq!(client.stats().http_requests, 1);
    let req = &server.requests()[0];
    assert_eq!(req.method, "GET");
    assert_eq!(
        req.header("user-agent"),
        Some(concat!("certfleet/", env!("CARGO_PKG_VERSION")))
    );
}

#[tokio::test]
async fn directory_fetch_retries_5xx_then_gives_up() {
    let server = MockServer::start(|_, _, _| Reply::new(503).body("maintenance")).await;
    let err = AcmeClient::connect(&server.url("/dir"), config())
        .await
        .expect_err("unreachable");
    let AcmeError::DirectoryUnreachable {
        attempts, source, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*attempts, 3);
    assert_eq!(source.problem().and_then(|p| p.status), Some(503));
    assert_eq!(server.requests().len(), 3);
    assert!(err.to_string().contains("after 3 attempt(s)"), "{err}");
}

#[tokio::test]
async fn directory_fetch_recovers_after_a_5xx() {
    let server = MockServer::start(|base, _, i| {
        if i < 2 {
            Reply::new(502)
        } else {
            Reply::json(200, &MockServer::directory_json(base))
        }
    })
    .await;
    let client = AcmeClient::connect(&server.url("/dir"), config())
        .await
        .expect("third attempt succeeds");
    assert_eq!(client.stats().http_requests, 3);
}

#[tokio::test]
async fn directory_404_and_garbage_are_not_retried() {
    let server = MockServer::start(|_, _, _| Reply::new(404)).await;
    let err = AcmeClient::connect(&server.url("/dir"), config())
        .await
        .expect_err("404");
    assert!(matches!(err, AcmeError::Api { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);

    let server = MockServer::start(|_, _, _| Reply::json(200, "<html>")).await;
    let err = AcmeClient::connect(&server.url("/dir"), config())
        .await
        .expect_err("not JSON");
    assert!(matches!(err, AcmeError::Json { .. }), "{err:?}");
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = AcmeClient::connect(&format!("http://127.0.0.1:{port}/dir"), config())
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, AcmeError::DirectoryUnreachable { attempts: 3, source, .. }
            if matches!(**source, AcmeError::Http { .. })),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn config_errors() {
    install_crypto_provider();
    let bad_pem = ClientConfig {
        extra_roots_pem: vec![b"not a pem".to_vec()],
        ..ClientConfig::default()
    };
    let err = AcmeClient::with_directory("u", dummy_directory(), bad_pem).expect_err("bad");
    assert!(matches!(err, AcmeError::Config { .. }), "{err:?}");
    let only_nothing = ClientConfig {
        only_extra_roots: true,
        ..ClientConfig::default()
    };
    let err = AcmeClient::with_directory("u", dummy_directory(), only_nothing).expect_err("bad");
    assert!(err.to_string().contains("only_extra_roots"), "{err}");
    let roots = ClientConfig {
        extra_roots_pem: vec![include_bytes!("../../testdata/chains/default.pem").to_vec()],
        only_extra_roots: true,
        ..ClientConfig::default()
    };
    assert!(AcmeClient::with_directory("u", dummy_directory(), roots).is_ok());
    assert!(!format!("{:?}", ClientConfig::default()).contains("BEGIN"));
}

fn dummy_directory() -> Directory {
    Directory::from_json(MockServer::directory_json("https://ca.test").as_bytes())
        .expect("directory")
}

#[tokio::test]
async fn nonces_come_from_responses_and_bad_nonce_is_retried() {
    let server = ca(|base, req, _| {
        match req.path.as_str() {
            "/new-account" => {
                let nonce = req.jws_nonce();
                // The first two nonces are rejected; each rejection carries a fresh one.
                match nonce.as_str() {
                    "head0" => Reply::problem(400, "badNonce", "stale").nonce("fresh1"),
                    "fresh1" => Reply::problem(400, "badNonce", "stale").nonce("fresh2"),
                    _ => Reply::json(201, ACCOUNT_JSON)
                        .header("Location", &format!("{base}/acct/1"))
                        .nonce("fresh3"),
                }
            }
            "/acct/1" => Reply::json(200, ACCOUNT_JSON).nonce("fresh4"),
            _ => Reply::new(404),
        }
    })
    .await;
    let client = connect(&server).await;
    let key = TestKey::arc(1);
    let outcome = client
        .new_account_with_state(
            key.clone(),
            &NewAccount {
                terms_of_service_agreed: true,
                ..NewAccount::default()
            },
        )
        .await
        .expect("created after two badNonce");
    assert!(outcome.created);
    assert_eq!(outcome.account.url(), server.url("/acct/1"));
    let account = outcome.account;
    account.state().await.expect("state");

    let nonces: Vec<String> = posts(&server).iter().map(Recorded::jws_nonce).collect();
    assert_eq!(nonces, ["head0", "fresh1", "fresh2", "fresh3"]);
    let stats = client.stats();
    assert_eq!(
        stats,
        RequestStats {
            http_requests: 6, // directory, one HEAD, four POSTs
            new_nonce_requests: 1,
            signatures: 4,
            bad_nonce_retries: 2,
        }
    );
    assert_eq!(key.signatures.load(Ordering::Relaxed), 4);
    let heads = server
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD")
        .count();
    assert_eq!(heads, 1, "newNonce only when the pool is empty");
}

#[tokio::test]
async fn bad_nonce_retries_are_bounded() {
    let server =
        ca(|_, _, i| Reply::problem(400, "badNonce", "nope").nonce(&format!("n{i}"))).await;
    install_crypto_provider();
    let client = AcmeClient::connect(
        &server.url("/dir"),
        ClientConfig {
            max_bad_nonce_retries: 2,
            ..config()
        },
    )
    .await
    .expect("connects");
    let err = client
        .new_account(TestKey::arc(2), &NewAccount::default())
        .await
        .expect_err("exhausted");
    assert!(
        matches!(err, AcmeError::BadNonceExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(posts(&server).len(), 3);
    assert_eq!(client.stats().bad_nonce_retries, 2);
}

#[tokio::test]
async fn requests_are_jose_and_post_as_get_is_empty() {
    let server = ca(|_, req, _| match req.path.as_str() {
        "/order/1" => Reply::json(
            200,
            include_str!("../../testdata/pebble-2.4.0/order-processing.json"),
        )
        .header("Retry-After", "3")
        .nonce("x1"),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let key = TestKey::arc(3);
    let account = client.account_from_parts(key.clone(), server.url("/acct/9"));
    let order = account.order(&server.url("/order/1")).await.expect("order");
    assert_eq!(order.url, server.url("/order/1"));
    assert_eq!(order.status(), crate::OrderStatus::Processing);
    assert_eq!(
        order.retry_after,
        Some(RetryAfter::Delay(Duration::from_secs(3)))
    );
    let req = &posts(&server)[0];
    assert_eq!(req.header("content-type"), Some("application/jose+json"));
    let jws = req.jws();
    assert_eq!(jws.payload, "");
    let header = jws.protected_header().expect("header");
    assert_eq!(header["kid"], server.url("/acct/9"));
    assert_eq!(header["url"], server.url("/order/1"));
    assert!(header.get("jwk").is_none());
    assert!(verify_es256(&jws, key.public_jwk().as_json()));
}

#[tokio::test]
async fn errors_keep_problem_and_retry_after() {
    let server = ca(|_, req, _| match req.path.as_str() {
        "/new-order" => Reply::problem(429, "rateLimited", "too many new orders")
            .header("Retry-After", "Wed, 21 Oct 2026 07:28:00 GMT")
            .nonce("r1"),
        "/order/2" => Reply::new(503)
            .header("Retry-After", "120")
            .body("upstream down"),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(4), server.url("/acct/1"));
    let err = account
        .new_order(&crate::NewOrder::dns(["example.com"]))
        .await
        .expect_err("rate limited");
    assert_eq!(err.problem_kind(), Some(&crate::ProblemKind::RateLimited));
    assert_eq!(
        err.retry_after(),
        Some(&RetryAfter::At(
            time::macros::datetime!(2026-10-21 07:28:00 UTC)
        ))
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("too many new orders"), "{err}");

    let err = account
        .order(&server.url("/order/2"))
        .await
        .expect_err("503");
    let problem = err.problem().expect("synthesised problem");
    assert_eq!(problem.type_uri, "about:blank");
    assert_eq!(problem.status, Some(503));
    assert!(problem.to_string().contains("upstream down"), "{problem}");
    assert_eq!(
        err.retry_after(),
        Some(&RetryAfter::Delay(Duration::from_secs(120)))
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn eab_required_and_deactivated_accounts_get_clear_errors() {
    let deactivated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = deactivated.clone();
    let server = ca(move |_, req, _| match req.path.as_str() {
        "/new-account" => Reply::problem(403, "externalAccountRequired", "EAB needed"),
        "/acct/1" => {
            let payload: Value = serde_json::from_slice(&req.jws().payload_bytes().expect("b64"))
                .unwrap_or_default();
            if payload["status"] == "deactivated" {
                flag.store(true, Ordering::Relaxed);
                Reply::json(200, r#"{"status":"deactivated"}"#)
            } else {
                Reply::new(404)
            }
        }
        "/new-order" if flag.load(Ordering::Relaxed) => {
            Reply::problem(403, "unauthorized", "account is not valid")
        }
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let err = client
        .new_account(TestKey::arc(5), &NewAccount::default())
        .await
        .expect_err("eab");
    assert!(
        matches!(err, AcmeError::ExternalAccountRequired { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--eab-kid"), "{err}");

    let account = client.account_from_parts(TestKey::arc(6), server.url("/acct/1"));
    let state = account.deactivate().await.expect("deactivates");
    assert_eq!(state.status, crate::AccountStatus::Deactivated);
    assert!(deactivated.load(Ordering::Relaxed));
    let err = account
        .new_order(&crate::NewOrder::dns(["example.com"]))
        .await
        .expect_err("deactivated");
    assert!(
        matches!(err, AcmeError::AccountDeactivated { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("deactivated"), "{err}");
}

#[tokio::test]
async fn unauthorized_mentioning_deactivation_is_mapped_without_local_state() {
    let server = ca(|_, _, _| {
        Reply::problem(
            403,
            "unauthorized",
            "An account with the provided public key exists but is deactivated",
        )
    })
    .await;
    let client = connect(&server).await;
    let err = client
        .new_account(TestKey::arc(7), &NewAccount::default())
        .await
        .expect_err("deactivated");
    assert!(
        matches!(err, AcmeError::AccountDeactivated { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn account_state_is_post_as_get() {
    let server = ca(|_, req, _| {
        if req.jws().payload.is_empty() {
            Reply::json(200, ACCOUNT_JSON)
        } else {
            Reply::problem(
                400,
                "malformed",
                "Use POST-as-GET to retrieve account data instead of doing an empty update",
            )
        }
    })
    .await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(8), server.url("/acct/1"));
    let state = account.state().await.expect("state");
    assert_eq!(state.status, crate::AccountStatus::Valid);
    assert_eq!(posts(&server).len(), 1);
}

/// Many orders in flight each leave their last response's nonce in the pool while they do
/// local work; the next round of requests must find them all there (a pool of 8 made 24 of
/// 32 ask `newNonce` again).
#[tokio::test]
async fn a_pool_keeps_a_nonce_for_every_request_in_flight() {
    let server = ca(|_, _, i| Reply::json(200, ACCOUNT_JSON).nonce(&format!("resp{i}"))).await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(9), server.url("/acct/1"));
    let round = || async {
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let account = account.clone();
                tokio::spawn(async move { account.state().await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("state");
        }
    };
    round().await;
    let after_first = client.stats();
    assert!(after_first.new_nonce_requests <= 32, "{after_first:?}");
    round().await;
    let second = client.stats().since(&after_first);
    assert_eq!(second.signatures, 32);
    assert_eq!(
        second.new_nonce_requests, 0,
        "every request of the second round had a pooled nonce: {second:?}"
    );
}

mod flows;
mod hostile;

#[tokio::test]
async fn a_new_order_for_other_names_is_refused() {
    // Pebble's recorded order names smoke.example.test and its wildcard.
    let server = ca(|base, req, _| match req.path.as_str() {
        "/new-order" => Reply::json(
            201,
            include_str!("../../testdata/pebble-2.4.0/order-new-wildcard.json"),
        )
        .header("Location", &format!("{base}/order/7"))
        .nonce("o1"),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(5), server.url("/acct/1"));
    let order = account
        .new_order(&crate::NewOrder::dns([
            "Smoke.Example.Test",
            "*.smoke.example.test",
        ]))
        .await
        .expect("the names asked for, as the CA spells them");
    assert_eq!(order.url, server.url("/order/7"));
    let err = account
        .new_order(&crate::NewOrder::dns(["smoke.example.test"]))
        .await
        .expect_err("the CA's order names a wildcard nobody asked for");
    let text = err.to_string();
    assert!(
        text.contains("not the requested smoke.example.test"),
        "{text}"
    );
    assert!(text.contains(&server.url("/order/7")), "{text}");
}
