//! Reading a plugin's table: the version and size checks, and the entry points copied out
//! of it — only those the table's `size` says it has (a version-1 table as first published
//! ends at `destroy`; `apply` was appended later and may be absent or null).

use std::ffi::c_void;
use std::path::Path;

use certfleet_plugin_abi::{ABI_VERSION, LogFn, OwnedBuf, PluginVTable, RStr, TABLE_SIZE_V1};

use crate::HostError;

type CreateFn =
    unsafe extern "C" fn(RStr, LogFn, *mut c_void, u32, *mut *mut c_void, *mut OwnedBuf) -> i32;
type CallFn = unsafe extern "C" fn(*mut c_void, RStr, RStr, *mut OwnedBuf) -> i32;
type ApplyFn = unsafe extern "C" fn(*mut c_void, RStr, *mut OwnedBuf) -> i32;

/// The entry points of a checked table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Table {
    pub name: RStr,
    pub version: RStr,
    pub create: CreateFn,
    pub call: CallFn,
    pub free_buf: unsafe extern "C" fn(OwnedBuf),
    pub destroy: unsafe extern "C" fn(*mut c_void),
    /// The combined change (`None`: the plugin predates it or does not combine; the host
    /// calls `cleanup` then `present`).
    pub apply: Option<ApplyFn>,
}

impl Table {
    /// Checks `abi_version` and `size` (the two fields every version keeps in place) before
    /// reading anything else, then copies the entry points the table has.
    ///
    /// # Safety
    /// `table` must be non-null and point at a table that starts like [`PluginVTable`] and
    /// is at least as long as its `size` field says, valid for the life of the process.
    pub unsafe fn read(table: *const PluginVTable, path: &Path) -> Result<Table, HostError> {
        // SAFETY: by the contract, these two fields are readable in every version's table.
        let (version, size) = unsafe {
            (
                std::ptr::addr_of!((*table).abi_version).read(),
                std::ptr::addr_of!((*table).size).read(),
            )
        };
        if version != ABI_VERSION {
            return Err(HostError::AbiMismatch {
                path: path.to_owned(),
                plugin_version: version,
                host_version: ABI_VERSION,
            });
        }
        if size < TABLE_SIZE_V1 {
            return Err(HostError::TableTooSmall {
                path: path.to_owned(),
                size,
                expected: TABLE_SIZE_V1,
                version,
            });
        }
        let has_apply = size >= std::mem::offset_of!(PluginVTable, apply) + size_of::<usize>();
        // SAFETY: every field read lies within the first `size` bytes (checked above).
        unsafe {
            Ok(Table {
                name: std::ptr::addr_of!((*table).name).read(),
                version: std::ptr::addr_of!((*table).version).read(),
                create: std::ptr::addr_of!((*table).create).read(),
                call: std::ptr::addr_of!((*table).call).read(),
                free_buf: std::ptr::addr_of!((*table).free_buf).read(),
                destroy: std::ptr::addr_of!((*table).destroy).read(),
                apply: if has_apply {
                    std::ptr::addr_of!((*table).apply).read()
                } else {
                    None
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use certfleet_plugin_abi::{Logger, Plugin, PluginError, TxtRecord};

    use super::*;

    struct Old;

    impl Plugin for Old {
        const NAME: &'static str = "old";
        const VERSION: &'static str = "0.9.0";
        fn create(_: serde_json::Value, _: Logger) -> Result<Self, PluginError> {
            Ok(Old)
        }
        fn present(&self, _: &[TxtRecord]) -> Result<(), PluginError> {
            Ok(())
        }
        fn cleanup(&self, _: &[TxtRecord]) -> Result<(), PluginError> {
            Ok(())
        }
    }

    /// A version-1 table exactly as plugins built before `apply` existed export it: 80
    /// bytes on x86-64, ending at `destroy`.
    #[repr(C)]
    struct TableV1 {
        abi_version: u32,
        size: usize,
        name: RStr,
        version: RStr,
        create: CreateFn,
        call: CallFn,
        free_buf: unsafe extern "C" fn(OwnedBuf),
        destroy: unsafe extern "C" fn(*mut c_void),
    }

    fn v1_table(size: usize) -> TableV1 {
        let t = certfleet_plugin_abi::glue::vtable::<Old>();
        TableV1 {
            abi_version: t.abi_version,
            size,
            name: t.name,
            version: t.version,
            create: t.create,
            call: t.call,
            free_buf: t.free_buf,
            destroy: t.destroy,
        }
    }

    #[test]
    fn a_table_from_before_apply_is_accepted_without_it() {
        assert_eq!(size_of::<TableV1>(), TABLE_SIZE_V1);
        let old = v1_table(size_of::<TableV1>());
        // SAFETY: a live table of `size` bytes that starts like PluginVTable.
        let t = unsafe { Table::read(std::ptr::from_ref(&old).cast(), Path::new("old.so")) }
            .expect("a version-1 table is accepted");
        assert!(t.apply.is_none(), "no apply read beyond the table's end");
        // SAFETY: a static string of the table.
        assert_eq!(unsafe { t.name.as_bytes() }, b"old");
    }

    #[test]
    fn tables_shorter_than_version_1_and_other_versions_are_refused() {
        let short = v1_table(TABLE_SIZE_V1 - 8);
        // SAFETY: as above; only the first two fields are read before the refusal.
        let err = unsafe { Table::read(std::ptr::from_ref(&short).cast(), Path::new("s.so")) }
            .expect_err("too small");
        assert!(
            matches!(err, HostError::TableTooSmall { expected: 80, .. }),
            "{err}"
        );
        let mut other = v1_table(TABLE_SIZE_V1);
        other.abi_version = ABI_VERSION + 1;
        // SAFETY: as above.
        let err = unsafe { Table::read(std::ptr::from_ref(&other).cast(), Path::new("o.so")) }
            .expect_err("other version");
        assert!(matches!(err, HostError::AbiMismatch { .. }), "{err}");
    }

    #[test]
    fn a_current_table_exports_apply_only_when_the_plugin_combines() {
        let old = certfleet_plugin_abi::glue::vtable::<Old>();
        // SAFETY: a full current table.
        let t = unsafe { Table::read(&old, Path::new("new.so")) }.expect("current table");
        assert!(
            t.apply.is_none(),
            "Old does not combine changes: null apply"
        );
    }
}
