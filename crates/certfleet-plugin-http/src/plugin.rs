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

/// A DNS provider's API as a plugin needs it; [`ApiPlugin`] makes it a [`Plugin`].
pub trait ProviderApi: Send + Sync + Sized + 'static {
    /// The plugin's name, as users write it in `--dns-plugin`.
    const NAME: &'static str;
    /// The plugin's own version.
    const VERSION: &'static str;

    /// Builds the API from the plugin's `[plugins.NAME]` table. Errors name the setting.
    fn create(table: ConfigTable, log: Logger) -> Result<Self, PluginError>;

    /// Adds or removes the values of `records`, one change per zone where the API allows.
    fn change(&self, records: &[TxtRecord], op: ChangeOp) -> Result<(), PluginError>;

    /// What can be tested without changing DNS: reachability, credentials.
    fn check(&self) -> Vec<CheckResult>;

    /// The client, and the API's own counters by metric name.
    fn counters(&self) -> (&ApiClient, Vec<(&'static str, &AtomicU64)>);
}

/// The plugin over a [`ProviderApi`] (`export_plugin!(ApiPlugin<MyApi>)`, usually through a
/// type alias named after the provider).
#[derive(Debug)]
pub struct ApiPlugin<A>(pub A);

impl<A: ProviderApi> Plugin for ApiPlugin<A> {
    const NAME: &'static str = A::NAME;
    const VERSION: &'static str = A::VERSION;

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        A::create(ConfigTable::new(A::NAME, config)?, log).map(ApiPlugin)
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
