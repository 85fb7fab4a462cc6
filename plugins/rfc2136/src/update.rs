//! One call's change: where each record goes, the UPDATE per zone carrying its deletes and
//! adds, and the proof of placement.
//!
//! A name is placed without any query when a zone cut above it is known (the deepest one:
//! a name below a known cut never goes to the parent) — the UPDATE's prerequisites then
//! prove it: the server refuses the whole message (YXRRSET) if a delegation lies between
//! the apex and the name or the name is a CNAME. Such a refused message's names are found
//! again the slow way (CNAMEs followed, SOA queries walking up) and sent once more; a second
//! refusal is reported as the zone-cut problem it is. Names with no known cut above them
//! are found the slow way first, which teaches the cut for the names after them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use certfleet_dns_zones::{Located, Zone};
use certfleet_plugin_abi::{ErrorKind, PluginError, TxtRecord};
use hickory_proto::rr::Name;

use crate::Rfc2136;
use crate::dns::{self, Change, Item};

/// Most presented names remembered for cleanup (beyond it, cleanup looks names up again).
pub(crate) const MAX_REMEMBERED: usize = 100_000;
/// Read-backs of an accepted UPDATE before the primary is said not to serve it (a server
/// may answer the UPDATE a moment before its query path sees the change).
const READ_BACK_ATTEMPTS: u32 = 5;
const READ_BACK_PAUSE: Duration = Duration::from_millis(200);

/// Where one record goes.
#[derive(Clone, Debug)]
struct Placed {
    /// The challenge name as asked.
    asked: Name,
    /// The RR to write (owner = the end of the CNAME chain).
    item: Item,
    zone: Name,
    server: SocketAddr,
    /// Placed from a known cut without asking: the prerequisites must prove it.
    presumed: bool,
}

impl Rfc2136 {
    /// Deletes `remove` and adds `add`: one UPDATE per zone (deletes first), placement
    /// proven by prerequisites; `read_back` asks the primary for every added value after.
    pub(crate) async fn change(
        &self,
        remove: &[TxtRecord],
        add: &[TxtRecord],
        read_back: bool,
    ) -> Result<(), PluginError> {
        let mut placed = Vec::new();
        for (change, records) in [(Change::Delete, remove), (Change::Add, add)] {
            for (name, value) in dns::names_of(records)? {
                placed.push(self.place(name, value, change).await?);
            }
        }
        let refused = self.send(&placed, false).await?;
        if !refused.is_empty() {
            let mut again = Vec::new();
            for p in &refused {
                again.push(if p.presumed {
                    self.zones.forget_name(&p.asked);
                    self.located(p.asked.clone(), p.item.value.clone(), p.item.change)
                        .await?
                } else {
                    p.clone()
                });
            }
            self.send(&again, true).await?;
            // The retried records' placements replace the refused ones.
            let key = |p: &Placed| (p.asked.clone(), p.item.value.clone(), p.item.change);
            let retried: std::collections::BTreeSet<_> = refused.iter().map(key).collect();
            placed.retain(|p| !retried.contains(&key(p)));
            placed.extend(again);
        }
        if read_back {
            for ((zone, server), records) in groups(&placed, Change::Add) {
                self.read_back(&zone, server, &records).await?;
            }
        }
        let mut map = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        for p in &placed {
            match p.item.change {
                Change::Add => {
                    if map.len() >= MAX_REMEMBERED {
                        map.clear();
                    }
                    map.insert(
                        p.asked.clone(),
                        (p.item.name.clone(), p.zone.clone(), p.server),
                    );
                }
                Change::Delete => {
                    map.remove(&p.asked);
                }
            }
        }
        Ok(())
    }

    /// Where `name` goes: remembered from its add, presumed from a known cut, or found.
    async fn place(
        &self,
        name: Name,
        value: String,
        change: Change,
    ) -> Result<Placed, PluginError> {
        let remembered = self
            .resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
            .cloned();
        if let Some((target, zone, server)) = remembered {
            return Ok(Placed {
                asked: name,
                item: Item {
                    name: target,
                    value,
                    change,
                    prove: change == Change::Add,
                },
                zone,
                server,
                presumed: false,
            });
        }
        if let Some(zone) = self.zones.presumed_zone(&name) {
            let located = Located {
                name: name.clone(),
                target: name.clone(),
                zone,
            };
            self.guard.check(&located).map_err(crate::zone_error)?;
            let server = self.server_for(&located).await?;
            return Ok(Placed {
                asked: name.clone(),
                item: Item {
                    name,
                    value,
                    change,
                    prove: true,
                },
                zone: located.zone.apex,
                server,
                presumed: true,
            });
        }
        self.located(name, value, change).await
    }

