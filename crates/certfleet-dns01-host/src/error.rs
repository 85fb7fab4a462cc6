use std::path::PathBuf;

use certfleet_dns01::Dns01Error;

/// Why a plugin could not be found, loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("DNS plugin {name:?} not found (looked for {}); build or install it, or set [plugins.{name}] path", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("plugin file {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file or a directory above it could be changed by someone other than root or
    /// the running user; `detail` names which one, its owner and mode.
    #[error("plugin {detail}")]
    Untrusted { detail: String },
    #[error("{} is not a certfleet plugin: {detail}", .path.display())]
    NotAPlugin { path: PathBuf, detail: String },
    #[error("plugin {} was built for plugin ABI version {plugin_version}, but this certfleet speaks version {host_version}; rebuild the plugin against certfleet-plugin-abi {host_version}", .path.display())]
    AbiMismatch {
        path: PathBuf,
        plugin_version: u32,
        host_version: u32,
    },
    #[error("plugin {}: its function table is {size} bytes, smaller than the {expected} bytes of ABI version {version}; the plugin is broken", .path.display())]
    TableTooSmall {
        path: PathBuf,
        size: usize,
        expected: usize,
        version: u32,
    },
    #[error("plugin {plugin}: {}: {message}", kind_text(.kind))]
    Plugin {
        plugin: String,
        /// The plugin's error kind (`config`, `auth`, `panic`, …).
        kind: String,
        message: String,
    },
    #[error("plugin {plugin}: {method} returned malformed JSON: {detail}")]
    BadReply {
        plugin: String,
        method: String,
        detail: String,
    },
    #[error("plugin {plugin}: the worker thread running {method} failed: {detail}")]
    Worker {
        plugin: String,
        method: String,
        detail: String,
    },
}

fn kind_text(kind: &str) -> &str {
    match kind {
        "config" => "configuration",
        "auth" => "authentication",
        "refused" => "refused",
        "not_found" => "not found",
        "network" => "network",
        "panic" => "the plugin panicked (the host caught it)",
        "unsupported" => "unsupported",
        "internal" => "internal error",
        _ => "provider error",
    }
}

impl HostError {
    /// The plugin's error kind, for errors reported by a plugin.
    pub fn plugin_kind(&self) -> Option<&str> {
        match self {
            HostError::Plugin { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// As a solver error for the issuance driver.
    pub fn into_dns01(self, provider: &str, records: &[certfleet_dns01::TxtRecord]) -> Dns01Error {
        match &self {
            HostError::Plugin { kind, message, .. } if kind == "config" => Dns01Error::Config {
                provider: provider.to_owned(),
                detail: message.clone(),
            },
            HostError::Plugin { .. } => Dns01Error::Provider {
                provider: provider.to_owned(),
                detail: strip_plugin_prefix(&self.to_string(), provider),
                records: records.to_vec(),
            },
            _ => Dns01Error::Provider {
                provider: provider.to_owned(),
                detail: self.to_string(),
                records: records.to_vec(),
            },
        }
    }
}

fn strip_plugin_prefix(text: &str, provider: &str) -> String {
    text.strip_prefix(&format!("plugin {provider}: "))
        .unwrap_or(text)
        .to_owned()
}
