//! Checks names given on the command line before anything touches the network.

use anyhow::{Result, bail};

/// Validates, lowercases and de-duplicates `names`, keeping the order of first appearance.
pub fn normalize(names: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    let mut problems = Vec::new();
    for raw in names {
        match certfleet_acme::normalize_dns_name(raw) {
            Ok(n) if out.contains(&n) => {
                tracing::warn!("--name {raw:?} given twice; using it once");
            }
            Ok(n) => out.push(n),
            Err(e) => problems.push(format!("--name {raw:?}: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("invalid name(s):\n  {}", problems.join("\n  "));
    }
    if out.is_empty() {
        bail!("no names given: pass --name at least once");
    }
    Ok(out)
}
