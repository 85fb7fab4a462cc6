//! DNS work of the plugin: queries for zone discovery (CNAME, SOA), and RFC 2136 UPDATE
//! messages signed with TSIG, over UDP with TCP fallback.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use certfleet_plugin_abi::{ErrorKind, PluginError, TxtRecord};
use hickory_client::client::{Client, ClientHandle};
use hickory_client::proto::DnsHandle;
use hickory_client::proto::ProtoError;
use hickory_client::proto::dnssec::tsig::TSigner;
use hickory_client::proto::op::{
    Edns, Message, MessageFinalizer, MessageType, OpCode, Query, ResponseCode, UpdateMessage,
};
use hickory_client::proto::rr::rdata::TXT;
use hickory_client::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::udp::UdpClientStream;
use hickory_client::proto::xfer::FirstAnswer;

use crate::tsig::TsigKey;

/// Largest UPDATE sent over UDP; anything bigger goes over TCP at once (1232 is the
/// DNS-flag-day safe EDNS payload size).
const UDP_MAX: usize = 1232;
/// Largest encoded UPDATE (records only) per message: DNS messages over TCP are at most
/// 65535 bytes, and the TSIG record needs room too. A bigger batch for one zone is split.
const MESSAGE_BUDGET: usize = 60_000;
/// Longest CNAME chain followed from an `_acme-challenge` name.
const MAX_CNAME_HOPS: usize = 8;
/// TSIG fudge (seconds of clock skew accepted), BIND's default.
const FUDGE: u16 = 300;

/// Counters reported through the `metrics` call.
#[derive(Debug, Default)]
pub struct Counters {
    pub update_messages: AtomicU64,
    pub dns_queries: AtomicU64,
    pub tcp_fallbacks: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Add or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Add,
    Delete,
}

fn net_err(what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::new(ErrorKind::Network, format!("{what}: {e}"))
}

pub fn parse_name(s: &str) -> Result<Name, PluginError> {
    let mut name = Name::from_str(s)
        .map_err(|e| PluginError::new(ErrorKind::Internal, format!("bad DNS name {s:?}: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

async fn udp_client(
    addr: SocketAddr,
    timeout: Duration,
    signer: Option<Arc<dyn MessageFinalizer>>,
) -> Result<Client, ProtoError> {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::new())
        .with_timeout(Some(timeout))
        .with_signer(signer)
        .build();
    let (client, bg) = Client::connect(conn).await?;
    tokio::spawn(bg);
    Ok(client)
}

async fn tcp_client(
    addr: SocketAddr,
    timeout: Duration,
    signer: Option<Arc<dyn MessageFinalizer>>,
) -> Result<Client, ProtoError> {
    let (stream, handle) =
        TcpClientStream::new(addr, None, Some(timeout), TokioRuntimeProvider::new());
    let (client, bg) = Client::with_timeout(stream, handle, timeout, signer).await?;
    tokio::spawn(bg);
    Ok(client)
}

/// One plain query (recursion desired: `resolver` may be a recursive resolver), over UDP and
/// again over TCP when the answer is truncated.
pub async fn query(
    resolver: SocketAddr,
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
    counters: &Counters,
) -> Result<Message, PluginError> {
    let what = format!("{rtype} query for {name} at {resolver}");
    Counters::bump(&counters.dns_queries);
    let mut client = udp_client(resolver, timeout, None)
        .await
        .map_err(|e| net_err(&what, e))?;
    let resp = client
        .query(name.clone(), DNSClass::IN, rtype)
        .await
        .map_err(|e| net_err(&what, e))?;
    if !resp.truncated() {
        return Ok(resp.into_message());
    }
    Counters::bump(&counters.dns_queries);
    Counters::bump(&counters.tcp_fallbacks);
    let mut client = tcp_client(resolver, timeout, None)
        .await
        .map_err(|e| net_err(&what, e))?;
    let resp = client
        .query(name.clone(), DNSClass::IN, rtype)
        .await
        .map_err(|e| net_err(&what, e))?;
    Ok(resp.into_message())
}

/// The name an update for `fqdn` must change: `fqdn` itself, or the end of its CNAME chain
/// (`_acme-challenge` delegated into a validation zone).
pub async fn follow_cname(
    resolver: SocketAddr,
    fqdn: &Name,
    timeout: Duration,
    counters: &Counters,
) -> Result<Name, PluginError> {
    let mut name = fqdn.clone();
    for _ in 0..MAX_CNAME_HOPS {
        let msg = query(resolver, &name, RecordType::CNAME, timeout, counters).await?;
        let target = msg.answers().iter().find_map(|r| match r.data() {
            RData::CNAME(c) if r.name() == &name => Some(c.0.clone()),
            _ => None,
        });
        match target {
            Some(t) => name = t,
            None => return Ok(name),
        }
    }
    Err(PluginError::new(
        ErrorKind::Provider,
        format!("{fqdn}: more than {MAX_CNAME_HOPS} CNAMEs in a row; giving up"),
    ))
}

/// The zone holding `name` and its SOA MNAME, found with SOA queries from `name` upwards:
/// an SOA in the answer names the zone; an SOA in the authority section (NXDOMAIN/NODATA)
/// names the enclosing zone.
pub async fn find_zone(
    resolver: SocketAddr,
    name: &Name,
    timeout: Duration,
    counters: &Counters,
) -> Result<(Name, Name), PluginError> {
    let mut candidate = name.clone();
    let mut seen = Vec::new();
    loop {
        let msg = query(resolver, &candidate, RecordType::SOA, timeout, counters).await?;
        let soa = msg
            .answers()
            .iter()
            .chain(msg.name_servers())
            .find_map(|r| match r.data() {
                RData::SOA(soa) => Some((r.name().clone(), soa.mname().clone())),
                _ => None,
            });
        if let Some(found) = soa
            && found.0.zone_of(name)
        {
            return Ok(found);
        }
        seen.push(format!("{candidate}: {}", rcode_name(msg.response_code())));
        if candidate.num_labels() <= 1 {
            break;
        }
        candidate = candidate.base_name();
    }
    Err(PluginError::new(
        ErrorKind::NotFound,
        format!(
            "zone not found for {name}: no SOA at {resolver} for it or any parent ({}); \
             is the server authoritative for the zone? set `zone` and `server` to skip the lookup",
            seen.join(", ")
        ),
    ))
}

/// Builds the UPDATE messages (one per [`MESSAGE_BUDGET`] bytes of records, i.e. one for
/// any ordinary batch) that add or delete the single TXT RRs of `records` in `zone`.
pub fn update_messages(
    zone: &Name,
    records: &[(Name, String)],
    change: Change,
    ttl: u32,
) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut current: Option<Message> = None;
    let mut used = 0usize;
    for (name, value) in records {
        let cost = name.len() + value.len() + 16;
        if current.is_some() && used + cost > MESSAGE_BUDGET {
            messages.extend(current.take());
            used = 0;
        }
        let msg = current.get_or_insert_with(|| new_update(zone));
        let mut record =
            Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(vec![value.clone()])));
        match change {
            // RFC 2136 §2.5.1, as `append(.., must_exist = false)`: no prerequisite, so a
            // second value on the same name (wildcard + apex) is simply added.
            Change::Add => {
                record.set_dns_class(DNSClass::IN);
            }
            // §2.5.4, as `delete_by_rdata`: class NONE, TTL 0, this value only.
            Change::Delete => {
                record.set_dns_class(DNSClass::NONE);
                record.set_ttl(0);
            }
        }
        msg.add_update(record);
        used += cost;
    }
    messages.extend(current);
    messages
}

