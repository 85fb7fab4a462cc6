//! The Rust side of a plugin: the [`Plugin`] trait, its error type and the host logger.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    ErrorBody, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_TRACE, LOG_WARN, LogFn, RStr, TxtRecord,
};

/// A DNS provider, written in Rust. [`export_plugin!`](crate::export_plugin) turns an
/// implementation into the C entry points. Methods are called from host worker threads,
/// possibly concurrently; they may block (the host never calls them on its async runtime).
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Short provider name, as users write it in `--dns-plugin`.
    const NAME: &'static str;
    /// The plugin's own version.
    const VERSION: &'static str;

    /// Validates `config` (the `[plugins.NAME]` table as a JSON object) and builds an
    /// instance. Errors name the offending setting; they never quote a secret.
    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError>;

    /// Adds each value (one TXT RR per record; other values of the same name stay). Returns
    /// when the provider accepted the change. One call should cost one change per zone.
    fn present(&self, records: &[TxtRecord]) -> Result<(), PluginError>;

    /// Removes exactly these values; a value already gone is not an error.
    fn cleanup(&self, records: &[TxtRecord]) -> Result<(), PluginError>;

    /// Whether [`apply`](Plugin::apply) is this plugin's own combined change (then the table
    /// exports the `apply` entry point); `false` leaves it null and hosts fall back to
    /// `cleanup` + `present`.
    const COMBINED_CHANGES: bool = false;

    /// Removes `change.remove` and adds `change.add`, ideally in one change per zone. The
    /// default runs [`cleanup`](Plugin::cleanup) then [`present`](Plugin::present).
    fn apply(&self, change: &crate::ChangeInput) -> Result<(), PluginError> {
        if !change.remove.is_empty() {
            self.cleanup(&change.remove)?;
        }
        if !change.add.is_empty() {
            self.present(&change.add)?;
        }
        Ok(())
    }

    /// Tests what can be tested without changing DNS: reachability, credentials. The default
    /// reports nothing testable.
    fn check(&self) -> Result<Vec<CheckResult>, PluginError> {
        Ok(Vec::new())
    }

    /// [`check`](Plugin::check) for the names the user is about to issue for (`www.example.com`,
    /// `*.example.com`), e.g. every zone they need. Hosts that send no names, and plugins that
    /// do not override this, get `check`.
    fn check_names(&self, names: &[String]) -> Result<Vec<CheckResult>, PluginError> {
        let _ = names;
        self.check()
    }

    /// Counters since creation (e.g. `update_messages`). The default has none.
    fn metrics(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// One line of a `check` report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What was tested (`zone example.com: SOA`, `TSIG key acme-key`).
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

impl CheckResult {
    pub fn ok(what: impl Into<String>, detail: impl Into<String>) -> CheckResult {
        CheckResult {
            what: what.into(),
            ok: true,
            detail: detail.into(),
        }
    }

    pub fn failed(what: impl Into<String>, detail: impl Into<String>) -> CheckResult {
        CheckResult {
            what: what.into(),
            ok: false,
            detail: detail.into(),
        }
    }
}

/// The class of a plugin failure; the host maps it to its own error types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting is missing or invalid.
    Config,
    /// The provider rejected our credentials (TSIG, API token).
    Auth,
    /// The provider refused the change by policy.
    Refused,
    /// A zone or record the change needs does not exist.
    NotFound,
    /// The provider could not be reached or did not answer in time.
    Network,
    /// Any other failure reported by the provider.
    Provider,
    /// The method is not supported by this plugin.
    Unsupported,
    /// A bug in the plugin.
    Internal,
    /// The plugin panicked.
    Panic,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Auth => "auth",
            ErrorKind::Refused => "refused",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Network => "network",
            ErrorKind::Provider => "provider",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
            ErrorKind::Panic => "panic",
        }
    }

    /// The kind named `s`; unknown names are [`ErrorKind::Provider`].
    pub fn parse(s: &str) -> ErrorKind {
        match s {
            "config" => ErrorKind::Config,
            "auth" => ErrorKind::Auth,
            "refused" => ErrorKind::Refused,
            "not_found" => ErrorKind::NotFound,
            "network" => ErrorKind::Network,
            "unsupported" => ErrorKind::Unsupported,
            "internal" => ErrorKind::Internal,
            "panic" => ErrorKind::Panic,
            _ => ErrorKind::Provider,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plugin failure: kind, message (no secrets), and the records concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: String,
    pub records: Vec<TxtRecord>,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> PluginError {
        PluginError {
            kind,
            message: message.into(),
            records: Vec::new(),
        }
    }

    pub fn config(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorKind::Config, message)
    }

    /// Attaches the records the failure concerns.
    pub fn with_records(mut self, records: &[TxtRecord]) -> PluginError {
        self.records = records.to_vec();
        self
    }

    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            kind: self.kind.as_str().to_owned(),
            message: self.message.clone(),
            records: self.records.clone(),
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for PluginError {}

/// Sends log lines to the host. Cheap to copy; usable from any thread until the instance is
/// destroyed.
#[derive(Clone, Copy)]
pub struct Logger {
    f: LogFn,
    ctx: *mut c_void,
    max_level: u32,
}

// SAFETY: the ABI requires the host's LogFn to be callable from any thread with its ctx.
unsafe impl Send for Logger {}
// SAFETY: as above; the logger itself is immutable.
unsafe impl Sync for Logger {}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("max_level", &self.max_level)
            .finish_non_exhaustive()
    }
}

impl Logger {
    /// A logger calling `f(ctx, …)` for messages at or below `max_level`.
    ///
    /// # Safety
    /// `f` must be safe to call with `ctx` from any thread for as long as the logger is used.
    pub unsafe fn new(f: LogFn, ctx: *mut c_void, max_level: u32) -> Logger {
        Logger { f, ctx, max_level }
    }

    /// Whether messages at `level` reach the host (skip formatting otherwise).
    pub fn enabled(&self, level: u32) -> bool {
        level <= self.max_level
    }

    pub fn log(&self, level: u32, message: &str) {
        if self.enabled(level) {
            // SAFETY: guaranteed by the constructor's contract; the view outlives the call.
            unsafe { (self.f)(self.ctx, level, RStr::borrowed(message)) }
        }
    }

    pub fn error(&self, message: &str) {
        self.log(LOG_ERROR, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(LOG_WARN, message);
    }

    pub fn info(&self, message: &str) {
        self.log(LOG_INFO, message);
    }

    pub fn debug(&self, message: &str) {
        self.log(LOG_DEBUG, message);
    }

    pub fn trace(&self, message: &str) {
        self.log(LOG_TRACE, message);
    }
}
