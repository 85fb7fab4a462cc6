use std::ffi::c_void;
use std::sync::Mutex;

use super::*;

struct Probe {
    log: Logger,
}

impl Plugin for Probe {
    const NAME: &'static str = "probe";
    const VERSION: &'static str = "9.9.9";

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        if config.get("fail").is_some() {
            return Err(PluginError::config("fail: as asked"));
        }
        if config.get("panic").is_some() {
            panic!("create was told to panic");
        }
        log.info("created");
        Ok(Probe { log })
    }

    fn present(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        if records.iter().any(|r| r.value == "panic") {
            panic!("present was told to panic");
        }
        self.log.debug("present");
        Ok(())
    }

    fn cleanup(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        Err(PluginError::new(ErrorKind::Refused, "no").with_records(records))
    }
}

static LINES: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(_ctx: *mut c_void, level: u32, message: RStr) {
    // SAFETY: the plugin passes a view valid for this call.
    let text = String::from_utf8_lossy(unsafe { message.as_bytes() }).into_owned();
    if let Ok(mut l) = LINES.lock() {
        l.push((level, text));
    }
}

fn take(table: &PluginVTable, buf: OwnedBuf) -> String {
    // SAFETY: the buffer came from this table's plugin and is released right after.
    let text = String::from_utf8_lossy(unsafe {
        RStr {
            ptr: buf.ptr,
            len: buf.len,
        }
        .as_bytes()
    })
    .into_owned();
    // SAFETY: passed back unchanged, once.
    unsafe { (table.free_buf)(buf) };
    text
}

fn create(table: &PluginVTable, config: &str) -> (i32, *mut c_void, String) {
    let mut instance = std::ptr::null_mut();
    let mut err = OwnedBuf::empty();
    // SAFETY: valid views and out pointers; `collect` is thread-safe.
    let status = unsafe {
        (table.create)(
            RStr::borrowed(config),
            collect,
            std::ptr::null_mut(),
            LOG_INFO,
            &mut instance,
            &mut err,
        )
    };
    (status, instance, take(table, err))
}

fn call(table: &PluginVTable, instance: *mut c_void, m: &str, input: &str) -> (i32, String) {
    let mut out = OwnedBuf::empty();
    // SAFETY: `instance` came from `create`; views and out pointer are valid.
    let status =
        unsafe { (table.call)(instance, RStr::borrowed(m), RStr::borrowed(input), &mut out) };
    (status, take(table, out))
}

#[test]
fn table_names_version_and_size() {
    let t = glue::vtable::<Probe>();
    assert_eq!(t.abi_version, ABI_VERSION);
    assert_eq!(t.size, std::mem::size_of::<PluginVTable>());
    // docs/plugin-abi.md documents the x86-64 layout for C and Go authors.
    #[cfg(target_pointer_width = "64")]
    {
        assert_eq!(std::mem::size_of::<PluginVTable>(), 80);
        assert_eq!(std::mem::offset_of!(PluginVTable, size), 8);
    }
    // SAFETY: static strings.
    assert_eq!(unsafe { t.name.as_bytes() }, b"probe");
    assert_eq!(unsafe { t.version.as_bytes() }, b"9.9.9");
}

#[test]
fn create_call_and_errors_round_trip_as_json() {
    let t = glue::vtable::<Probe>();
    let (status, instance, err) = create(&t, "{}");
    assert_eq!(status, STATUS_OK, "{err}");
    assert!(
        LINES
            .lock()
            .expect("lines")
            .iter()
            .any(|(l, m)| *l == LOG_INFO && m == "created")
    );

    let input = r#"{"records":[{"fqdn":"_acme-challenge.a.test.","value":"v"}]}"#;
    assert_eq!(
        call(&t, instance, method::PRESENT, input),
        (STATUS_OK, "{}".to_owned())
    );
    let (status, out) = call(&t, instance, method::CLEANUP, input);
    assert_eq!(status, STATUS_ERROR);
    let body: ErrorBody = serde_json::from_str(&out).expect("error body");
    assert_eq!(body.kind, "refused");
    assert_eq!(body.records.len(), 1);
    let (status, out) = call(&t, instance, "frobnicate", "{}");
    assert_eq!(status, STATUS_ERROR);
    assert!(out.contains("unsupported"), "{out}");
    let (status, out) = call(&t, instance, method::CHECK, "{}");
    assert_eq!((status, out.as_str()), (STATUS_OK, r#"{"checks":[]}"#));
    // SAFETY: created above, not used afterwards.
    unsafe { (t.destroy)(instance) };
}

#[test]
fn panics_become_status_panic_and_the_caller_survives() {
    let t = glue::vtable::<Probe>();
    let (status, instance, err) = create(&t, r#"{"panic":true}"#);
    assert_eq!(status, STATUS_PANIC);
    assert!(instance.is_null());
    assert!(err.contains("create was told to panic"), "{err}");

    let (status, instance, _) = create(&t, "{}");
    assert_eq!(status, STATUS_OK);
    let input = r#"{"records":[{"fqdn":"_acme-challenge.a.test.","value":"panic"}]}"#;
    let (status, out) = call(&t, instance, method::PRESENT, input);
    assert_eq!(status, STATUS_PANIC);
    let body: ErrorBody = serde_json::from_str(&out).expect("error body");
    assert_eq!(body.kind, "panic");
    assert!(body.message.contains("present was told to panic"), "{out}");
    // SAFETY: created above, not used afterwards.
    unsafe { (t.destroy)(instance) };
}

#[test]
fn config_errors_and_non_json_config() {
    let t = glue::vtable::<Probe>();
    let (status, _, err) = create(&t, r#"{"fail":1}"#);
    assert_eq!(status, STATUS_ERROR);
    assert!(err.contains("fail: as asked"), "{err}");
    let (status, _, err) = create(&t, "not json");
    assert_eq!(status, STATUS_ERROR);
    assert!(err.contains("not JSON"), "{err}");
}
