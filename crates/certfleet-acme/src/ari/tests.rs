use time::macros::datetime;

use super::*;
use crate::test_support::{RFC9773_CERT_PEM, pem_to_der};

#[test]
fn rfc9773_example_cert_id() {
    let der = pem_to_der(RFC9773_CERT_PEM);
    let id = CertId::from_certificate_der(&der).expect("cert id");
    assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    assert_eq!(id.as_str(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    // The same from the raw parts quoted in §4.1.
    let aki = [
        0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE,
        0x2C, 0xDE, 0x01, 0xC8, 0xD4,
    ];
    assert_eq!(
        CertId::from_parts(&aki, &[0x00, 0x87, 0x65, 0x43, 0x21]),
        id
    );
}

#[test]
fn generated_leaf_cert_id_keeps_the_serial_sign_byte() {
    let der = pem_to_der(include_str!("../../testdata/chains/default.pem"));
    let id = CertId::from_certificate_der(&der).expect("cert id");
    // AKI aa:79:…:78, serial 0x8a0b0c0d0e → DER content 00 8a 0b 0c 0d 0e.
    assert_eq!(id.as_str(), "qnlsJjwf2qnRkrRm48thSmnv53g.AIoLDA0O");
}

#[test]
fn cert_without_aki_or_garbage() {
    let der = pem_to_der(include_str!("../../testdata/no-aki.pem"));
    let err = CertId::from_certificate_der(&der).expect_err("no AKI");
    assert!(
        err.to_string().contains("Authority Key Identifier"),
        "{err}"
    );
    assert!(CertId::from_certificate_der(b"not a certificate").is_err());
}

#[test]
fn cert_id_parsing_and_serde() {
    let id: CertId = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
        .parse()
        .expect("valid");
    assert_eq!(
        serde_json::to_string(&id).expect("json"),
        r#""aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE""#
    );
    for bad in ["", "nodot", ".x", "x.", "a+b.c", "a.b=", "a.b.c"] {
        assert!(bad.parse::<CertId>().is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<CertId>(r#""nodot""#).is_err());
    assert_eq!(
        renewal_info_url("https://ca.test/renewal-info/", &id),
        "https://ca.test/renewal-info/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    );
    assert_eq!(
        renewal_info_url("https://ca.test/renewal-info", &id),
        "https://ca.test/renewal-info/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    );
}

const WINDOW: &str = r#"{
  "suggestedWindow": {
    "start": "2025-01-02T04:00:00Z",
    "end": "2025-01-03T04:00:00Z"
  },
  "explanationURL": "https://acme.example.com/docs/ari"
}"#;

#[test]
fn renewal_info_window() {
    let info = RenewalInfo::from_json(
        "u",
        WINDOW.as_bytes(),
        Some(RetryAfter::Delay(Duration::from_secs(21600))),
    )
    .expect("parses");
    let w = info.window;
    assert_eq!(w.start, datetime!(2025-01-02 04:00:00 UTC));
    assert_eq!(w.end, datetime!(2025-01-03 04:00:00 UTC));
    assert_eq!(
        info.explanation_url.as_deref(),
        Some("https://acme.example.com/docs/ari")
    );
    assert_eq!(w.random_instant_in(0.0), w.start);
    assert_eq!(w.random_instant_in(0.5), datetime!(2025-01-02 16:00:00 UTC));
    assert!(w.random_instant_in(1.0) < w.end, "end is exclusive");
    assert_eq!(w.random_instant_in(-3.0), w.start);
    assert_eq!(w.random_instant_in(f64::NAN), w.start);
    assert!(w.contains(w.start));
    assert!(!w.contains(w.end));
    assert!(!w.contains(datetime!(2025-01-01 00:00:00 UTC)));
    assert!(w.has_started(datetime!(2025-02-01 00:00:00 UTC)));
}

#[test]
fn invalid_windows_are_rejected() {
    let same =
        r#"{"suggestedWindow":{"start":"2025-01-02T04:00:00Z","end":"2025-01-02T04:00:00Z"}}"#;
    let err = RenewalInfo::from_json("https://ca.test/ri/x", same.as_bytes(), None)
        .expect_err("end == start");
    assert!(matches!(err, AcmeError::InvalidResponse { .. }), "{err}");
    let reversed =
        r#"{"suggestedWindow":{"start":"2025-01-03T04:00:00Z","end":"2025-01-02T04:00:00Z"}}"#;
    assert!(RenewalInfo::from_json("u", reversed.as_bytes(), None).is_err());
    assert!(RenewalInfo::from_json("u", br#"{"explanationURL":"x"}"#, None).is_err());
}

#[test]
fn next_check_clamps_retry_after() {
    let now = datetime!(2025-01-01 00:00:00 UTC);
    let mut info = RenewalInfo::from_json("u", WINDOW.as_bytes(), None).expect("parses");
    assert_eq!(info.next_check(now), datetime!(2025-01-01 06:00:00 UTC));
    info.retry_after = Some(RetryAfter::Delay(Duration::from_secs(5)));
    assert_eq!(info.next_check(now), datetime!(2025-01-01 00:01:00 UTC));
    info.retry_after = Some(RetryAfter::Delay(Duration::from_secs(90 * 24 * 3600)));
    assert_eq!(info.next_check(now), datetime!(2025-01-02 00:00:00 UTC));
    info.retry_after = Some(RetryAfter::Delay(Duration::from_secs(3600)));
    assert_eq!(info.next_check(now), datetime!(2025-01-01 01:00:00 UTC));
}
