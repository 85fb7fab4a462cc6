//! Finding, loading and calling plugins.
//!
//! A library is opened once and checked ([`TrustedLibrary`]: the file and every directory
//! above it owned by root or the running user and not writable by group or others), loaded
//! from that very descriptor, asked for its table, and the table's ABI version and size are
//! checked before any other function in it runs. Libraries
//! are never unloaded: threads that ran plugin code keep references into it (TLS
//! destructors), so `dlclose` is not reliably possible.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use certfleet_fs::{FsError, TrustedLibrary};
use certfleet_plugin_abi::{
    ENTRY_SYMBOL, EntryFn, ErrorBody, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_TRACE, LOG_WARN,
    OwnedBuf, RStr, STATUS_OK, STATUS_PANIC,
};
use serde_json::Value;
use tracing::level_filters::LevelFilter;

use crate::HostError;
use crate::table::Table;

/// File name of the plugin called `name`: `libcertfleet_plugin_<name>.so` (`-` → `_`).
pub fn library_file_name(name: &str) -> String {
    format!("libcertfleet_plugin_{}.so", name.replace('-', "_"))
}

/// Where plugins are looked for: explicit paths per name first, then each directory in order.
#[derive(Clone, Debug, Default)]
pub struct PluginPaths {
    pub dirs: Vec<PathBuf>,
    pub explicit: BTreeMap<String, PathBuf>,
}

impl PluginPaths {
    /// The library file for plugin `name` (a name, or a path when it contains `/`).
    pub fn resolve(&self, name: &str) -> Result<PathBuf, HostError> {
        if name.contains('/') {
            return Ok(PathBuf::from(name));
        }
        if let Some(p) = self.explicit.get(name) {
            return Ok(p.clone());
        }
        let file = library_file_name(name);
        let searched: Vec<PathBuf> = self.dirs.iter().map(|d| d.join(&file)).collect();
        searched
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| HostError::NotFound {
                name: name.to_owned(),
                searched,
            })
    }

    /// Every plugin visible: explicit ones, then `libcertfleet_plugin_*.so` in the
    /// directories (the first directory wins for a name). Sorted by name.
    pub fn list(&self) -> Vec<(String, PathBuf)> {
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (n, p) in &self.explicit {
            found.insert(n.clone(), p.clone());
        }
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let Some(stem) = path
                    .file_name()
                    .and_then(|f| f.to_str())
                    .and_then(|f| f.strip_prefix("libcertfleet_plugin_"))
                    .and_then(|f| f.strip_suffix(".so"))
                else {
                    continue;
                };
                found
                    .entry(stem.replace('_', "-"))
                    .or_insert_with(|| path.clone());
            }
        }
        found.into_iter().collect()
    }
}

/// A loaded plugin library: its table, for the life of the process.
#[derive(Debug)]
pub struct PluginLibrary {
    path: PathBuf,
    table: Table,
    name: String,
    version: String,
}

