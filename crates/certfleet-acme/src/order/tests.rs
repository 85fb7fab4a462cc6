use time::macros::datetime;

use super::*;

fn fixture(name: &str) -> OrderState {
    let text = match name {
        "rfc8555" => include_str!("../../testdata/order-rfc8555.json"),
        "pebble-new" => include_str!("../../testdata/pebble-2.4.0/order-new-wildcard.json"),
        "pebble-ready" => include_str!("../../testdata/pebble-2.4.0/order-ready.json"),
        "pebble-processing" => include_str!("../../testdata/pebble-2.4.0/order-processing.json"),
        "pebble-valid" => include_str!("../../testdata/pebble-2.4.0/order-valid.json"),
        _ => unreachable!("unknown fixture {name}"),
    };
    serde_json::from_str(text).expect(name)
}

#[test]
fn rfc8555_order_example() {
    let o = fixture("rfc8555");
    assert_eq!(o.status, OrderStatus::Valid);
    assert!(o.status.is_final());
    assert_eq!(o.expires, Some(datetime!(2016-01-20 14:09:07.99 UTC)));
    assert_eq!(o.not_before, Some(datetime!(2016-01-01 00:00:00 UTC)));
    assert_eq!(o.not_after, Some(datetime!(2016-01-08 00:00:00 UTC)));
    assert_eq!(
        o.identifiers,
        [
            Identifier::dns("www.example.org"),
            Identifier::dns("example.org")
        ]
    );
    assert_eq!(o.authorizations.len(), 2);
    assert_eq!(
        o.finalize,
        "https://example.com/acme/order/TOlocE8rfgo/finalize"
    );
    assert_eq!(
        o.certificate.as_deref(),
        Some("https://example.com/acme/cert/mAt3xBGaobw")
    );
    assert_eq!(o.error, None);
}

#[test]
fn pebble_order_lifecycle_recordings() {
    let new = fixture("pebble-new");
    assert_eq!(new.status, OrderStatus::Pending);
    assert!(new.identifiers.iter().any(Identifier::is_wildcard));
    assert_eq!(new.certificate, None);
    assert_eq!(fixture("pebble-ready").status, OrderStatus::Ready);
    assert_eq!(fixture("pebble-processing").status, OrderStatus::Processing);
    let valid = fixture("pebble-valid");
    assert_eq!(valid.status, OrderStatus::Valid);
    assert!(
        valid
            .certificate
            .as_deref()
            .is_some_and(|u| u.contains("/certZ/"))
    );
}

#[test]
fn invalid_order_with_error_profile_and_replaces() {
    let o: OrderState = serde_json::from_str(
        r#"{
          "status": "invalid",
          "identifiers": [{"type": "dns", "value": "example.org"}],
          "authorizations": [],
          "finalize": "https://ca.test/finalize/1",
          "error": {"type": "urn:ietf:params:acme:error:unauthorized", "detail": "no"},
          "profile": "shortlived",
          "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
          "someExtension": {"x": 1}
        }"#,
    )
    .expect("parses");
    assert_eq!(o.status, OrderStatus::Invalid);
    assert_eq!(
        o.error.expect("error").kind,
        crate::ProblemKind::Unauthorized
    );
    assert_eq!(o.profile.as_deref(), Some("shortlived"));
    assert_eq!(
        o.replaces.as_deref(),
        Some("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
    );
    assert_eq!(o.expires, None);
}

