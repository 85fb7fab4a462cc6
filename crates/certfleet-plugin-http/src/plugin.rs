//! The [`Plugin`] of every HTTP-API plugin, written once: `present` and `cleanup` are one
//! [`ProviderApi::change`] each (adding or removing values), `check` is the API's check,
//! and the metrics are the client's request counters plus the API's own.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use certfleet_plugin_abi::{CheckResult, Logger, Plugin, PluginError, TxtRecord};

use crate::{ApiClient, ConfigTable};

/// Whether a change adds or removes TXT values (other values of a name always stay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    Add,
    Remove,
}

/// A plugin over an HTTP API: its name and version, and how its API is built from the
/// `[plugins.NAME]` table; [`ApiPlugin`] makes it a [`Plugin`].
pub trait ProviderPlugin: Send + Sync + 'static {
    /// The plugin's name, as users write it in `--dns-plugin`.
    const NAME: &'static str;
    /// The plugin's own version.
    const VERSION: &'static str;
    type Api: ProviderApi;

    /// Builds the API from the plugin's table. Errors name the setting.
    fn create(table: ConfigTable, log: Logger) -> Result<Self::Api, PluginError>;
}

/// What a DNS provider's API does for a plugin.
pub trait ProviderApi: Send + Sync + Sized + 'static {
    /// Adds or removes the values of `records`, one change per zone where the API allows.
    fn change(&self, records: &[TxtRecord], op: ChangeOp) -> Result<(), PluginError>;

    /// What can be tested without changing DNS: reachability, credentials.
    fn check(&self) -> Vec<CheckResult>;

    /// The client, and the API's own counters by metric name.
    fn counters(&self) -> (&ApiClient, Vec<(&'static str, &AtomicU64)>);
}

/// The plugin `P` (`export_plugin!(ApiPlugin<MyProvider>)`).
#[derive(Debug)]
pub struct ApiPlugin<P: ProviderPlugin>(pub P::Api);

impl<P: ProviderPlugin> Plugin for ApiPlugin<P> {
    const NAME: &'static str = P::NAME;
    const VERSION: &'static str = P::VERSION;

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        P::create(ConfigTable::new(P::NAME, config)?, log).map(ApiPlugin)
    }

    fn present(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        self.0.change(records, ChangeOp::Add)
    }

    fn cleanup(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        self.0.change(records, ChangeOp::Remove)
    }

    fn check(&self) -> Result<Vec<CheckResult>, PluginError> {
        Ok(self.0.check())
    }

    fn metrics(&self) -> BTreeMap<String, u64> {
        let (client, own) = self.0.counters();
        client.counters.metrics(&own)
    }
}
