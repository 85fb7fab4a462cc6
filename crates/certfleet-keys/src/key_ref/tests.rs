use super::*;

#[test]
fn file_refs_are_absolute() {
    let abs: KeyRef = "file:/etc/certfleet/acct.pem".parse().expect("parse");
    assert_eq!(abs.scheme(), "file");
    assert_eq!(abs.rest(), "/etc/certfleet/acct.pem");
    assert_eq!(
        abs.file_path(),
        Some(PathBuf::from("/etc/certfleet/acct.pem"))
    );
    assert_eq!(abs.to_string(), "file:/etc/certfleet/acct.pem");

    let cwd = std::env::current_dir().expect("cwd");
    for input in ["./acct.pem", "file:acct.pem", "acct.pem"] {
        let r: KeyRef = input.parse().expect("parse");
        let path = r.file_path().expect("file ref");
        assert!(path.is_absolute(), "{input} -> {r}");
        assert!(path.starts_with(&cwd), "{input} -> {r}");
        assert!(path.ends_with("acct.pem"), "{input} -> {r}");
    }
    let bare: KeyRef = "/var/lib/key.pem".parse().expect("parse");
    assert_eq!(bare.as_str(), "file:/var/lib/key.pem");
}

#[test]
fn other_schemes_are_kept_verbatim() {
    let p11: KeyRef = "pkcs11:token=acme;object=acct?pin-source=file:/run/pin"
        .parse()
        .expect("parse");
    assert_eq!(p11.scheme(), "pkcs11");
    assert_eq!(p11.file_path(), None);
    assert_eq!(
        p11.as_str(),
        "pkcs11:token=acme;object=acct?pin-source=file:/run/pin"
    );
    let tpm: KeyRef = " tpm:0x81000001 ".parse().expect("parse");
    assert_eq!(tpm.as_str(), "tpm:0x81000001");
    assert_eq!(tpm.rest(), "0x81000001");
}

#[test]
fn invalid_refs_are_rejected() {
    for bad in ["", "   ", "PKCS11:x", "pk cs:x", "pkcs11:"] {
        let err = bad.parse::<KeyRef>().expect_err(bad);
        assert!(matches!(err, KeyError::InvalidRef { .. }), "{bad:?}: {err}");
    }
}

#[test]
fn serde_round_trip_and_validation() {
    let r: KeyRef = "tpm:0x81000001".parse().expect("parse");
    let json = serde_json::to_string(&r).expect("serialize");
    assert_eq!(json, "\"tpm:0x81000001\"");
    assert_eq!(
        serde_json::from_str::<KeyRef>(&json).expect("deserialize"),
        r
    );
    assert!(serde_json::from_str::<KeyRef>("\"\"").is_err());
}

#[test]
fn file_constructor_matches_parsing() {
    let r = KeyRef::file(Path::new("/tmp/k.pem")).expect("file");
    assert_eq!(r, "file:/tmp/k.pem".parse::<KeyRef>().expect("parse"));
}

#[test]
fn pin_values_are_redacted_in_display_debug_and_files() {
    let raw = "pkcs11:token=t;object=o?module-path=/m.so&pin-value=123456&x=1";
    let r: KeyRef = raw.parse().expect("parse");
    assert_eq!(
        r.to_string(),
        "pkcs11:token=t;object=o?module-path=/m.so&pin-value=***&x=1"
    );
    let debug = format!("{r:?}");
    assert!(!debug.contains("123456"), "{debug}");
    assert_eq!(r.as_str(), raw);
    assert_eq!(String::from(r.clone()), raw);
    let json = serde_json::to_string(&r).expect("serialize");
    assert!(!json.contains("123456"), "never written to a file: {json}");
    assert!(json.contains("pin-value=***"), "{json}");
    assert!(r.has_pin_value());
    let back: KeyRef = serde_json::from_str(&json).expect("read back");
    assert!(
        back.has_pin_value(),
        "a redacted reference still says it had a PIN"
    );
    assert_eq!(r.file_mode(), 0o600);
    let plain: KeyRef = "pkcs11:token=t?pin-source=file:/p".parse().expect("parse");
    assert_eq!(plain.to_string(), plain.as_str());
    assert!(!plain.has_pin_value());
    assert_eq!(
        serde_json::to_string(&plain).expect("serialize"),
        "\"pkcs11:token=t?pin-source=file:/p\""
    );
    let file: KeyRef = "file:/k.pem".parse().expect("parse");
    assert_eq!(file.file_mode(), 0o644);
}

#[test]
fn a_pin_in_the_wrong_place_is_cut_off_with_everything_after_it() {
    let cases = [
        (
            "pkcs11:token=t;pin-value=93748;object=k?module-path=/m.so",
            "pkcs11:token=t;pin-value=***",
        ),
        (
            "pkcs11:token=t;object=k?module-path=/m.so&pin=93748&x=1",
            "pkcs11:token=t;object=k?module-path=/m.so&pin=***",
        ),
        ("pkcs11:PIN-VALUE=93748", "pkcs11:PIN-VALUE=***"),
    ];
    for (input, shown) in cases {
        assert_eq!(redact_pin_value(input), shown, "{input}");
        assert!(!redact_pin_value(input).contains("93748"));
    }
    // The usual places keep working: the query's pin-value masked in place, pin-source shown.
    assert_eq!(
        redact_pin_value("pkcs11:token=t?pin-value=93748&module-path=/m.so"),
        "pkcs11:token=t?pin-value=***&module-path=/m.so"
    );
    let source = "pkcs11:token=t?pin-source=file:/etc/pin&module-path=/m.so";
    assert_eq!(redact_pin_value(source), source);
}
