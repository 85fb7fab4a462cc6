use super::*;

#[test]
fn sources_parse_and_describe_without_values() {
    assert_eq!(
        PinSource::parse("file:/etc/certfleet/pin"),
        Ok(PinSource::File("/etc/certfleet/pin".into()))
    );
    assert_eq!(
        PinSource::parse("file:///etc/pin"),
        Ok(PinSource::File("/etc/pin".into()))
    );
    assert_eq!(
        PinSource::parse("/run/pin"),
        Ok(PinSource::File("/run/pin".into()))
    );
    assert_eq!(
        PinSource::parse("env:HSM_PIN"),
        Ok(PinSource::Env("HSM_PIN".into()))
    );
    for bad in ["relative/pin", "env:", "env:A-B", "http://x/pin"] {
        assert!(PinSource::parse(bad).is_err(), "{bad}");
    }
    let literal = PinSource::Value(Pin::new("987654".into()));
    assert_eq!(literal.describe(), "pin-value");
    assert_eq!(format!("{literal:?}"), "Value(***)");
}

#[test]
fn pins_never_show_their_value() {
    let pin = Pin::new("s3cret-pin".into());
    assert_eq!(format!("{pin:?}"), "Pin(***)");
    assert_eq!(format!("{:?}", Some(pin.clone())), "Some(Pin(***))");
    assert_eq!(pin, Pin::new("s3cret-pin".into()));
    assert_ne!(pin, Pin::new("other".into()));
}

#[test]
fn pin_files_give_their_first_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pin");
    std::fs::write(&path, "1234\r\nignored\n").expect("write");
    let pin = PinSource::File(path.clone()).read().expect("read");
    assert_eq!(pin.secret().expose_secret(), "1234");
    std::fs::write(&path, "\n").expect("write");
    assert_eq!(
        PinSource::File(path.clone()).read().expect_err("empty"),
        "the PIN is empty"
    );
    let missing = PinSource::File(dir.path().join("nope")).read();
    assert!(missing.is_err());
    std::fs::write(&path, vec![b'1'; 5000]).expect("write");
    assert!(PinSource::File(path).read().is_err(), "oversized");
}
