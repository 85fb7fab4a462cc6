//! Shared pieces of the HTTP-API DNS plugin tests (`dns_api_*.rs`): a built plugin driven
//! in-process through the real plugin host, record batches spread over zones, and the
//! `[dns01]` section for runs of the `certfleet` binary.

use certfleet_dns01_host::{HostError, PluginInstance, PluginLibrary};

use crate::common::{Env, Run};
use certfleet_plugin_abi::TxtRecord;
use certfleet_testenv::{plugin_dir, plugin_path};
use serde_json::{Value, json};

/// Loads the built plugin `name` and creates an instance with `config` (what
/// `[plugins.NAME]` would hold).
pub async fn instance(name: &str, config: Value) -> Result<PluginInstance, HostError> {
    let lib = PluginLibrary::load(&plugin_path(name))?;
    tokio::task::spawn_blocking(move || lib.instantiate(&config))
        .await
        .expect("instantiate thread")
}

/// `present` or `cleanup` of `records`.
pub async fn call(
    inst: &PluginInstance,
    method: &str,
    records: &[TxtRecord],
) -> Result<Value, HostError> {
    inst.call(method, json!({ "records": records })).await
}

/// The plugin's counters.
pub async fn metrics(inst: &PluginInstance) -> Value {
    inst.call("metrics", json!({})).await.expect("metrics")["counters"].clone()
}

/// `n` records spread round-robin over `zones`: `_acme-challenge.hNNN.<zone>.`, distinct
/// 43-character values.
pub fn spread(n: usize, zones: &[&str]) -> Vec<TxtRecord> {
    (0..n)
        .map(|i| TxtRecord {
            fqdn: format!("_acme-challenge.h{i:03}.{}.", zones[i % zones.len()]),
            value: format!("v{i:03}-{}", "x".repeat(38)),
        })
        .collect()
}

/// A plugin error's kind and message, or a panic naming what succeeded instead.
#[track_caller]
pub fn plugin_error(result: Result<Value, HostError>) -> (String, String) {
    match result {
        Err(HostError::Plugin { kind, message, .. }) => (kind, message),
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

/// `[dns01]` naming the built plugins, with the propagation check off (for APIs that serve
/// no DNS here).
pub fn dns01_without_check() -> String {
    format!(
        "[dns01]\nplugin_dirs = [\"{}\"]\n[dns01.propagation]\ncheck = false\n",
        plugin_dir().display()
    )
}

/// Writes `config` to `certfleet.toml` in the environment and issues one certificate for
/// `names` by dns-01 through `plugin` (`-vv`, so the test can look for leaked secrets),
/// into `<env>/out`. Returns the config path for later commands and the run.
pub async fn issue_through(env: &Env, config: &str, names: &[&str], plugin: &str) -> (String, Run) {
    let path = env.path("certfleet.toml");
    std::fs::write(&path, config).expect("config");
    let config = path.to_string_lossy().into_owned();
    let out = env.path("out").to_string_lossy().into_owned();
    let mut args = vec!["--config", &config, "-vv", "issue"];
    for name in names {
        args.extend(["--name", name]);
    }
    args.extend([
        "--challenge",
        "dns-01",
        "--dns-plugin",
        plugin,
        "--out",
        &out,
    ]);
    let run = env.run(&args).await;
    (config, run)
}
