//! Serial-aware propagation: after an update, the zone's primary (the NS host named by the
//! SOA MNAME) carries a new SOA serial. Another authoritative server that answers an older
//! serial has not transferred the change yet, so asking it for each TXT record is wasted: the
//! check asks it for its SOA serial (one query per server per round, whatever the number of
//! records) and asks for the TXT records only once the serial caught up. The TXT answer stays
//! the proof.
//!
//! Serials are only compared where they are comparable: when no authoritative server is the
//! MNAME (hidden or multiple primaries) the zone is checked TXT-only, and a server that
//! stays behind is still asked for its TXT records every [`TXT_ANYWAY_EVERY`] rounds; if it
//! serves them with an older serial (PowerDNS with different SOA-EDIT settings, a
//! secondary signing its own copy) its serial is ignored from then on.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hickory_proto::rr::{Name, RData, RecordType};

use crate::query::Querier;

/// A server whose serial is behind is asked for its TXT records anyway every this many
/// rounds (the fallback where serials are not comparable).
pub(crate) const TXT_ANYWAY_EVERY: u64 = 4;

/// `a` is at or after `b` in serial number arithmetic (RFC 1982).
pub(crate) fn serial_at_or_after(a: u32, b: u32) -> bool {
    a == b || a.wrapping_sub(b) < (1 << 31)
}

/// What the check knows about one zone's serials.
#[derive(Debug, Default)]
pub(crate) struct ZoneSerials {
    /// The primary's serial read after the update; `None`: check TXT-only.
    pub(crate) reference: Option<u32>,
    /// The primary's address (its TXT answers are asked every round as usual).
    pub(crate) primary: Option<SocketAddr>,
    /// Servers whose serial reached the reference (or that are TXT-only).
    pub(crate) caught_up: BTreeMap<SocketAddr, bool>,
}

/// Reads the zone's SOA at a server: (serial, MNAME).
pub(crate) async fn soa_at(
    querier: &Querier,
    server: SocketAddr,
    zone: &Name,
) -> Option<(u32, Name)> {
    let a = querier
        .query(server, zone, RecordType::SOA, false)
        .await
        .ok()?;
    a.records.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if &r.name == zone => Some((soa.serial, soa.mname.clone())),
        _ => None,
    })
}

impl ZoneSerials {
    /// Learns the reference serial: `servers` are the zone's authoritative servers as
    /// (NS host label, address); the primary is the one named by the SOA MNAME.
    pub(crate) async fn learn(
        querier: &Querier,
        zone: &Name,
        servers: &[(String, SocketAddr)],
    ) -> (ZoneSerials, u64) {
        let mut queries = 0;
        let mut out = ZoneSerials::default();
        let Some((_, first)) = servers.first() else {
            return (out, queries);
        };
        queries += 1;
        let Some((_, mname)) = soa_at(querier, *first, zone).await else {
            return (out, queries);
        };
        let mname = mname.to_ascii().to_ascii_lowercase();
        let primaries: Vec<SocketAddr> = servers
            .iter()
            .filter(|(label, _)| *label == mname)
            .map(|(_, addr)| *addr)
            .collect();
        // One primary: its serial is the reference. None (hidden primary) or several
        // (multi-primary): TXT-only.
        let [primary] = primaries[..] else {
            return (out, queries);
        };
        queries += 1;
        if let Some((serial, _)) = soa_at(querier, primary, zone).await {
            out.reference = Some(serial);
            out.primary = Some(primary);
            out.caught_up.insert(primary, true);
        }
        (out, queries)
    }

    /// Whether `server` should be asked for its TXT records this round; asks its SOA
    /// serial first when that can save the TXT queries. Returns (ask TXT, queries sent).
    pub(crate) async fn ask_txt(
        &mut self,
        querier: &Querier,
        zone: &Name,
        server: SocketAddr,
        round: u64,
    ) -> (bool, u64) {
        let Some(reference) = self.reference else {
            return (true, 0);
        };
        if self.caught_up.get(&server).copied().unwrap_or(false) {
            return (true, 0);
        }
        match soa_at(querier, server, zone).await {
            Some((serial, _)) if serial_at_or_after(serial, reference) => {
                self.caught_up.insert(server, true);
                (true, 1)
            }
            // Behind: TXT only now and then, in case the serials are not comparable.
            Some(_) => (round % TXT_ANYWAY_EVERY == TXT_ANYWAY_EVERY - 1, 1),
            // No SOA answer: fall back to the TXT records.
            None => (true, 1),
        }
    }

    /// `server` served every TXT record while its serial was behind: its serials are not
    /// comparable with the primary's; ask it TXT-only from now on.
    pub(crate) fn served(&mut self, server: SocketAddr) {
        self.caught_up.insert(server, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_at_or_after(5, 5));
        assert!(serial_at_or_after(6, 5));
        assert!(!serial_at_or_after(4, 5));
        assert!(serial_at_or_after(1, u32::MAX), "wrapped past 2^32");
        assert!(!serial_at_or_after(u32::MAX, 1));
    }
}