impl PluginLibrary {
    /// Loads the library at `path` (once per process; later calls return the same library).
    pub fn load(path: &Path) -> Result<&'static PluginLibrary, HostError> {
        static LOADED: OnceLock<Mutex<BTreeMap<PathBuf, &'static PluginLibrary>>> = OnceLock::new();
        let registry = LOADED.get_or_init(|| Mutex::new(BTreeMap::new()));
        let canonical = path
            .canonicalize()
            .map_err(|source| HostError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
        let mut loaded = registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lib) = loaded.get(&canonical) {
            return Ok(lib);
        }
        let lib: &'static PluginLibrary = Box::leak(Box::new(open(&canonical)?));
        tracing::debug!(plugin = %lib.name, version = %lib.version, path = %canonical.display(), "plugin loaded");
        loaded.insert(canonical, lib);
        Ok(lib)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name the plugin gives itself.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the plugin exports the combined change (`apply`: removals and additions in
    /// one change per zone). Plugins built before it existed, or that do not combine, do not.
    pub fn combines_changes(&self) -> bool {
        self.table.apply.is_some()
    }

    /// Creates an instance with `config` (a JSON object). Blocking: the plugin may do I/O.
    pub fn instantiate(&'static self, config: &Value) -> Result<PluginInstance, HostError> {
        let config_text = config.to_string();
        // The context lives as long as the process: the plugin may log from any thread.
        let ctx: &'static LogContext = Box::leak(Box::new(LogContext {
            plugin: self.name.clone(),
        }));
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut err = OwnedBuf::empty();
        // SAFETY: the table passed the version and size checks; the views, the log callback
        // and its context, and the out pointers are valid for the call.
        let status = unsafe {
            (self.table.create)(
                RStr::borrowed(&config_text),
                host_log,
                std::ptr::from_ref(ctx).cast_mut().cast(),
                max_log_level(),
                &mut instance,
                &mut err,
            )
        };
        let text = self.take(err);
        if status != STATUS_OK || instance.is_null() {
            return Err(self.error_from(status, &text));
        }
        Ok(PluginInstance {
            inner: Arc::new(Instance {
                library: self,
                ptr: instance,
            }),
        })
    }

    /// Copies a plugin buffer and hands it back to the plugin to free.
    fn take(&self, buf: OwnedBuf) -> String {
        if buf.ptr.is_null() {
            return String::new();
        }
        // SAFETY: the plugin returned `len` initialised bytes at `ptr`.
        let text = String::from_utf8_lossy(unsafe {
            RStr {
                ptr: buf.ptr,
                len: buf.len,
            }
            .as_bytes()
        })
        .into_owned();
        // SAFETY: returned unchanged to the library that allocated it, once.
        unsafe { (self.table.free_buf)(buf) };
        text
    }

    /// A call's result: its JSON on success, else the plugin's error (panics logged).
    fn reply(&self, status: i32, method: &str, out: OwnedBuf) -> Result<Value, HostError> {
        let text = self.take(out);
        if status != STATUS_OK {
            let e = self.error_from(status, &text);
            if status == STATUS_PANIC {
                tracing::error!(plugin = %self.name, method, "{e}");
            }
            return Err(e);
        }
        serde_json::from_str(&text).map_err(|e| HostError::BadReply {
            plugin: self.name.clone(),
            method: method.to_owned(),
            detail: e.to_string(),
        })
    }

    fn error_from(&self, status: i32, text: &str) -> HostError {
        let (kind, message) = match serde_json::from_str::<ErrorBody>(text) {
            Ok(body) => (body.kind, body.message),
            Err(_) => ("provider".to_owned(), format!("status {status}: {text}")),
        };
        HostError::Plugin {
            plugin: self.name.clone(),
            kind: if status == STATUS_PANIC {
                "panic".to_owned()
            } else {
                kind
            },
            message,
        }
    }
}

fn open(path: &Path) -> Result<PluginLibrary, HostError> {
    let not_a_plugin = |detail: String| HostError::NotAPlugin {
        path: path.to_owned(),
        detail,
    };
    let trusted = TrustedLibrary::open(path).map_err(|e| match e {
        FsError::Io { source, .. } => HostError::Unreadable {
            path: path.to_owned(),
            source,
        },
        FsError::WrongType { .. } => not_a_plugin("not a regular file".to_owned()),
        other => HostError::Untrusted {
            detail: other.to_string(),
        },
    })?;
    // SAFETY: loading runs the library's initialisers. That is the point of a plugin; the
    // file and its directories passed the trust check, it is loaded from the descriptor
    // that was checked, and plugins are trusted code by configuration.
    let library = trusted
        .load_and_keep(|path| unsafe { libloading::Library::new(path) })
        .map_err(|e| not_a_plugin(format!("cannot load it as a shared library: {e}")))?;
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol's type is the documented entry point type.
    let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }.map_err(|_| {
        not_a_plugin(format!(
            "it exports no `{ENTRY_SYMBOL}` symbol (plugins are built with certfleet-plugin-abi's export_plugin!)"
        ))
    })?;
    // SAFETY: the entry point takes no arguments and returns a pointer to a static table.
    let table = unsafe { entry() };
    if table.is_null() {
        return Err(not_a_plugin(format!("`{ENTRY_SYMBOL}` returned no table")));
    }
    // SAFETY: non-null, returned by the entry point: a static table that starts with the
    // fields every version keeps and is as long as its `size` says.
    let table = unsafe { Table::read(table, path)? };
    // SAFETY: the table's strings are statics of the loaded library.
    let text = |s: RStr| String::from_utf8_lossy(unsafe { s.as_bytes() }).into_owned();
    Ok(PluginLibrary {
        path: path.to_owned(),
        name: text(table.name),
        version: text(table.version),
        table,
    })
}

