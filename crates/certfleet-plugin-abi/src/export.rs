//! The `extern "C"` glue [`export_plugin!`](crate::export_plugin) instantiates for a
//! [`Plugin`](crate::Plugin). Every function catches panics: unwinding out of an
//! `extern "C"` function would abort the host.

/// Declares the plugin's entry symbol for `$plugin: Plugin`. Use once per library.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The plugin's entry point (see `certfleet_plugin_abi::ENTRY_SYMBOL`).
        #[unsafe(no_mangle)]
        pub extern "C" fn certfleet_plugin_entry() -> *const $crate::PluginVTable {
            static VTABLE: $crate::PluginVTable = $crate::glue::vtable::<$plugin>();
            &VTABLE
        }
    };
}

#[doc(hidden)]
pub mod glue {
    use std::any::Any;
    use std::ffi::c_void;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use crate::{
        ABI_VERSION, ErrorBody, ErrorKind, LogFn, Logger, OwnedBuf, Plugin, PluginError,
        PluginVTable, RStr, RecordsInput, STATUS_ERROR, STATUS_OK, STATUS_PANIC, method,
    };

    /// The table for `P`.
    pub const fn vtable<P: Plugin>() -> PluginVTable {
        PluginVTable {
            abi_version: ABI_VERSION,
            size: std::mem::size_of::<PluginVTable>(),
            name: RStr::from_static(P::NAME),
            version: RStr::from_static(P::VERSION),
            create: create::<P>,
            call: call::<P>,
            free_buf,
            destroy: destroy::<P>,
            apply: if P::COMBINED_CHANGES {
                Some(apply::<P>)
            } else {
                None
            },
        }
    }

