//! Account flows through the mock CA: key rollover, certificate download, finalize,
//! revocation, renewal information.

use std::time::Duration;

use certfleet_keys::SigningKey;
use serde_json::Value;

use super::{ca, config, connect, posts};
use crate::test_support::mock::{Recorded, Reply};
use crate::test_support::{TestKey, verify_es256};
use crate::{AcmeClient, AcmeError, Directory, RetryAfter};

#[tokio::test]
async fn key_rollover_outer_and_inner_jws() {
    let server = ca(|base, req, i| match (req.path.as_str(), i) {
        ("/key-change", _)
            if req.jws().protected_header().expect("h")["kid"] == format!("{base}/acct/taken") =>
        {
            Reply::new(409).header("Location", "/acct/other")
        }
        ("/key-change", _) => Reply::new(200),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let old_key = TestKey::arc(10);
    let new_key = TestKey::arc(11);
    let account = client.account_from_parts(old_key.clone(), server.url("/acct/1"));
    let rolled = account.rollover(new_key.clone()).await.expect("rolls over");
    assert_eq!(rolled.url(), account.url());
    assert_eq!(rolled.key().public_jwk(), new_key.public_jwk());

    let req = &posts(&server)[0];
    let outer = req.jws();
    let outer_header = outer.protected_header().expect("header");
    assert_eq!(
        outer_header["kid"],
        server.url("/acct/1"),
        "outer by the old key, kid"
    );
    assert_eq!(outer_header["url"], server.url("/key-change"));
    assert!(outer_header.get("nonce").is_some());
    assert!(verify_es256(&outer, old_key.public_jwk().as_json()));
    let inner: crate::FlattenedJws =
        serde_json::from_slice(&outer.payload_bytes().expect("b64")).expect("inner JWS");
    let inner_header = inner.protected_header().expect("header");
    assert_eq!(&inner_header["jwk"], new_key.public_jwk().as_json());
    assert_eq!(inner_header["url"], server.url("/key-change"));
    assert!(inner_header.get("nonce").is_none());
    assert!(verify_es256(&inner, new_key.public_jwk().as_json()));
    assert_eq!(client.stats().signatures, 2, "two signatures, two keys");

    let taken = client.account_from_parts(TestKey::arc(12), server.url("/acct/taken"));
    let err = taken.rollover(TestKey::arc(13)).await.expect_err("409");
    let AcmeError::KeyInUse {
        existing_account, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        existing_account.as_deref(),
        Some(server.url("/acct/other").as_str())
    );
}

#[tokio::test]
async fn certificate_download_with_alternate_links() {
    let default = include_str!("../../../testdata/pebble-2.4.0/certificate-chain.pem");
    let alternate =
        include_str!("../../../testdata/pebble-2.4.0/certificate-chain-alternate-1.pem");
    let server = ca(move |base, req, _| match req.path.as_str() {
        "/cert/1" => Reply::new(200)
            .header("Content-Type", "application/pem-certificate-chain")
            .header("Link", &format!("<{base}/dir>;rel=\"index\""))
            .header(
                "Link",
                "</cert/1/alt/1>;rel=\"alternate\", </issuer/1>; rel=up",
            )
            .body(default),
        "/cert/1/alt/1" => Reply::new(200)
            .header("Link", "</cert/1>;rel=\"alternate\"")
            .body(alternate),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(14), server.url("/acct/1"));
    let dl = account
        .download_certificate(&server.url("/cert/1"))
        .await
        .expect("downloads");
    assert_eq!(dl.chain.certs_der.len(), 4);
    assert_eq!(dl.alternates, [server.url("/cert/1/alt/1")]);
    assert_eq!(dl.up, [server.url("/issuer/1")]);
    let req = &posts(&server)[0];
    assert_eq!(
        req.header("accept"),
        Some("application/pem-certificate-chain")
    );
    assert_eq!(req.jws().payload, "");

    let alts = account
        .download_alternate_chains(&dl)
        .await
        .expect("alternates");
    assert_eq!(alts.len(), 1);
    let wanted = alts[0].top_issuer_common_name().expect("root CN");
    assert_ne!(Some(wanted.clone()), dl.chain.top_issuer_common_name());
    assert_eq!(
        alts[0].leaf_der(),
        dl.chain.leaf_der(),
        "same leaf, other issuers"
    );
    let chosen = crate::choose_chain(dl.chain.clone(), alts, &wanted);
    assert_eq!(chosen.top_issuer_common_name(), Some(wanted));
}

#[tokio::test]
async fn finalize_and_revocation_payloads() {
    let server = ca(|_, req, _| match req.path.as_str() {
        "/finalize/1" => Reply::json(
            200,
            include_str!("../../../testdata/pebble-2.4.0/order-processing.json"),
        ),
        "/revoke-cert" => Reply::new(200),
        _ => Reply::new(404),
    })
    .await;
    let client = connect(&server).await;
    let account = client.account_from_parts(TestKey::arc(15), server.url("/acct/1"));
    let mut state: crate::OrderState = serde_json::from_str(include_str!(
        "../../../testdata/pebble-2.4.0/order-new-wildcard.json"
    ))
    .expect("order");
    state.finalize = server.url("/finalize/1");
    let mut order = crate::Order {
        url: server.url("/order/1"),
        state,
        retry_after: None,
    };
    let err = account.finalize(&order, b"csr").await.expect_err("pending");
    assert!(
        matches!(
            err,
            AcmeError::NotReady {
                status: crate::OrderStatus::Pending,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(posts(&server).is_empty(), "refused locally");
    order.state.status = crate::OrderStatus::Ready;
    let finalized = account
        .finalize(&order, b"\x30\x03csr")
        .await
        .expect("finalizes");
    assert_eq!(finalized.url, order.url);
    assert_eq!(finalized.status(), crate::OrderStatus::Processing);

    account
        .revoke(
            b"\x30\x01\x00",
            Some(crate::RevocationReason::KeyCompromise),
        )
        .await
        .expect("revokes");
    let cert_key = TestKey::new(16);
    client
        .revoke_with_certificate_key(&cert_key, b"\x30\x01\x00", None)
        .await
        .expect("revokes");

    let p = posts(&server);
    let payload = |r: &Recorded| -> Value {
        serde_json::from_slice(&r.jws().payload_bytes().expect("b64")).expect("json")
    };
    assert_eq!(payload(&p[0]), serde_json::json!({"csr": "MANjc3I"}));
    assert_eq!(
        payload(&p[1]),
        serde_json::json!({"certificate": "MAEA", "reason": 1})
    );
    assert!(
        p[1].jws()
            .protected_header()
            .expect("h")
            .get("kid")
            .is_some()
    );
    assert_eq!(payload(&p[2]), serde_json::json!({"certificate": "MAEA"}));
    let h = p[2].jws().protected_header().expect("h");
    assert_eq!(
        &h["jwk"],
        cert_key.public_jwk().as_json(),
        "signed by the certificate key"
    );
    assert!(h.get("kid").is_none());
}

#[tokio::test]
async fn renewal_info_is_an_unauthenticated_get() {
    let server = ca(|_, req, _| {
        if req.path.starts_with("/renewal-info/") {
            Reply::json(
                200,
                r#"{"suggestedWindow":{"start":"2026-03-01T00:00:00Z","end":"2026-03-02T00:00:00Z"}}"#,
            )
            .header("Retry-After", "21600")
        } else {
            Reply::new(404)
        }
    })
    .await;
    let client = connect(&server).await;
    let id: crate::CertId = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".parse().expect("id");
    let info = client.renewal_info(&id).await.expect("renewal info");
    assert_eq!(
        info.retry_after,
        Some(RetryAfter::Delay(Duration::from_secs(21600)))
    );
    let req = server.requests().pop().expect("request");
    assert_eq!(req.method, "GET");
    assert_eq!(
        req.path,
        "/renewal-info/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    );
    assert!(req.body.is_empty());
    assert_eq!(client.stats().signatures, 0);

    let no_ari = AcmeClient::with_directory(
        "u",
        Directory::from_json(include_bytes!(
            "../../../testdata/pebble-2.4.0/directory.json"
        ))
        .expect("directory"),
        config(),
    )
    .expect("client");
    let err = no_ari.renewal_info(&id).await.expect_err("unsupported");
    assert!(matches!(err, AcmeError::Unsupported { .. }), "{err:?}");
}