/// One configured plugin instance. Cheap to clone; calls may run concurrently (the ABI
/// requires instances to be thread-safe). Destroyed when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct PluginInstance {
    inner: Arc<Instance>,
}

#[derive(Debug)]
struct Instance {
    library: &'static PluginLibrary,
    ptr: *mut c_void,
}

// SAFETY: the ABI requires plugin instances to accept calls from any thread, concurrently.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: created by this library's `create`, destroyed once, never used afterwards.
        unsafe { (self.library.table.destroy)(self.ptr) };
    }
}

impl PluginInstance {
    pub fn library(&self) -> &'static PluginLibrary {
        self.inner.library
    }

    pub fn name(&self) -> &str {
        &self.inner.library.name
    }

    /// Calls `method` with `input` on the current thread (it blocks: use
    /// [`PluginInstance::call`] on an async runtime).
    pub fn call_blocking(&self, method: &str, input: &Value) -> Result<Value, HostError> {
        let lib = self.inner.library;
        let input_text = input.to_string();
        let mut out = OwnedBuf::empty();
        // SAFETY: a live instance of this library; views and out pointer valid for the call.
        let status = unsafe {
            (lib.table.call)(
                self.inner.ptr,
                RStr::borrowed(method),
                RStr::borrowed(&input_text),
                &mut out,
            )
        };
        lib.reply(status, method, out)
    }

    /// Calls the combined change (`apply`) with `input` on the current thread; `None` when
    /// the plugin does not export it.
    pub fn apply_blocking(&self, input: &Value) -> Option<Result<Value, HostError>> {
        let lib = self.inner.library;
        let apply = lib.table.apply?;
        let input_text = input.to_string();
        let mut out = OwnedBuf::empty();
        // SAFETY: a live instance of this library; view and out pointer valid for the call.
        let status = unsafe { apply(self.inner.ptr, RStr::borrowed(&input_text), &mut out) };
        Some(lib.reply(status, "apply", out))
    }

    /// Calls `method` on a blocking worker thread, off the async runtime.
    pub async fn call(&self, method: &str, input: Value) -> Result<Value, HostError> {
        let this = self.clone();
        let m = method.to_owned();
        tokio::task::spawn_blocking(move || this.call_blocking(&m, &input))
            .await
            .map_err(|e| HostError::Worker {
                plugin: self.name().to_owned(),
                method: method.to_owned(),
                detail: e.to_string(),
            })?
    }
}

struct LogContext {
    plugin: String,
}

fn max_log_level() -> u32 {
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => LOG_ERROR,
        LevelFilter::WARN => LOG_WARN,
        LevelFilter::INFO => LOG_INFO,
        LevelFilter::DEBUG => LOG_DEBUG,
        _ => LOG_TRACE,
    }
}

/// The host side of the plugin's log callback: forwards to `tracing`.
unsafe extern "C" fn host_log(ctx: *mut c_void, level: u32, message: RStr) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `ctx` is the leaked LogContext passed to `create`; the message view is
        // valid for this call.
        let (ctx, text) = unsafe {
            (
                &*ctx.cast::<LogContext>(),
                String::from_utf8_lossy(message.as_bytes()),
            )
        };
        let plugin = ctx.plugin.as_str();
        match level {
            LOG_ERROR => tracing::error!(target: "certfleet::plugin", plugin, "{text}"),
            LOG_WARN => tracing::warn!(target: "certfleet::plugin", plugin, "{text}"),
            LOG_INFO => tracing::info!(target: "certfleet::plugin", plugin, "{text}"),
            LOG_DEBUG => tracing::debug!(target: "certfleet::plugin", plugin, "{text}"),
            _ => tracing::trace!(target: "certfleet::plugin", plugin, "{text}"),
        }
    });
}