fn new_update(zone: &Name) -> Message {
    let mut query = Query::new();
    query
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    let mut msg = Message::new();
    msg.set_id(rand_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false);
    msg.add_zone(query);
    msg.extensions_mut()
        .get_or_insert_with(Edns::new)
        .set_max_payload(UDP_MAX as u16)
        .set_version(0);
    msg
}

/// A prerequisite-only UPDATE (the zone's SOA exists): changes nothing, but the server checks
/// the TSIG signature, so it tests the key.
pub fn noop_update(zone: &Name) -> Message {
    let mut msg = new_update(zone);
    let mut pre = Record::update0(zone.clone(), 0, RecordType::SOA);
    pre.set_dns_class(DNSClass::ANY);
    msg.add_pre_requisite(pre.into_record_of_rdata());
    msg
}

fn rand_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (t >> 16)) as u16
}

/// Sends one signed UPDATE to `server`: UDP if it fits, TCP if it does not or if the UDP
/// answer is truncated or lost. The answer's rcode is mapped to a clear error.
pub async fn send_update(
    server: SocketAddr,
    key: &TsigKey,
    msg: Message,
    timeout: Duration,
    counters: &Counters,
) -> Result<(), PluginError> {
    let zone = msg
        .queries()
        .first()
        .map(|q| q.name().to_string())
        .unwrap_or_default();
    let signer = TSigner::new(
        key.secret.bytes().to_vec(),
        key.algorithm.clone(),
        parse_name(&key.name)?,
        FUDGE,
    )
    .map_err(|e| PluginError::config(format!("TSIG key {}: {e}", key.name)))?;
    let signer: Arc<dyn MessageFinalizer> = Arc::new(signer);
    let size = msg.to_vec().map(|v| v.len()).unwrap_or(usize::MAX);
    let what = format!("UPDATE of zone {zone} at {server}");
    let mut outcome = None;
    if size <= UDP_MAX {
        Counters::bump(&counters.update_messages);
        let client = udp_client(server, timeout, Some(signer.clone()))
            .await
            .map_err(|e| net_err(&what, e))?;
        match client.send(msg.clone()).first_answer().await {
            Ok(resp) if !resp.truncated() => outcome = Some(Ok(resp.into_message())),
            Ok(_) => {}
            Err(e) if is_tsig_error(&e) => outcome = Some(Err(e)),
            Err(e) if !is_timeout(&e) => return Err(net_err(&what, e)),
            Err(_) => {}
        }
    }
    let answer = match outcome {
        Some(a) => a,
        None => {
            Counters::bump(&counters.update_messages);
            if size <= UDP_MAX {
                Counters::bump(&counters.tcp_fallbacks);
            }
            let client = tcp_client(server, timeout, Some(signer))
                .await
                .map_err(|e| net_err(&what, e))?;
            client
                .send(msg)
                .first_answer()
                .await
                .map(|r| r.into_message())
        }
    };
    let answer = answer.map_err(|e| {
        if is_tsig_error(&e) {
            tsig_rejected(&what, key, "the answer carried no valid TSIG signature")
        } else {
            net_err(&what, e)
        }
    })?;
    check_rcode(&what, key, answer.response_code())
}