#[test]
fn new_order_payload_normalises_and_adds_options() {
    let req = NewOrder {
        identifiers: vec![
            Identifier::dns("WWW.Example.org."),
            Identifier::dns("*.example.org"),
            Identifier::ip("2001:db8::1".parse().expect("ip")),
        ],
        not_before: Some(datetime!(2026-01-01 00:00:00 +02:00)),
        not_after: None,
        profile: Some("tlsserver".into()),
        replaces: Some("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".into()),
    };
    let ids = normalized_identifiers(&req).expect("valid names");
    let with_ari = new_order_payload(&req, &ids, true).expect("payload");
    assert_eq!(
        with_ari,
        json!({
            "identifiers": [
                {"type": "dns", "value": "www.example.org"},
                {"type": "dns", "value": "*.example.org"},
                {"type": "ip", "value": "2001:db8::1"},
            ],
            "notBefore": "2025-12-31T22:00:00Z",
            "profile": "tlsserver",
            "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
        })
    );
    let without_ari = new_order_payload(&req, &ids, false).expect("payload");
    assert!(
        without_ari.get("replaces").is_none(),
        "no renewalInfo, no replaces"
    );
}

#[test]
fn new_order_refuses_bad_names_locally() {
    let err = normalized_identifiers(&NewOrder::dns(["ok.example", "exa mple.com"]))
        .expect_err("invalid");
    assert!(matches!(err, AcmeError::InvalidIdentifier(_)), "{err}");
    assert!(err.to_string().contains("exa mple.com"), "{err}");
}

#[test]
fn status_names() {
    assert_eq!(OrderStatus::Processing.to_string(), "processing");
    let s: OrderStatus = serde_json::from_str(r#""ready""#).expect("parses");
    assert_eq!(s, OrderStatus::Ready);
    assert!(!OrderStatus::Ready.is_final());
}

fn pebble_order() -> Order {
    Order {
        url: "https://ca.test/order/1".into(),
        state: fixture("pebble-new"),
        retry_after: None,
    }
}

#[test]
fn an_order_must_name_exactly_what_was_asked() {
    let order = pebble_order();
    let asked =
        |names: &[&str]| -> Vec<Identifier> { names.iter().map(|n| Identifier::dns(*n)).collect() };
    order
        .check_names(&asked(&["*.smoke.example.test", "smoke.example.test"]))
        .expect("the same names, in another order");
    order
        .check_names(&asked(&["SMOKE.example.test.", "*.smoke.example.test"]))
        .expect("case and a trailing dot do not count");
    for wrong in [
        asked(&["smoke.example.test"]),
        asked(&["smoke.example.test", "*.smoke.example.test", "other.test"]),
    ] {
        let err = order.check_names(&wrong).expect_err("names differ");
        assert!(matches!(err, AcmeError::InvalidResponse { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("names smoke.example.test, *.smoke.example.test, not the requested"),
            "{text}"
        );
    }
    let mut hostile = pebble_order();
    hostile.state.identifiers[1].value = "evil.test\u{1b}[2J".into();
    let err = hostile
        .check_names(&asked(&["smoke.example.test", "*.smoke.example.test"]))
        .expect_err("a name nobody asked for");
    assert!(err.to_string().contains("evil.test\\u{001b}[2J"), "{err}");
    assert!(!err.to_string().contains('\u{1b}'), "CA text is escaped");
}

#[test]
fn an_authorization_must_be_for_a_name_of_its_order() {
    let order = pebble_order();
    let authz = |file: &str, url: &str| Authorization {
        url: url.into(),
        state: serde_json::from_str(file).expect("authz"),
        retry_after: None,
    };
    let wildcard = authz(
        include_str!("../../testdata/pebble-2.4.0/authz-wildcard.json"),
        "https://ca.test/authz/w",
    );
    order
        .check_authorization(&wildcard)
        .expect("the wildcard's base name with wildcard: true is *.smoke.example.test");
    let mut foreign = wildcard.clone();
    foreign.state.identifier.value = "victim.example".into();
    let err = order
        .check_authorization(&foreign)
        .expect_err("not a name of the order");
    let text = err.to_string();
    assert!(text.contains("https://ca.test/authz/w"), "{text}");
    assert!(text.contains("*.victim.example"), "{text}");
    assert!(text.contains("order https://ca.test/order/1"), "{text}");
    let mut plain = wildcard;
    plain.state.wildcard = false;
    order
        .check_authorization(&plain)
        .expect("smoke.example.test is named too");
}
