use super::*;
use crate::IdentifierType;

const SUBPROBLEMS: &str = include_str!("../../testdata/problem-rfc8555-subproblems.json");

#[test]
fn rfc8555_subproblem_example_is_typed() {
    let p = Problem::from_json(SUBPROBLEMS.as_bytes()).expect("parses");
    assert_eq!(p.kind, ProblemKind::Malformed);
    assert_eq!(p.type_uri, "urn:ietf:params:acme:error:malformed");
    assert_eq!(
        p.detail.as_deref(),
        Some("Some of the identifiers requested were rejected")
    );
    assert_eq!(p.subproblems.len(), 2);
    let s0 = &p.subproblems[0];
    assert_eq!(s0.kind, ProblemKind::Malformed);
    let id0 = s0.identifier.as_ref().expect("identifier");
    assert_eq!(id0.kind, IdentifierType::Dns);
    assert_eq!(id0.value, "_example.org");
    assert_eq!(p.subproblems[1].kind, ProblemKind::RejectedIdentifier);
    let failed: Vec<&str> = p
        .failed_identifiers()
        .iter()
        .map(|i| i.value.as_str())
        .collect();
    assert_eq!(failed, ["_example.org", "example.net"]);
}

#[test]
fn display_has_type_detail_and_subproblems() {
    let p = Problem::from_json(SUBPROBLEMS.as_bytes()).expect("parses");
    let text = p.to_string();
    assert_eq!(
        text,
        "urn:ietf:params:acme:error:malformed: Some of the identifiers requested were rejected; \
         subproblems: _example.org: urn:ietf:params:acme:error:malformed: Invalid underscore in \
         DNS name \"_example.org\"; example.net: urn:ietf:params:acme:error:rejectedIdentifier: \
         This CA will not issue for \"example.net\""
    );
}

#[test]
fn every_rfc8555_type_round_trips() {
    let names = [
        ("accountDoesNotExist", ProblemKind::AccountDoesNotExist),
        ("alreadyRevoked", ProblemKind::AlreadyRevoked),
        ("badCSR", ProblemKind::BadCsr),
        ("badNonce", ProblemKind::BadNonce),
        ("badPublicKey", ProblemKind::BadPublicKey),
        ("badRevocationReason", ProblemKind::BadRevocationReason),
        ("badSignatureAlgorithm", ProblemKind::BadSignatureAlgorithm),
        ("caa", ProblemKind::Caa),
        ("compound", ProblemKind::Compound),
        ("connection", ProblemKind::Connection),
        ("dns", ProblemKind::Dns),
        (
            "externalAccountRequired",
            ProblemKind::ExternalAccountRequired,
        ),
        ("incorrectResponse", ProblemKind::IncorrectResponse),
        ("invalidContact", ProblemKind::InvalidContact),
        ("malformed", ProblemKind::Malformed),
        ("orderNotReady", ProblemKind::OrderNotReady),
        ("rateLimited", ProblemKind::RateLimited),
        ("rejectedIdentifier", ProblemKind::RejectedIdentifier),
        ("serverInternal", ProblemKind::ServerInternal),
        ("tls", ProblemKind::Tls),
        ("unauthorized", ProblemKind::Unauthorized),
        ("unsupportedContact", ProblemKind::UnsupportedContact),
        ("unsupportedIdentifier", ProblemKind::UnsupportedIdentifier),
        ("userActionRequired", ProblemKind::UserActionRequired),
        ("alreadyReplaced", ProblemKind::AlreadyReplaced),
        ("invalidProfile", ProblemKind::InvalidProfile),
    ];
    for (name, kind) in names {
        let uri = format!("urn:ietf:params:acme:error:{name}");
        assert_eq!(ProblemKind::from_type_uri(&uri), kind, "{uri}");
        assert_eq!(kind.type_uri(), uri);
    }
}

#[test]
fn unknown_and_missing_types() {
    let p = Problem::from_json(br#"{"type":"urn:example:custom","detail":"x","status":418}"#)
        .expect("parses");
    assert_eq!(p.kind, ProblemKind::Other("urn:example:custom".into()));
    assert_eq!(p.status, Some(418));
    // Case matters in URNs' names: `badcsr` is not `badCSR`.
    let p = Problem::from_json(br#"{"type":"urn:ietf:params:acme:error:badcsr"}"#).expect("parses");
    assert!(matches!(p.kind, ProblemKind::Other(_)));
    let p = Problem::from_json(br#"{"detail":"no type"}"#).expect("parses");
    assert_eq!(p.type_uri, "about:blank");
    assert_eq!(p.to_string(), "about:blank: no type");
}

#[test]
fn serializes_back_to_the_wire_shape() {
    let p = Problem::from_json(SUBPROBLEMS.as_bytes()).expect("parses");
    let v = serde_json::to_value(&p).expect("serializes");
    let original: serde_json::Value = serde_json::from_str(SUBPROBLEMS).expect("json");
    assert_eq!(v, original);
}

#[test]
fn rate_limit_problem_from_boulder() {
    let body = br#"{
      "type": "urn:ietf:params:acme:error:rateLimited",
      "detail": "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2025-01-01 00:00:00 UTC",
      "status": 429
    }"#;
    let p = Problem::from_json(body).expect("parses");
    assert!(p.is(&ProblemKind::RateLimited));
    assert_eq!(p.status, Some(429));
}
