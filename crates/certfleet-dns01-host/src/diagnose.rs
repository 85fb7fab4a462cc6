//! The error text of a check that ran out of time.

use std::collections::BTreeMap;

use hickory_proto::rr::Name;

use crate::propagation::Target;

/// The error text for targets still pending at the deadline. A name that *no* authoritative
/// server of its zone serves is reported as missing from the zone (not lag); the others name
/// each lagging server and what it answered.
pub(crate) fn diagnose(
    mut pending: Vec<Target>,
    authoritative_per_name: &BTreeMap<Name, usize>,
) -> String {
    pending.sort_by(|a, b| a.server.cmp(&b.server).then(a.name.cmp(&b.name)));
    let mut missing_by_name: BTreeMap<Name, Vec<&Target>> = BTreeMap::new();
    for t in pending.iter().filter(|t| t.zone.is_some()) {
        missing_by_name.entry(t.name.clone()).or_default().push(t);
    }
    let missing: BTreeMap<Name, Vec<&Target>> = missing_by_name
        .into_iter()
        .filter(|(name, ts)| authoritative_per_name.get(name) == Some(&ts.len()))
        .collect();
    let mut parts = Vec::new();
    for (name, ts) in &missing {
        let zone = ts[0]
            .zone
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let answers = ts
            .iter()
            .map(|t| format!("{} answered {}", t.server, t.last))
            .collect::<Vec<_>>()
            .join("; ");
        parts.push(format!(
            "no authoritative server of zone {zone} serves {name} TXT ({answers}): this is not \
             a lagging server; was the record written into another zone, e.g. into the parent \
             zone below the zone cut at {zone} (wrong zone)?"
        ));
    }
    let mut by_server: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in pending
        .iter()
        .filter(|t| t.zone.is_none() || !missing.contains_key(&t.name))
    {
        by_server
            .entry(t.server.to_string())
            .or_default()
            .push(format!("{} answered {}", t.name, t.last));
    }
    parts.extend(by_server.into_iter().map(|(server, names)| {
        let shown: Vec<&String> = names.iter().take(3).collect();
        let more = names.len().saturating_sub(3);
        format!(
            "{server} lags: {}{}",
            shown.into_iter().cloned().collect::<Vec<_>>().join("; "),
            if more > 0 {
                format!(" (and {more} more names)")
            } else {
                String::new()
            }
        )
    }));
    parts.join(" | ")
}
