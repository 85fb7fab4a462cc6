use time::macros::datetime;

use super::*;
use crate::{IdentifierType, ProblemKind};

#[test]
fn rfc8555_authorization_example() {
    let a: AuthorizationState =
        serde_json::from_str(include_str!("../../testdata/authz-rfc8555.json")).expect("parses");
    assert_eq!(a.status, AuthorizationStatus::Valid);
    assert_eq!(a.identifier, Identifier::dns("www.example.org"));
    assert_eq!(a.expires, Some(datetime!(2015-03-01 14:09:07.99 UTC)));
    assert!(!a.wildcard);
    let ch = a.challenge(&ChallengeType::Http01).expect("http-01");
    assert_eq!(ch.url, "https://example.com/acme/chall/prV_B7yEyA4");
    assert_eq!(ch.status, ChallengeStatus::Valid);
    assert_eq!(ch.token.as_deref(), Some("DGyRejmCefe7v4NfDGDKfA"));
    assert_eq!(ch.validated, Some(datetime!(2014-12-01 12:05:58.16 UTC)));
    assert!(a.challenge(&ChallengeType::Dns01).is_none());
}

#[test]
fn pebble_wildcard_authorization() {
    let a: AuthorizationState = serde_json::from_str(include_str!(
        "../../testdata/pebble-2.4.0/authz-wildcard.json"
    ))
    .expect("parses");
    assert!(a.wildcard);
    assert_eq!(
        a.identifier.value, "smoke.example.test",
        "base name, no '*.'"
    );
    assert_eq!(a.order_identifier().value, "*.smoke.example.test");
    assert_eq!(a.challenges.len(), 1, "wildcards get DNS-01 only");
    assert_eq!(a.challenges[0].kind, ChallengeType::Dns01);
}

#[test]
fn pebble_pending_and_deactivated_authorizations() {
    let a: AuthorizationState = serde_json::from_str(include_str!(
        "../../testdata/pebble-2.4.0/authz-pending.json"
    ))
    .expect("parses");
    assert_eq!(a.status, AuthorizationStatus::Pending);
    assert!(!a.wildcard);
    assert_eq!(a.order_identifier(), a.identifier);
    let kinds: Vec<&str> = a.challenges.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["dns-01", "http-01", "tls-alpn-01"]);
    let d: AuthorizationState = serde_json::from_str(include_str!(
        "../../testdata/pebble-2.4.0/authz-deactivated.json"
    ))
    .expect("parses");
    assert_eq!(d.status, AuthorizationStatus::Deactivated);
    assert!(d.challenges.is_empty());
    let ch: Challenge = serde_json::from_str(include_str!(
        "../../testdata/pebble-2.4.0/challenge-pending.json"
    ))
    .expect("parses");
    assert_eq!(ch.status, ChallengeStatus::Pending);
}

#[test]
fn failed_challenge_and_unknown_types() {
    let a: AuthorizationState = serde_json::from_str(
        r#"{
          "status": "invalid",
          "identifier": {"type": "ip", "value": "192.0.2.1"},
          "challenges": [
            {"type": "http-01", "url": "https://ca.test/ch/1", "status": "invalid", "token": "t",
             "error": {"type": "urn:ietf:params:acme:error:connection", "detail": "refused", "status": 400}},
            {"type": "dns-account-01", "url": "https://ca.test/ch/2", "status": "pending", "token": "u"}
          ]
        }"#,
    )
    .expect("parses");
    assert_eq!(a.status, AuthorizationStatus::Invalid);
    assert_eq!(a.identifier.kind, IdentifierType::Ip);
    let err = a.challenges[0].error.as_ref().expect("error");
    assert_eq!(err.kind, ProblemKind::Connection);
    assert_eq!(
        a.challenges[1].kind,
        ChallengeType::Other("dns-account-01".into())
    );
    assert_eq!(
        serde_json::to_value(&a.challenges[1].kind).expect("json"),
        "dns-account-01"
    );
    for s in ["expired", "revoked"] {
        let status: AuthorizationStatus = serde_json::from_str(&format!("{s:?}")).expect(s);
        assert_eq!(status.to_string(), s);
    }
}
