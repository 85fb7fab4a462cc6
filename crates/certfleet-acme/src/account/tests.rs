use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::MacAlgorithm;
use crate::test_support::{TEST_DIRECTORY, TestKey, offline_client, verify_es256};

fn account(seed: u8) -> Account {
    offline_client(TEST_DIRECTORY)
        .account_from_parts(TestKey::arc(seed), "https://ca.test/acct/42".to_owned())
}

#[test]
fn restored_account_parts() {
    let acct = account(1);
    assert_eq!(acct.url(), "https://ca.test/acct/42");
    assert_eq!(acct.key().key_ref().as_str(), "test:p256-1");
    assert_eq!(
        acct.client().directory().new_order,
        "https://ca.test/new-order"
    );
    let clone = acct.clone();
    assert!(
        Arc::ptr_eq(&acct.inner, &clone.inner),
        "clones share one account"
    );
    assert_eq!(
        acct.client().stats(),
        crate::RequestStats::default(),
        "no request made"
    );
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Account>();
}

#[test]
fn key_authorization_and_dns01_value() {
    let acct = account(2);
    let thumb = acct.key().public_jwk().thumbprint().to_owned();
    let ka = acct.key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA");
    assert_eq!(
        ka,
        format!("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.{thumb}")
    );
    let txt = acct.dns01_txt_value("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA");
    assert_eq!(txt, URL_SAFE_NO_PAD.encode(Sha256::digest(ka.as_bytes())));
    assert_eq!(txt.len(), 43, "base64url of 32 bytes, unpadded");
}

#[test]
fn new_account_payloads() {
    let key = TestKey::new(3);
    let plain = new_account_payload(
        &key,
        &NewAccount {
            terms_of_service_agreed: true,
            ..NewAccount::default()
        },
        "https://ca.test/new-account",
    );
    assert_eq!(plain, json!({ "termsOfServiceAgreed": true }));

    let lookup = new_account_payload(
        &key,
        &NewAccount {
            contact: vec!["mailto:ops@example.com".into()],
            only_return_existing: true,
            ..NewAccount::default()
        },
        "https://ca.test/new-account",
    );
    assert_eq!(
        lookup,
        json!({
            "termsOfServiceAgreed": false,
            "contact": ["mailto:ops@example.com"],
            "onlyReturnExisting": true,
        })
    );

    let eab = ExternalAccountBinding {
        key_id: "eab-kid".into(),
        hmac_key: vec![9; 32],
        algorithm: MacAlgorithm::HS256,
    };
    let with_eab = new_account_payload(
        &key,
        &NewAccount {
            terms_of_service_agreed: true,
            external_account_binding: Some(eab.clone()),
            ..NewAccount::default()
        },
        "https://ca.test/new-account",
    );
    let inner: jws::FlattenedJws =
        serde_json::from_value(with_eab["externalAccountBinding"].clone()).expect("jws");
    let header = inner.protected_header().expect("header");
    assert_eq!(header["kid"], "eab-kid");
    assert_eq!(header["url"], "https://ca.test/new-account");
    assert_eq!(
        serde_json::from_slice::<Value>(&inner.payload_bytes().expect("b64")).expect("json"),
        *key.public_jwk().as_json()
    );
    assert!(
        !with_eab.to_string().contains("CQkJ"),
        "the MAC key itself is never sent"
    );
}

#[tokio::test]
async fn key_change_inner_jws() {
    let acct = account(4);
    let new_key = TestKey::new(5);
    let inner = acct
        .rollover_inner_jws(&new_key, "https://ca.test/key-change")
        .await
        .expect("signs");
    let header = inner.protected_header().expect("header");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(
        &header["jwk"],
        new_key.public_jwk().as_json(),
        "inner names the NEW key"
    );
    assert_eq!(header["url"], "https://ca.test/key-change");
    assert!(header.get("nonce").is_none(), "inner JWS has no nonce");
    assert!(header.get("kid").is_none());
    let payload: Value =
        serde_json::from_slice(&inner.payload_bytes().expect("b64")).expect("json");
    assert_eq!(payload["account"], "https://ca.test/acct/42");
    assert_eq!(&payload["oldKey"], acct.key().public_jwk().as_json());
    assert!(verify_es256(&inner, new_key.public_jwk().as_json()));
    assert!(!verify_es256(&inner, acct.key().public_jwk().as_json()));
    assert_eq!(acct.client().stats().signatures, 1);
}

#[test]
fn account_state_parsing() {
    let state: AccountState = serde_json::from_str(
        r#"{"status":"valid","contact":["mailto:a@example.com"],"orders":"https://ca.test/orders/1",
            "termsOfServiceAgreed":true,"key":{"kty":"EC"},"createdAt":"2026-01-01T00:00:00Z"}"#,
    )
    .expect("parses");
    assert_eq!(state.status, AccountStatus::Valid);
    assert_eq!(state.contact, ["mailto:a@example.com"]);
    assert_eq!(state.orders.as_deref(), Some("https://ca.test/orders/1"));
    let deactivated: AccountState =
        serde_json::from_str(r#"{"status":"deactivated"}"#).expect("parses");
    assert_eq!(deactivated.status, AccountStatus::Deactivated);
    assert!(deactivated.contact.is_empty());
}