    fn to_buf(bytes: Vec<u8>) -> OwnedBuf {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        OwnedBuf {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }

    fn json_buf<T: serde::Serialize>(value: &T) -> OwnedBuf {
        // Serializing our own plain structs cannot fail; fall back to a fixed error document.
        to_buf(serde_json::to_vec(value).unwrap_or_else(|_| {
            br#"{"kind":"internal","message":"cannot serialize the result"}"#.to_vec()
        }))
    }

    fn error_buf(e: &PluginError) -> OwnedBuf {
        json_buf(&e.to_body())
    }

    fn panic_message(payload: &(dyn Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".to_owned()
        }
    }

    fn panic_buf(what: &str, payload: &(dyn Any + Send)) -> OwnedBuf {
        json_buf(&ErrorBody {
            kind: ErrorKind::Panic.as_str().to_owned(),
            message: format!("plugin panicked in {what}: {}", panic_message(payload)),
            records: Vec::new(),
        })
    }

    fn str_arg<'a>(s: RStr, what: &str) -> Result<&'a str, PluginError> {
        // SAFETY: the host passes views valid for the duration of the call.
        let bytes = unsafe { s.as_bytes() };
        std::str::from_utf8(bytes)
            .map_err(|_| PluginError::new(ErrorKind::Internal, format!("{what} is not UTF-8")))
    }

    /// # Safety
    /// See [`PluginVTable::create`]; out pointers must be valid for writes.
    pub unsafe extern "C" fn create<P: Plugin>(
        config: RStr,
        log: LogFn,
        log_ctx: *mut c_void,
        log_max_level: u32,
        out_instance: *mut *mut c_void,
        out_error: *mut OwnedBuf,
    ) -> i32 {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let text = str_arg(config, "the configuration")?;
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| PluginError::config(format!("the configuration is not JSON: {e}")))?;
            // SAFETY: the ABI obliges the host to keep `log` callable with `log_ctx`.
            let logger = unsafe { Logger::new(log, log_ctx, log_max_level) };
            P::create(value, logger)
        }));
        let (status, buf) = match result {
            Ok(Ok(instance)) => {
                let ptr = Box::into_raw(Box::new(instance)).cast::<c_void>();
                // SAFETY: the host passes a valid out pointer.
                unsafe { out_instance.write(ptr) };
                return STATUS_OK;
            }
            Ok(Err(e)) => (STATUS_ERROR, error_buf(&e)),
            Err(payload) => (STATUS_PANIC, panic_buf("create", payload.as_ref())),
        };
        // SAFETY: the host passes a valid out pointer.
        unsafe { out_error.write(buf) };
        status
    }

    /// # Safety
    /// See [`PluginVTable::call`]; `instance` must come from `create::<P>`.
    pub unsafe extern "C" fn call<P: Plugin>(
        instance: *mut c_void,
        method_name: RStr,
        input: RStr,
        out: *mut OwnedBuf,
    ) -> i32 {
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the pointer came from Box::into_raw in `create` and is not destroyed yet.
            let plugin = unsafe { &*instance.cast::<P>() };
            let m = str_arg(method_name, "the method name")?;
            let input = str_arg(input, "the input")?;
            let records = || -> Result<RecordsInput, PluginError> {
                serde_json::from_str(input).map_err(|e| {
                    PluginError::new(ErrorKind::Internal, format!("bad {m} input: {e}"))
                })
            };
            let out = match m {
                method::PRESENT => {
                    plugin.present(&records()?.records)?;
                    serde_json::json!({})
                }
                method::CLEANUP => {
                    plugin.cleanup(&records()?.records)?;
                    serde_json::json!({})
                }
                method::CHECK => {
                    let input: crate::CheckInput = serde_json::from_str(input).map_err(|e| {
                        PluginError::new(ErrorKind::Internal, format!("bad {m} input: {e}"))
                    })?;
                    let checks = if input.names.is_empty() {
                        plugin.check()?
                    } else {
                        plugin.check_names(&input.names)?
                    };
                    serde_json::to_value(crate::CheckReport { checks })
                        .map_err(|e| PluginError::new(ErrorKind::Internal, e.to_string()))?
                }
                method::METRICS => serde_json::to_value(crate::MetricsReport {
                    counters: plugin.metrics(),
                })
                .map_err(|e| PluginError::new(ErrorKind::Internal, e.to_string()))?,
                other => {
                    return Err(PluginError::new(
                        ErrorKind::Unsupported,
                        format!("unknown method {other:?}"),
                    ));
                }
            };
            Ok(out)
        }));
        // SAFETY: the host passes a valid out pointer.
        unsafe { reply(result, "a call", out) }
    }

    /// # Safety
    /// See [`PluginVTable::apply`]; `instance` must come from `create::<P>`.
    pub unsafe extern "C" fn apply<P: Plugin>(
        instance: *mut c_void,
        input: RStr,
        out: *mut OwnedBuf,
    ) -> i32 {
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the pointer came from Box::into_raw in `create` and is not destroyed yet.
            let plugin = unsafe { &*instance.cast::<P>() };
            let input = str_arg(input, "the input")?;
            let change: crate::ChangeInput = serde_json::from_str(input).map_err(|e| {
                PluginError::new(ErrorKind::Internal, format!("bad apply input: {e}"))
            })?;
            plugin.apply(&change).map(|()| serde_json::json!({}))
        }));
        // SAFETY: the host passes a valid out pointer.
        unsafe { reply(result, "apply", out) }
    }

    /// Writes the answer of a `call` or `apply` (`what`) to `out`; returns its status.
    ///
    /// # Safety
    /// `out` must be valid for a write.
    unsafe fn reply(
        result: std::thread::Result<Result<serde_json::Value, PluginError>>,
        what: &str,
        out: *mut OwnedBuf,
    ) -> i32 {
        let (status, buf) = match result {
            Ok(Ok(value)) => (STATUS_OK, json_buf(&value)),
            Ok(Err(e)) => (STATUS_ERROR, error_buf(&e)),
            Err(payload) => (STATUS_PANIC, panic_buf(what, payload.as_ref())),
        };
        // SAFETY: the caller's contract.
        unsafe { out.write(buf) };
        status
    }

    /// # Safety
    /// `buf` must be a buffer this library returned, passed back unchanged, once.
    pub unsafe extern "C" fn free_buf(buf: OwnedBuf) {
        if buf.ptr.is_null() {
            return;
        }
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the buffer was made from a Vec<u8> by `to_buf` with these parts.
            drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
        }));
    }

    /// # Safety
    /// `instance` must come from `create::<P>` and not be used afterwards.
    pub unsafe extern "C" fn destroy<P: Plugin>(instance: *mut c_void) {
        if instance.is_null() {
            return;
        }
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the pointer came from Box::into_raw in `create`.
            drop(unsafe { Box::from_raw(instance.cast::<P>()) });
        }));
    }
}
