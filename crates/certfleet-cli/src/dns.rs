//! DNS-01 composition: which plugin, where it lives, its settings, and the propagation check.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use certfleet_dns01::PropagationCheck;
use certfleet_dns01_host::{
    AuthoritativeCheck, PluginLibrary, PluginPaths, PluginSolver, PropagationConfig,
};
use serde_json::Value;

use crate::config::Settings;

/// Where plugins are looked for: `[dns01] plugin_dirs`, else beside the binary, then
/// `<bin>/../lib/certfleet/plugins` and `/usr/lib/certfleet/plugins`; `[plugins.NAME] path`
/// names one library explicitly.
pub fn plugin_paths(settings: &Settings) -> PluginPaths {
    let dirs = if settings.dns01.plugin_dirs.is_empty() {
        let mut dirs = Vec::new();
        if let Some(bin_dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
        {
            dirs.push(bin_dir.join("../lib/certfleet/plugins"));
            dirs.insert(0, bin_dir);
        }
        dirs.push(PathBuf::from("/usr/lib/certfleet/plugins"));
        dirs
    } else {
        settings.dns01.plugin_dirs.clone()
    };
    let explicit = settings
        .plugins
        .0
        .iter()
        .filter_map(|(name, table)| {
            table
                .get("path")
                .and_then(Value::as_str)
                .map(|p| (name.clone(), PathBuf::from(p)))
        })
        .collect();
    PluginPaths { dirs, explicit }
}

/// The plugin's own settings: `[plugins.NAME]` without the host's `path` key.
pub fn plugin_config(settings: &Settings, name: &str) -> Value {
    let mut table = settings
        .plugins
        .0
        .get(name)
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    if let Some(map) = table.as_object_mut() {
        map.remove("path");
    }
    table
}

/// Finds, loads and configures plugin `name`; loading and `create` run off the runtime.
pub async fn load_solver(settings: &Settings, name: &str) -> Result<PluginSolver> {
    let paths = plugin_paths(settings);
    let config = plugin_config(settings, name);
    let owned = name.to_owned();
    let instance = tokio::task::spawn_blocking(move || -> Result<_> {
        let path = paths.resolve(&owned)?;
        let library = PluginLibrary::load(&path)?;
        Ok(library.instantiate(&config)?)
    })
    .await
    .context("the plugin loader thread failed")?
    .with_context(|| format!("DNS plugin {name}"))?;
    Ok(PluginSolver::new(name, instance))
}

/// The propagation check `[dns01.propagation]` asks for, if any.
pub fn propagation(settings: &Settings) -> Result<Option<Arc<dyn PropagationCheck>>> {
    if !settings.dns01.propagation.check {
        return Ok(None);
    }
    Ok(Some(Arc::new(authoritative_check(settings)?)))
}

/// The authoritative-server check configured in `[dns01.propagation]` (also used, once, to
/// see which dns-persist-01 records are published).
pub fn authoritative_check(settings: &Settings) -> Result<AuthoritativeCheck> {
    let p = &settings.dns01.propagation;
    let addrs = |list: &[String]| -> Result<Vec<std::net::SocketAddr>> {
        list.iter()
            .map(|a| {
                a.parse()
                    .with_context(|| format!("{a:?}: expected IP:PORT"))
            })
            .collect()
    };
    let mut nameserver_addresses = std::collections::BTreeMap::new();
    for (host, list) in &p.nameserver_addresses {
        let mut key = host.to_ascii_lowercase();
        if !key.ends_with('.') {
            key.push('.');
        }
        nameserver_addresses.insert(key, addrs(list)?);
    }
    let config = PropagationConfig {
        timeout: Duration::from_secs(p.timeout_secs.max(1)),
        interval: Duration::from_millis(p.interval_millis.max(50)),
        query_timeout: Duration::from_millis(p.query_timeout_millis.max(100)),
        discovery: addrs(&p.discovery_resolvers)?,
        recursive: addrs(&p.recursive_resolvers)?,
        nameserver_port: p.nameserver_port,
        nameserver_addresses,
        ..PropagationConfig::default()
    };
    Ok(AuthoritativeCheck::new(config)?)
}
