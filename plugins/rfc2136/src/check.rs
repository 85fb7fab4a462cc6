//! `check`: the TSIG key, then every zone the names need (or the configured zones): the SOA
//! at the zone's primary and a signed no-op UPDATE there.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use certfleet_dns_zones::Located;
use certfleet_plugin_abi::CheckResult;
use hickory_proto::rr::{Name, RData, RecordType};

use crate::dns::Auth;
use crate::{Rfc2136, dns, zone_error};

impl Rfc2136 {
    /// The TSIG key; then, for every zone the names need (each name's `_acme-challenge`
    /// CNAME followed) or else every configured zone: the zone's SOA at its primary and a
    /// signed no-op UPDATE.
    pub(crate) async fn run_checks(&self, names: &[String]) -> Vec<CheckResult> {
        let mut out = vec![match &self.auth {
            Auth::Hmac(key) => CheckResult::ok(
                format!("TSIG key {}", key.name),
                format!("loaded ({})", key.algorithm_name),
            ),
            Auth::Gss(g) => match g.check_credentials() {
                Ok(detail) => CheckResult::ok("Kerberos credentials", detail),
                Err(e) => CheckResult::failed("Kerberos credentials", e.message),
            },
        }];
        let mut zones: BTreeMap<Name, Option<SocketAddr>> = BTreeMap::new();
        for n in names {
            let base = n.trim_start_matches("*.").trim_end_matches('.');
            let what = format!("name {base}");
            let challenge = match dns::parse_name(&format!("_acme-challenge.{base}")) {
                Ok(c) => c,
                Err(e) => {
                    out.push(CheckResult::failed(what, e.message));
                    continue;
                }
            };
            match self.locate(&challenge).await {
                Ok(l) => {
                    out.push(CheckResult::ok(
                        what,
                        format!("{} is in zone {}", l.describe(), l.zone.apex),
                    ));
                    let server = self.server_for(&l).await.ok();
                    zones.entry(l.zone.apex).or_insert(server);
                }
                Err(e) => out.push(CheckResult::failed(what, e.message)),
            }
        }
        if names.is_empty() {
            if self.guard.is_empty() {
                out.push(CheckResult::ok(
                    "zones",
                    "found per name at issuance; pass names (plugin check rfc2136 --name \
                     www.example.com) or set `zone` to test the key against their zones",
                ));
            }
            for z in self.guard.zones() {
                zones.entry(z.clone()).or_insert(None);
            }
        }
        for (zone, server) in zones {
            out.extend(self.check_zone(&zone, server).await);
        }
        out
    }

    async fn check_zone(&self, zone: &Name, server: Option<SocketAddr>) -> Vec<CheckResult> {
        let mut out = Vec::new();
        let server = match server {
            Some(s) => s,
            None => {
                let found = self
                    .zones
                    .zone_of(&self.discovery(), zone)
                    .await
                    .map_err(zone_error);
                let located = found.map(|z| Located {
                    name: zone.clone(),
                    target: zone.clone(),
                    zone: z,
                });
                match located {
                    Ok(l) if l.zone.apex != *zone => {
                        out.push(CheckResult::failed(
                            format!("zone {zone}"),
                            format!("not a zone: {zone} lies in zone {}", l.zone.apex),
                        ));
                        return out;
                    }
                    Ok(l) => match self.server_for(&l).await {
                        Ok(s) => s,
                        Err(e) => {
                            out.push(CheckResult::failed(format!("zone {zone}"), e.message));
                            return out;
                        }
                    },
                    Err(e) => {
                        out.push(CheckResult::failed(format!("zone {zone}"), e.message));
                        return out;
                    }
                }
            }
        };
        let what = format!("zone {zone} at {server}");
        match dns::query(
            server,
            zone,
            RecordType::SOA,
            false,
            self.timeout,
            &self.counters,
        )
        .await
        {
            Ok(m) if m.answers.iter().any(|r| matches!(r.data, RData::SOA(_))) => {
                out.push(CheckResult::ok(format!("{what}: SOA"), "served"));
            }
            Ok(m) => out.push(CheckResult::failed(
                format!("{what}: SOA"),
                format!(
                    "no SOA in the answer ({}): the server is not authoritative for the zone",
                    dns::rcode_name(m.metadata.response_code)
                ),
            )),
            Err(e) => out.push(CheckResult::failed(format!("{what}: SOA"), e.message)),
        }
        let key_check = format!("{what}: signed no-op UPDATE");
        match dns::send_update(
            server,
            &self.auth,
            dns::noop_update(zone),
            self.timeout,
            &self.counters,
        )
        .await
        {
            Ok(()) => out.push(CheckResult::ok(
                key_check,
                match &self.auth {
                    Auth::Hmac(_) => "the server accepted the TSIG key".to_owned(),
                    Auth::Gss(g) => {
                        format!(
                            "the server accepted the GSS-TSIG signature ({})",
                            g.describe()
                        )
                    }
                },
            )),
            Err(e) => out.push(CheckResult::failed(key_check, e.message)),
        }
        out
    }
}
