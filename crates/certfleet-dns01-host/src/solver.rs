//! [`PluginSolver`]: the [`Dns01Solver`] seam filled by a loaded plugin.

use std::collections::BTreeMap;

use async_trait::async_trait;
use certfleet_dns01::{Change, Dns01Error, Dns01Solver, TxtRecord};
use certfleet_plugin_abi::{CheckReport, CheckResult, MetricsReport, method};
use serde_json::{Value, json};

use crate::{HostError, PluginInstance};

/// A DNS-01 solver backed by a plugin instance. Every call runs on a blocking worker thread.
#[derive(Clone, Debug)]
pub struct PluginSolver {
    instance: PluginInstance,
    /// The name the user chose (`--dns-plugin NAME`), used in logs and errors.
    name: String,
}

fn records_json(records: &[TxtRecord]) -> Value {
    json!({
        "records": records
            .iter()
            .map(|r| json!({"fqdn": r.fqdn, "value": r.value}))
            .collect::<Vec<_>>()
    })
}

impl PluginSolver {
    pub fn new(name: impl Into<String>, instance: PluginInstance) -> PluginSolver {
        PluginSolver {
            instance,
            name: name.into(),
        }
    }

    pub fn instance(&self) -> &PluginInstance {
        &self.instance
    }

    /// The plugin's counters (`update_messages`, `dns_queries`, …).
    pub async fn metrics(&self) -> Result<BTreeMap<String, u64>, HostError> {
        let v = self.instance.call(method::METRICS, json!({})).await?;
        let report: MetricsReport =
            serde_json::from_value(v).map_err(|e| self.bad_reply(method::METRICS, e))?;
        Ok(report.counters)
    }

    /// The plugin's own checks (reachability, credentials).
    pub async fn check(&self) -> Result<Vec<CheckResult>, HostError> {
        self.check_names(&[]).await
    }

    /// The plugin's checks for the names about to be issued for (e.g. every zone they need).
    pub async fn check_names(&self, names: &[String]) -> Result<Vec<CheckResult>, HostError> {
        let v = self
            .instance
            .call(method::CHECK, json!({ "names": names }))
            .await?;
        let report: CheckReport =
            serde_json::from_value(v).map_err(|e| self.bad_reply(method::CHECK, e))?;
        Ok(report.checks)
    }

    fn bad_reply(&self, method: &str, e: serde_json::Error) -> HostError {
        HostError::BadReply {
            plugin: self.name.clone(),
            method: method.to_owned(),
            detail: e.to_string(),
        }
    }
}

#[async_trait]
impl Dns01Solver for PluginSolver {
    fn name(&self) -> &str {
        &self.name
    }

    async fn present(&self, records: &[TxtRecord]) -> Result<(), Dns01Error> {
        self.instance
            .call(method::PRESENT, records_json(records))
            .await
            .map(|_| ())
            .map_err(|e| e.into_dns01(&self.name, records))
    }

    async fn cleanup(&self, records: &[TxtRecord]) -> Result<(), Dns01Error> {
        self.instance
            .call(method::CLEANUP, records_json(records))
            .await
            .map(|_| ())
            .map_err(|e| e.into_dns01(&self.name, records))
    }

    /// The plugin's own combined change when it exports one (one UPDATE per zone carrying
    /// deletes and adds); otherwise `cleanup` then `present`.
    async fn apply(&self, change: Change<'_>) -> Result<(), Dns01Error> {
        if !self.instance.library().combines_changes() {
            if !change.remove.is_empty() {
                self.cleanup(change.remove).await?;
            }
            if !change.add.is_empty() {
                self.present(change.add).await?;
            }
            return Ok(());
        }
        let all: Vec<TxtRecord> = change.remove.iter().chain(change.add).cloned().collect();
        let input = json!({
            "remove": records_json(change.remove)["records"],
            "add": records_json(change.add)["records"],
            "host_checks_propagation": change.host_checks_propagation,
        });
        let instance = self.instance.clone();
        let result = tokio::task::spawn_blocking(move || instance.apply_blocking(&input))
            .await
            .map_err(|e| HostError::Worker {
                plugin: self.name.clone(),
                method: "apply".to_owned(),
                detail: e.to_string(),
            });
        match result {
            Ok(Some(Ok(_))) => Ok(()),
            Ok(Some(Err(e))) | Err(e) => Err(e.into_dns01(&self.name, &all)),
            Ok(None) => Err(Dns01Error::Provider {
                provider: self.name.clone(),
                detail: "the plugin's apply entry point disappeared".to_owned(),
                records: all,
            }),
        }
    }
}
