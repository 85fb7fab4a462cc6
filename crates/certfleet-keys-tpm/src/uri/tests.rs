use super::*;

#[test]
fn references_round_trip() {
    for text in [
        "tpm:file=/var/lib/certfleet/acct.tpmkey?tcti=device:/dev/tpmrm0",
        "tpm:handle=0x81000010?tcti=swtpm:host=127.0.0.1,port=2321",
        "tpm:file=/a%20b/k%26.tpmkey",
    ] {
        let uri = TpmUri::parse(text).expect(text);
        assert_eq!(uri.to_string(), text);
        assert_eq!(uri.key_ref().scheme(), "tpm");
    }
    let uri = TpmUri::parse("tpm:file=/a%20b/k%26.tpmkey").expect("parse");
    assert_eq!(uri.location, TpmKeyLocation::File("/a b/k&.tpmkey".into()));
    assert_eq!(uri.tcti, None);
    let decimal = TpmUri::parse("tpm:handle=2164260880").expect("decimal");
    assert_eq!(decimal.location, TpmKeyLocation::Handle(0x8100_0010));
}

#[test]
fn bad_references_say_why() {
    for (input, expected) in [
        ("tpm:file=relative.tpmkey", "absolute"),
        ("tpm:handle=0x80000001", "persistent range"),
        ("tpm:handle=zz", "not a number"),
        ("tpm:key=x", "expected tpm:file="),
        ("tpm:file=/k?tcti=a&tcti=b", "twice"),
        ("tpm:file=/k?pin=1", "unknown query attribute"),
        ("pkcs11:token=x", "tpm:"),
    ] {
        let err = TpmUri::parse(input).expect_err(input).to_string();
        assert!(err.contains(expected), "{input}: {err}");
    }
}
