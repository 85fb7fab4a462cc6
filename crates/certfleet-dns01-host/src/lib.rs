//! The DNS-01 plugin host: loads provider plugins at run time and checks propagation.
//!
//! - [`PluginPaths`] / [`PluginLibrary`] / [`PluginInstance`] find a plugin
//!   (`libcertfleet_plugin_<name>.so` in the plugin directories, or an explicit path), refuse
//!   files writable by group or others, check the ABI version and table size before calling
//!   anything else, keep the library loaded for the life of the process, and run every call
//!   on a blocking worker thread, off the async runtime.
//! - [`PluginSolver`] fills the [`Dns01Solver`](certfleet_dns01::Dns01Solver) seam with a
//!   plugin instance.
//! - [`AuthoritativeCheck`] fills [`PropagationCheck`](certfleet_dns01::PropagationCheck):
//!   every authoritative server of each record's zone (after following a CNAME) must serve
//!   the value before the CA is told to look; a server whose SOA serial is behind the
//!   primary's is asked for its serial, not for every record, until it caught up.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use certfleet_dns01::Dns01Solver;
//! use certfleet_dns01_host::{PluginLibrary, PluginPaths, PluginSolver};
//!
//! let paths = PluginPaths { dirs: vec!["/usr/lib/certfleet/plugins".into()], ..Default::default() };
//! let library = PluginLibrary::load(&paths.resolve("rfc2136")?)?;
//! let config = serde_json::json!({"server": "127.0.0.1:53", "key_file": "/etc/certfleet/acme.key"});
//! let instance = tokio::task::spawn_blocking(move || library.instantiate(&config)).await??;
//! let solver = PluginSolver::new("rfc2136", instance);
//! solver
//!     .present(&[certfleet_dns01::TxtRecord::for_domain("example.com", "value")])
//!     .await?;
//! # Ok(()) }
//! ```

mod diagnose;
mod error;
mod loader;
mod propagation;
mod query;
mod serial;
mod solver;
mod table;

pub use error::HostError;
pub use loader::{PluginInstance, PluginLibrary, PluginPaths, library_file_name};
pub use propagation::{AuthoritativeCheck, DiscoveryError, PropagationConfig, system_resolvers};
pub use solver::PluginSolver;

#[cfg(test)]
mod tests;