    /// Where `name` goes, found by queries (CNAMEs followed, SOA walking up).
    async fn located(
        &self,
        name: Name,
        value: String,
        change: Change,
    ) -> Result<Placed, PluginError> {
        let l = self.locate(&name).await?;
        let server = self.server_for(&l).await?;
        let Located {
            target,
            zone: Zone { apex, .. },
            ..
        } = l;
        Ok(Placed {
            asked: name,
            item: Item {
                name: target,
                value,
                change,
                prove: true,
            },
            zone: apex,
            server,
            presumed: false,
        })
    }

    /// Sends one UPDATE per zone (more only beyond the message size). Returns the records
    /// of zones whose UPDATE was refused for a prerequisite, unless `last` (then that is an
    /// error). Re-sending a zone's records is safe: adding an RR that exists and deleting
    /// one that is gone change nothing.
    async fn send(&self, placed: &[Placed], last: bool) -> Result<Vec<Placed>, PluginError> {
        let mut by_zone: BTreeMap<(Name, SocketAddr), Vec<&Placed>> = BTreeMap::new();
        for p in placed {
            by_zone
                .entry((p.zone.clone(), p.server))
                .or_default()
                .push(p);
        }
        let mut refused = Vec::new();
        for ((zone, server), ps) in by_zone {
            let items: Vec<Item> = ps.iter().map(|p| p.item.clone()).collect();
            let messages = dns::update_messages(&zone, &items, self.ttl);
            let count = |c: Change| items.iter().filter(|i| i.change == c).count();
            let sent = messages.len();
            let mut applied_all = true;
            for msg in messages {
                let applied = dns::send_update_with_proofs(
                    server,
                    &self.auth,
                    msg,
                    self.timeout,
                    &self.counters,
                )
                .await?;
                if applied {
                    continue;
                }
                if last || !ps.iter().any(|p| p.presumed) {
                    return Err(wrong_zone(&zone, server, &ps));
                }
                self.log.debug(&format!(
                    "rfc2136: zone {zone} at {server} refused a placement (YXRRSET): finding \
                     its {} name(s) by queries",
                    ps.len()
                ));
                refused.extend(ps.iter().map(|p| (*p).clone()));
                applied_all = false;
                break;
            }
            if applied_all {
                // Logged once applied, so the lines add up to what the zone holds.
                self.log.info(&format!(
                    "rfc2136: deleting {} and adding {} TXT record(s) in zone {zone} at \
                     {server} ({sent} UPDATE message(s))",
                    count(Change::Delete),
                    count(Change::Add),
                ));
            }
        }
        Ok(refused)
    }

    /// Verify before blaming: the server that accepted the UPDATE must now serve every
    /// value; if it does not, the record went somewhere nobody can see it, and waiting for
    /// propagation would only blame the secondaries. Skipped when the host checks every
    /// authoritative server itself.
    async fn read_back(
        &self,
        zone: &Name,
        server: SocketAddr,
        records: &[(Name, String)],
    ) -> Result<(), PluginError> {
        let mut wanted: BTreeMap<&Name, Vec<&str>> = BTreeMap::new();
        for (name, value) in records {
            wanted.entry(name).or_default().push(value);
        }
        for (name, values) in wanted {
            let mut last = String::new();
            for attempt in 0..READ_BACK_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(READ_BACK_PAUSE).await;
                }
                let (rcode, served) =
                    dns::served_txt(server, name, self.timeout, &self.counters).await?;
                if values.iter().all(|v| served.iter().any(|s| s == v)) {
                    last.clear();
                    break;
                }
                last = if served.is_empty() {
                    format!("{} with no TXT", dns::rcode_name(rcode))
                } else {
                    format!("{} with other values only", dns::rcode_name(rcode))
                };
            }
            if !last.is_empty() {
                return Err(PluginError::new(
                    ErrorKind::Provider,
                    format!(
                        "the primary accepted the update but does not serve {name} TXT: is \
                         the record below a zone cut (wrong zone)? (zone {zone} at {server} \
                         answered {last})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The records of `change` per (zone, server), as (owner, value).
fn groups(placed: &[Placed], change: Change) -> BTreeMap<(Name, SocketAddr), Vec<(Name, String)>> {
    let mut out: BTreeMap<(Name, SocketAddr), Vec<(Name, String)>> = BTreeMap::new();
    for p in placed.iter().filter(|p| p.item.change == change) {
        out.entry((p.zone.clone(), p.server))
            .or_default()
            .push((p.item.name.clone(), p.item.value.clone()));
    }
    out
}

fn wrong_zone(zone: &Name, server: SocketAddr, ps: &[&Placed]) -> PluginError {
    let mut names: Vec<String> = ps.iter().map(|p| p.item.name.to_string()).collect();
    names.dedup();
    let more = names.len().saturating_sub(3);
    names.truncate(3);
    PluginError::new(
        ErrorKind::Provider,
        format!(
            "zone {zone} at {server} refused the UPDATE's prerequisites (YXRRSET: a delegation \
             lies between the zone and a name, or a name is a CNAME) for {}{}: is the record \
             below a zone cut (wrong zone)?",
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    )
}
