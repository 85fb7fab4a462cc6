//! DNS names as the APIs see them: normalised, and the hosted zone of a record found by
//! longest suffix on label boundaries (`a.b.example.com` is in `b.example.com` rather than
//! `example.com` when both are hosted, and never in `ample.com`).

use certfleet_plugin_abi::{ErrorKind, PluginError, TxtRecord};

/// Lowercase, without the trailing dot: how names are compared.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `fqdn` is `zone` or below it (both normalised).
pub fn is_in(fqdn: &str, zone: &str) -> bool {
    fqdn == zone
        || (fqdn.len() > zone.len()
            && fqdn.ends_with(zone)
            && fqdn.as_bytes()[fqdn.len() - zone.len() - 1] == b'.')
}

/// The zone among `zones` with the longest name that contains `fqdn`; `name` gives a zone's
/// name (any case, trailing dot or not).
pub fn longest_match<'a, Z>(
    fqdn: &str,
    zones: &'a [Z],
    name: impl Fn(&Z) -> &str,
) -> Option<&'a Z> {
    let fqdn = normalize(fqdn);
    zones
        .iter()
        .filter(|z| {
            let n = normalize(name(z));
            !n.is_empty() && is_in(&fqdn, &n)
        })
        .max_by_key(|z| normalize(name(z)).len())
}

/// The candidate zone names of `fqdn`, longest first (`a.b.c` → `a.b.c`, `b.c`, `c`): for
/// APIs that look zones up by exact name.
pub fn candidates(fqdn: &str) -> Vec<String> {
    let fqdn = normalize(fqdn);
    let labels: Vec<&str> = fqdn.split('.').filter(|l| !l.is_empty()).collect();
    (0..labels.len()).map(|i| labels[i..].join(".")).collect()
}

/// The hosted zones of an account, listed once and listed again only when a name matches
/// none of them (a zone added since), so a batch costs no zone listing after the first.
#[derive(Debug)]
pub struct ZoneCache<Z> {
    zones: std::sync::Mutex<Option<Vec<Z>>>,
}

impl<Z> Default for ZoneCache<Z> {
    fn default() -> Self {
        ZoneCache {
            zones: std::sync::Mutex::new(None),
        }
    }
}

impl<Z: Clone> ZoneCache<Z> {
    /// The zone of `fqdn` by longest suffix (`name` gives a zone's name); `list` fetches
    /// every zone. When no hosted zone contains `fqdn`, even after listing afresh, the error
    /// is `NotFound`: "zone not found for FQDN: " and what `none_contains` says of the zones
    /// just listed.
    pub fn find(
        &self,
        fqdn: &str,
        name: impl Fn(&Z) -> &str,
        list: impl FnOnce() -> Result<Vec<Z>, PluginError>,
        none_contains: impl FnOnce(&[Z]) -> String,
    ) -> Result<Z, PluginError> {
        let mut guard = match self.zones.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(zones) = guard.as_ref()
            && let Some(z) = longest_match(fqdn, zones, &name)
        {
            return Ok(z.clone());
        }
        let zones = list()?;
        let found = longest_match(fqdn, &zones, &name).cloned().ok_or_else(|| {
            PluginError::new(
                ErrorKind::NotFound,
                format!("zone not found for {fqdn}: {}", none_contains(&zones)),
            )
        });
        *guard = Some(zones);
        found
    }
}

/// `records` grouped by zone, zones in first-seen order: `zone_of` finds a record's zone
/// and `key` identifies it. The first record without a zone ends the grouping with its error.
pub fn group_by_zone<Z, K: PartialEq>(
    records: &[TxtRecord],
    key: impl Fn(&Z) -> K,
    mut zone_of: impl FnMut(&TxtRecord) -> Result<Z, PluginError>,
) -> Result<Vec<(Z, Vec<&TxtRecord>)>, PluginError> {
    let mut groups: Vec<(Z, Vec<&TxtRecord>)> = Vec::new();
    for r in records {
        let z = zone_of(r).map_err(|e| e.with_records(std::slice::from_ref(r)))?;
        let k = key(&z);
        match groups.iter_mut().find(|(g, _)| key(g) == k) {
            Some((_, members)) => members.push(r),
            None => groups.push((z, vec![r])),
        }
    }
    Ok(groups)
}

/// Changes `records` zone by zone: grouped by zone ([`group_by_zone`]), then `change` for
/// each zone in turn while holding `write` when given (an instance's read-modify-writes must
/// not interleave); an error names the records of the zone that failed.
pub fn change_by_zone<Z, K: PartialEq>(
    records: &[TxtRecord],
    key: impl Fn(&Z) -> K,
    zone_of: impl FnMut(&TxtRecord) -> Result<Z, PluginError>,
    write: Option<&std::sync::Mutex<()>>,
    mut change: impl FnMut(&Z, &[TxtRecord]) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let groups = group_by_zone(records, key, zone_of)?;
    let _guard = write.map(|w| w.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    for (zone, members) in groups {
        let owned: Vec<TxtRecord> = members.into_iter().cloned().collect();
        change(&zone, &owned).map_err(|e| e.with_records(&owned))?;
    }
    Ok(())
}

/// A TXT value as one quoted character-string, `"` and `\` escaped (RFC 1035 §5.1): how
/// Route 53 and PowerDNS take TXT data.
pub fn txt_quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// The value of TXT data in presentation form: quoted strings joined (`"a" "b"` → `ab`),
/// escapes undone; unquoted data is returned as it is.
pub fn txt_unquote(data: &str) -> String {
    let data = data.trim();
    if !data.starts_with('"') {
        return data.to_owned();
    }
    let mut out = String::with_capacity(data.len());
    let mut in_str = false;
    let mut chars = data.chars();
    while let Some(c) = chars.next() {
        match (in_str, c) {
            (false, '"') => in_str = true,
            (false, _) => {}
            (true, '"') => in_str = false,
            (true, '\\') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (true, c) => out.push(c),
        }
    }
    out
}
