//! `certfleet plugin list | check NAME`.

use anyhow::{Context as _, Result, bail};
use certfleet_dns01_host::{PluginLibrary, PluginSolver};
use serde_json::json;

use crate::cli::PluginCommand;
use crate::context::Context;
use crate::dns::{plugin_config, plugin_paths};

pub async fn run(ctx: &Context, cmd: PluginCommand) -> Result<()> {
    match cmd {
        PluginCommand::List => list(ctx).await,
        PluginCommand::Check { name, names } => check(ctx, &name, &names).await,
    }
}

/// Every plugin found, loaded to read its name and version (loading runs no plugin code but
/// its entry point; a file that cannot be loaded is listed with the reason).
async fn list(ctx: &Context) -> Result<()> {
    let paths = plugin_paths(&ctx.settings);
    let dirs = paths.dirs.clone();
    let entries = tokio::task::spawn_blocking(move || {
        paths
            .list()
            .into_iter()
            .map(|(name, path)| match PluginLibrary::load(&path) {
                Ok(lib) => json!({
                    "name": name,
                    "path": path,
                    "plugin": lib.name(),
                    "version": lib.version(),
                }),
                Err(e) => json!({"name": name, "path": path, "error": e.to_string()}),
            })
            .collect::<Vec<_>>()
    })
    .await
    .context("the plugin loader thread failed")?;
    if entries.is_empty() {
        tracing::warn!(
            "no plugins found in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    super::print_json(&serde_json::Value::Array(entries))
}

/// Loads the plugin, creates an instance with its settings (which validates them) and runs
/// its own checks (for `names`, when given: e.g. every zone they need); exit 1 if any fails.
async fn check(ctx: &Context, name: &str, names: &[String]) -> Result<()> {
    let paths = plugin_paths(&ctx.settings);
    let path = paths.resolve(name)?;
    let config = plugin_config(&ctx.settings, name);
    let p = path.clone();
    let instance = tokio::task::spawn_blocking(move || -> Result<_> {
        let lib = PluginLibrary::load(&p)?;
        println!(
            "loaded {} {} from {}",
            lib.name(),
            lib.version(),
            p.display()
        );
        Ok(lib.instantiate(&config)?)
    })
    .await
    .context("the plugin loader thread failed")?
    .with_context(|| format!("DNS plugin {name}"))?;
    println!("ok    settings: accepted by the plugin");
    let solver = PluginSolver::new(name, instance);
    let checks = solver
        .check_names(names)
        .await
        .with_context(|| format!("DNS plugin {name}: check"))?;
    let mut failed = 0;
    for c in &checks {
        println!(
            "{} {}: {}",
            if c.ok { "ok   " } else { "FAIL " },
            c.what,
            c.detail
        );
        failed += usize::from(!c.ok);
    }
    if failed > 0 {
        bail!("plugin {name}: {failed} of {} checks failed", checks.len());
    }
    Ok(())
}
