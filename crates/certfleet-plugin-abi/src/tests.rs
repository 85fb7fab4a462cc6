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
        assert_eq!(std::mem::size_of::<PluginVTable>(), 88);
        assert_eq!(TABLE_SIZE_V1, 80, "version 1 as first published");
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

/// A plugin with its own combined change.
struct Combiner;

static APPLIED: Mutex<Vec<(usize, usize, bool)>> = Mutex::new(Vec::new());

impl Plugin for Combiner {
    const NAME: &'static str = "combiner";
    const VERSION: &'static str = "1.0.0";
    const COMBINED_CHANGES: bool = true;

    fn create(_config: serde_json::Value, _log: Logger) -> Result<Self, PluginError> {
        Ok(Combiner)
    }

    fn present(&self, _records: &[TxtRecord]) -> Result<(), PluginError> {
        Err(PluginError::new(ErrorKind::Internal, "present is not used"))
    }

    fn cleanup(&self, _records: &[TxtRecord]) -> Result<(), PluginError> {
        Err(PluginError::new(ErrorKind::Internal, "cleanup is not used"))
    }

    fn apply(&self, change: &ChangeInput) -> Result<(), PluginError> {
        APPLIED.lock().expect("lock").push((
            change.remove.len(),
            change.add.len(),
            change.host_checks_propagation,
        ));
        Ok(())
    }
}

#[test]
fn apply_is_exported_only_by_plugins_that_combine_changes() {
    assert!(
        glue::vtable::<Probe>().apply.is_none(),
        "Probe has no apply"
    );
    let t = glue::vtable::<Combiner>();
    let apply = t.apply.expect("Combiner exports apply");
    let (status, instance, err) = create(&t, "{}");
    assert_eq!(status, STATUS_OK, "{err}");
    let input = r#"{"remove":[{"fqdn":"_acme-challenge.a.test.","value":"old"}],
        "add":[{"fqdn":"_acme-challenge.b.test.","value":"n1"},{"fqdn":"_acme-challenge.c.test.","value":"n2"}],
        "host_checks_propagation":true}"#;
    let mut out = OwnedBuf::empty();
    // SAFETY: `instance` came from `create`; views and out pointer are valid.
    let status = unsafe { apply(instance, RStr::borrowed(input), &mut out) };
    assert_eq!((status, take(&t, out)), (STATUS_OK, "{}".to_owned()));
    assert_eq!(*APPLIED.lock().expect("lock"), vec![(1, 2, true)]);
    let mut out = OwnedBuf::empty();
    // SAFETY: as above.
    let status = unsafe { apply(instance, RStr::borrowed("not json"), &mut out) };
    assert_eq!(status, STATUS_ERROR);
    assert!(take(&t, out).contains("bad apply input"));
    // SAFETY: created above, not used afterwards.
    unsafe { (t.destroy)(instance) };
}

#[test]
fn the_default_apply_removes_first_then_adds() {
    let (_, instance, _) = create(&glue::vtable::<Probe>(), "{}");
    // SAFETY: created just above by Probe's table.
    let probe = unsafe { &*instance.cast::<Probe>() };
    let record = TxtRecord {
        fqdn: "_acme-challenge.a.test.".to_owned(),
        value: "v".to_owned(),
    };
    let only_add = ChangeInput {
        add: vec![record.clone()],
        ..ChangeInput::default()
    };
    assert_eq!(probe.apply(&only_add), Ok(()));
    // Probe's cleanup refuses: the default stops there, before adding.
    let both = ChangeInput {
        remove: vec![record.clone()],
        add: vec![record],
        host_checks_propagation: false,
    };
    assert_eq!(
        probe.apply(&both).map_err(|e| e.kind),
        Err(ErrorKind::Refused)
    );
    // SAFETY: created above, not used afterwards.
    unsafe { (glue::vtable::<Probe>().destroy)(instance) };
}
