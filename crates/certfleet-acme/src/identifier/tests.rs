use super::*;

fn reason(name: &str) -> String {
    let err = normalize_dns_name(name).expect_err(name);
    assert_eq!(err.value, name);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{name:?}")),
        "message names the value: {msg}"
    );
    err.reason
}

#[test]
fn accepts_and_normalises() {
    assert_eq!(
        normalize_dns_name("Example.COM").as_deref(),
        Ok("example.com")
    );
    assert_eq!(
        normalize_dns_name("example.com.").as_deref(),
        Ok("example.com")
    );
    assert_eq!(
        normalize_dns_name("*.Example.com").as_deref(),
        Ok("*.example.com")
    );
    assert_eq!(
        normalize_dns_name("xn--bcher-kva.example").as_deref(),
        Ok("xn--bcher-kva.example")
    );
    assert_eq!(
        normalize_dns_name("a-b.c0.test").as_deref(),
        Ok("a-b.c0.test")
    );
    assert_eq!(normalize_dns_name("localhost").as_deref(), Ok("localhost"));
    assert!(validate_dns_name("www.example.org").is_ok());
}

#[test]
fn empty_labels() {
    assert!(reason("a..b").contains("empty label"));
    assert!(reason(".a.b").contains("empty label"));
    assert!(reason("").contains("empty"));
    assert!(reason(".").contains("empty"));
    assert!(reason("a.b..").contains("empty label"));
}

#[test]
fn hyphens_at_label_edges() {
    assert!(reason("-a.com").contains("starts with '-'"));
    assert!(reason("a-.com").contains("ends with '-'"));
    assert!(reason("www.-x.com").contains("\"-x\""));
}

#[test]
fn invalid_characters() {
    let r = reason("exa mple.com");
    assert!(r.contains("a space"), "{r}");
    assert!(reason("_acme.example.com").contains("'_'"));
    assert!(reason("a/b.com").contains("'/'"));
    assert!(reason("bücher.example").contains("xn--"));
}

#[test]
fn lengths() {
    // 4 labels of 63 + 3 dots = 255; trim to 254.
    let label = "a".repeat(63);
    let name254 = format!("{label}.{label}.{label}.{}", "a".repeat(62));
    assert_eq!(name254.len(), 254);
    assert!(reason(&name254).contains("254 characters"));
    let name253 = &name254[1..];
    assert!(normalize_dns_name(name253).is_ok());
    // A trailing dot does not count.
    assert!(normalize_dns_name(&format!("{name253}.")).is_ok());
    let long_label = format!("{}.com", "b".repeat(64));
    assert!(reason(&long_label).contains("64 characters"));
    assert!(normalize_dns_name(&format!("{}.com", "b".repeat(63))).is_ok());
}

#[test]
fn wildcards() {
    assert!(reason("*.*.x").contains("wildcard"));
    assert!(reason("a*.x").contains("wildcard"));
    assert!(reason("www.*.x").contains("wildcard"));
    assert!(reason("*").contains("wildcard"));
    assert!(reason("**.x").contains("wildcard"));
}

#[test]
fn ip_literals_are_not_dns_names() {
    for ip in ["192.0.2.1", "2001:db8::1", "[::1]", "127.0.0.1."] {
        assert!(
            reason(ip).contains("IP address identifiers are not supported here"),
            "{ip}"
        );
    }
}

#[test]
fn identifier_serde_and_helpers() {
    let id: Identifier =
        serde_json::from_str(r#"{"type":"dns","value":"*.example.com"}"#).expect("parses");
    assert!(id.is_wildcard());
    assert_eq!(id.to_string(), "*.example.com");
    let ip = Identifier::ip("192.0.2.7".parse().expect("ip"));
    assert_eq!(
        serde_json::to_string(&ip).expect("json"),
        r#"{"type":"ip","value":"192.0.2.7"}"#
    );
    let other: Identifier =
        serde_json::from_str(r#"{"type":"email","value":"a@b"}"#).expect("parses");
    assert_eq!(other.kind, IdentifierType::Other("email".into()));
}

#[test]
fn same_as_compares_as_a_ca_may_spell_back() {
    let dns = Identifier::dns("www.example.com");
    assert!(dns.same_as(&Identifier::dns("WWW.Example.COM.")));
    assert!(!dns.same_as(&Identifier::dns("www.example.com.evil.test")));
    assert!(!dns.same_as(&Identifier::dns("*.example.com")));
    let ip = |s: &str| Identifier {
        kind: IdentifierType::Ip,
        value: s.to_owned(),
    };
    assert!(ip("::1").same_as(&ip("0:0:0:0:0:0:0:1")));
    assert!(!ip("192.0.2.1").same_as(&ip("192.0.2.10")));
    assert!(
        !ip("192.0.2.1").same_as(&Identifier::dns("192.0.2.1")),
        "the type counts"
    );
    let email = |s: &str| Identifier {
        kind: IdentifierType::Other("email".into()),
        value: s.to_owned(),
    };
    assert!(email("a@b").same_as(&email("a@b")));
    assert!(!email("a@b").same_as(&email("A@b")));
}
