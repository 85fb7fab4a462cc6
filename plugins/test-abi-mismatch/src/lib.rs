//! A test plugin that was "built with another ABI version": its table declares
//! `ABI_VERSION + 1` (as a plugin built against a newer certfleet-plugin-abi would) while
//! keeping the first two fields where every version keeps them. The host must refuse it,
//! naming both versions, without calling any of its functions (each of them would abort).

use std::ffi::c_void;

use certfleet_plugin_abi::{ABI_VERSION, LogFn, OwnedBuf, PluginVTable, RStr};

/// The version this plugin claims.
pub const CLAIMED_ABI_VERSION: u32 = ABI_VERSION + 1;

unsafe extern "C" fn create(
    _config: RStr,
    _log: LogFn,
    _log_ctx: *mut c_void,
    _log_max_level: u32,
    _out_instance: *mut *mut c_void,
    _out_error: *mut OwnedBuf,
) -> i32 {
    std::process::abort()
}

unsafe extern "C" fn call(
    _instance: *mut c_void,
    _method: RStr,
    _input: RStr,
    _out: *mut OwnedBuf,
) -> i32 {
    std::process::abort()
}

unsafe extern "C" fn free_buf(_buf: OwnedBuf) {
    std::process::abort()
}

unsafe extern "C" fn destroy(_instance: *mut c_void) {
    std::process::abort()
}

static VTABLE: PluginVTable = PluginVTable {
    abi_version: CLAIMED_ABI_VERSION,
    size: std::mem::size_of::<PluginVTable>(),
    name: RStr::from_static("test-abi-mismatch"),
    version: RStr::from_static(env!("CARGO_PKG_VERSION")),
    create,
    call,
    free_buf,
    destroy,
    apply: None,
};

/// The entry point, as every plugin exports it.
#[unsafe(no_mangle)]
pub extern "C" fn certfleet_plugin_entry() -> *const PluginVTable {
    &VTABLE
}
