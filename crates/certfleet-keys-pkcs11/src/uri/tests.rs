use super::*;

#[test]
fn parses_the_documented_example() {
    let uri = Pkcs11Uri::parse(
        "pkcs11:token=certfleet;object=acct?module-path=/usr/lib/softhsm/libsofthsm2.so\
         &pin-source=file:/etc/certfleet/pin",
    )
    .expect("parse");
    assert_eq!(uri.token, "certfleet");
    assert_eq!(uri.object.as_deref(), Some("acct"));
    assert_eq!(
        uri.module_path.as_deref(),
        Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
    );
    assert_eq!(uri.pin, Some(PinSource::File("/etc/certfleet/pin".into())));
    assert_eq!(
        uri.to_string(),
        "pkcs11:token=certfleet;object=acct;type=private\
         ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/certfleet/pin"
    );
}

#[test]
fn percent_encoding_round_trips() {
    let uri = Pkcs11Uri::parse(
        "pkcs11:token=My%20Token;object=a%3Bb%3Fc;id=%01%ff%10;serial=123\
         ?module-path=/opt/p%26q/lib.so&pin-source=env:HSM_PIN",
    )
    .expect("parse");
    assert_eq!(uri.token, "My Token");
    assert_eq!(uri.object.as_deref(), Some("a;b?c"));
    assert_eq!(uri.id.as_deref(), Some(&[0x01, 0xff, 0x10][..]));
    assert_eq!(uri.serial.as_deref(), Some("123"));
    assert_eq!(uri.pin, Some(PinSource::Env("HSM_PIN".into())));
    let again = Pkcs11Uri::parse(&uri.to_uri_string()).expect("reparse");
    assert_eq!(again, uri);
    assert_eq!(uri.key_ref().scheme(), "pkcs11");
}

#[test]
fn pin_values_are_kept_but_never_shown() {
    let uri = Pkcs11Uri::parse("pkcs11:token=t;object=o?module-path=/m.so&pin-value=24680")
        .expect("parse");
    assert!(uri.to_uri_string().contains("pin-value=24680"));
    for shown in [uri.to_string(), format!("{uri:?}")] {
        assert!(!shown.contains("24680"), "{shown}");
        assert!(shown.contains("pin-value=***"), "{shown}");
    }
    let err = Pkcs11Uri::parse("pkcs11:object=o?pin-value=24680").expect_err("no token");
    assert!(!err.to_string().contains("24680"), "{err}");
    assert!(err.to_string().contains("token=LABEL"), "{err}");
}

#[test]
fn refuses_what_would_pick_the_wrong_key() {
    let cases = [
        ("pkcs11:object=o", "token=LABEL"),
        ("pkcs11:token=t;slot-id=three", "decimal number"),
        ("pkcs11:token=t;library-version=2.x", "MAJOR.MINOR"),
        (
            "pkcs11:token=t?module-path=/m.so&pin-value=***",
            "pin-source=file:",
        ),
        ("pkcs11:token=t;type=public", "only private keys sign"),
        ("pkcs11:token=t;colour=red", "unknown path attribute"),
        ("pkcs11:token=t?module-name=softhsm2", "module-path="),
        ("pkcs11:token=t?module-path=relative.so", "absolute"),
        ("pkcs11:token=t;token=u", "given twice"),
        (
            "pkcs11:token=t?pin-source=file:/a&pin-value=1",
            "given twice",
        ),
        ("pkcs11:token=t;id=%zz", "percent-encoding"),
        ("pkcs11:token=t?pin-source=relative", "pin-source"),
        ("file:/x", "pkcs11:"),
    ];
    for (input, expected) in cases {
        let err = Pkcs11Uri::parse(input).expect_err(input).to_string();
        assert!(err.contains(expected), "{input}: {err}");
    }
}

#[test]
fn p11tool_detailed_urls_parse_in_full() {
    // As printed by `p11tool --detailed-url --list-privkeys --login` for tpm2-pkcs11 (its
    // model is NUL-padded).
    let uri = Pkcs11Uri::parse(
        "pkcs11:library-description=TPM2.0%20Cryptoki;library-manufacturer=tpm2-software.github.io;\
         library-version=1.9;model=SW%20%20%20TPM%00%00%00%00%00%00%00%00;manufacturer=IBM;\
         serial=0000000000000000;token=tpm%20tok;id=%31;object=leaf;type=private;\
         slot-id=1;slot-description=swtpm;slot-manufacturer=IBM\
         ?module-path=/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so&pin-source=env:PIN",
    )
    .expect("parse");
    assert_eq!(uri.token, "tpm tok");
    assert_eq!(uri.library_description.as_deref(), Some("TPM2.0 Cryptoki"));
    assert_eq!(
        uri.library_manufacturer.as_deref(),
        Some("tpm2-software.github.io")
    );
    assert_eq!(uri.library_version, Some((1, 9)));
    assert_eq!(uri.model.as_deref(), Some("SW   TPM\0\0\0\0\0\0\0\0"));
    assert_eq!(uri.slot_id, Some(1));
    assert_eq!(uri.slot_description.as_deref(), Some("swtpm"));
    assert_eq!(uri.slot_manufacturer.as_deref(), Some("IBM"));
    assert_eq!(uri.id.as_deref(), Some(&b"1"[..]));
    let again = Pkcs11Uri::parse(&uri.to_uri_string()).expect("reparse");
    assert_eq!(again, uri);
    assert_eq!(
        Pkcs11Uri::parse("pkcs11:token=t;library-version=3")
            .expect("major only")
            .library_version,
        Some((3, 0))
    );
}