fn is_tsig_error(e: &ProtoError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("hmac") || text.contains("tsig") || text.contains("signature")
}

fn is_timeout(e: &ProtoError) -> bool {
    e.to_string().to_ascii_lowercase().contains("timed out")
}

fn tsig_rejected(what: &str, key: &TsigKey, why: &str) -> PluginError {
    PluginError::new(
        ErrorKind::Auth,
        format!(
            "{what}: TSIG rejected: check key name, secret, clock (key {}, {}; {why})",
            key.name, key.algorithm_name
        ),
    )
}

fn check_rcode(what: &str, key: &TsigKey, rcode: ResponseCode) -> Result<(), PluginError> {
    match rcode {
        ResponseCode::NoError => Ok(()),
        ResponseCode::NotAuth
        | ResponseCode::BADSIG
        | ResponseCode::BADKEY
        | ResponseCode::BADTIME => Err(tsig_rejected(
            what,
            key,
            &format!("server said {}", rcode_name(rcode)),
        )),
        ResponseCode::Refused => Err(PluginError::new(
            ErrorKind::Refused,
            format!(
                "{what}: REFUSED by the server's update policy: key {} may not change these \
                 TXT records (check update-policy / allow-update for the zone)",
                key.name
            ),
        )),
        ResponseCode::NotZone => Err(PluginError::new(
            ErrorKind::NotFound,
            format!("{what}: NOTZONE: a name is not inside the zone"),
        )),
        other => Err(PluginError::new(
            ErrorKind::Provider,
            format!("{what}: the server answered {}", rcode_name(other)),
        )),
    }
}

/// Converts the batch into (owner name, value) pairs, checking names.
pub fn names_of(records: &[TxtRecord]) -> Result<Vec<(Name, String)>, PluginError> {
    records
        .iter()
        .map(|r| Ok((parse_name(&r.fqdn)?, r.value.clone())))
        .collect()
}

/// The DNS mnemonic of a response code (`NOERROR`, `NXDOMAIN`, …).
pub fn rcode_name(rc: ResponseCode) -> String {
    match rc {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::NotAuth => "NOTAUTH".to_owned(),
        ResponseCode::NotZone => "NOTZONE".to_owned(),
        other => format!("{other:?}").to_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use hickory_client::proto::op::UpdateMessage;

    use super::*;

    fn batch(n: usize) -> Vec<(Name, String)> {
        (0..n)
            .map(|i| {
                (
                    parse_name(&format!("_acme-challenge.h{i}.example.test.")).expect("name"),
                    format!("{i:043}"),
                )
            })
            .collect()
    }

    #[test]
    fn one_update_per_zone_with_single_rrs_added_and_deleted_by_value() {
        let zone = parse_name("example.test").expect("zone");
        let adds = update_messages(&zone, &batch(200), Change::Add, 60);
        assert_eq!(adds.len(), 1, "200 records fit one UPDATE");
        let m = &adds[0];
        assert_eq!(m.op_code(), OpCode::Update);
        assert_eq!(m.zones()[0].name(), &zone);
        assert!(
            m.prerequisites().is_empty(),
            "no RRset-must-not-exist prerequisite"
        );
        assert_eq!(m.updates().len(), 200);
        assert!(
            m.updates()
                .iter()
                .all(|r| r.dns_class() == DNSClass::IN && r.ttl() == 60)
        );
        let dels = update_messages(&zone, &batch(3), Change::Delete, 60);
        let d = &dels[0];
        assert!(
            d.updates().iter().all(|r| r.dns_class() == DNSClass::NONE
                && r.ttl() == 0
                && matches!(r.data(), RData::TXT(_))),
            "value-specific deletes (class NONE), never the RRset (class ANY)"
        );
    }

    #[test]
    fn huge_batches_split_below_the_tcp_message_limit() {
        let zone = parse_name("example.test").expect("zone");
        let msgs = update_messages(&zone, &batch(1000), Change::Add, 60);
        assert_eq!(msgs.len(), 2);
        for m in &msgs {
            assert!(m.to_vec().expect("encodes").len() < 65_000);
        }
        assert_eq!(msgs.iter().map(|m| m.updates().len()).sum::<usize>(), 1000);
    }
}
