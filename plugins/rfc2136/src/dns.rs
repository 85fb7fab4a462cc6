//! DNS work of the plugin: plain queries (zone discovery through the shared
//! `certfleet-dns-zones` routine, read-back checks) and RFC 2136 UPDATE messages signed with
//! TSIG, over UDP with TCP fallback (hickory-net 0.26).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use certfleet_dns_zones::{Lookup, Reply};
use certfleet_plugin_abi::{ErrorKind, PluginError, TxtRecord};
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::FirstAnswer;
use hickory_net::{DnsHandle, DnsMultiplexer, NetError};
use hickory_proto::op::{
    DnsRequest, DnsRequestOptions, Edns, Message, MessageType, OpCode, Query, ResponseCode,
    UpdateMessage,
};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

pub use certfleet_dns_zones::rcode_name;

use crate::tsig::TsigKey;

/// Largest UPDATE sent over UDP; anything bigger goes over TCP at once (1232 is the
/// DNS-flag-day safe EDNS payload size).
const UDP_MAX: usize = 1232;
/// Estimated size of the records per UPDATE: DNS messages over TCP are at most 65535 bytes,
/// and the TSIG record needs room too. A bigger batch for one zone is split.
const MESSAGE_BUDGET: usize = 63_000;
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
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Add or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

type Dns = Client<TokioRuntimeProvider>;

fn udp_client(addr: SocketAddr, timeout: Duration, signer: Option<TSigner>) -> Dns {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::new())
        .with_timeout(Some(timeout))
        .with_signer(signer)
        .build();
    let (client, bg) = Client::from_sender(conn);
    tokio::spawn(bg);
    client
}

async fn tcp_client(
    addr: SocketAddr,
    timeout: Duration,
    signer: Option<TSigner>,
) -> Result<Dns, NetError> {
    let (connect, handle) =
        TcpClientStream::new(addr, None, Some(timeout), TokioRuntimeProvider::new());
    let mut mux = DnsMultiplexer::new(connect.await?, handle).with_timeout(timeout);
    if let Some(s) = signer {
        mux = mux.with_signer(s);
    }
    let (client, bg) = Client::from_sender(mux);
    tokio::spawn(bg);
    Ok(client)
}

/// One plain query (`recursion` sets the RD bit: `resolver` may be a recursive resolver),
/// over UDP and again over TCP when the answer is truncated.
pub async fn query(
    resolver: SocketAddr,
    name: &Name,
    rtype: RecordType,
    recursion: bool,
    timeout: Duration,
    counters: &Counters,
) -> Result<Message, PluginError> {
    let what = format!("{rtype} query for {name} at {resolver}");
    let mut q = Query::query(name.clone(), rtype);
    q.set_query_class(DNSClass::IN);
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = recursion;
    options.use_edns = true;
    Counters::bump(&counters.dns_queries);
    let client = udp_client(resolver, timeout, None);
    let resp = client
        .lookup(q.clone(), options)
        .first_answer()
        .await
        .map_err(|e| net_err(&what, e))?;
    if !resp.metadata.truncation {
        return Ok(resp.into_message());
    }
    Counters::bump(&counters.dns_queries);
    Counters::bump(&counters.tcp_fallbacks);
    let client = tcp_client(resolver, timeout, None)
        .await
        .map_err(|e| net_err(&what, e))?;
    let resp = client
        .lookup(q, options)
        .first_answer()
        .await
        .map_err(|e| net_err(&what, e))?;
    Ok(resp.into_message())
}

/// Zone discovery queries for the shared routine: recursion desired, at `resolver`.
pub struct Discovery<'a> {
    pub resolver: SocketAddr,
    pub timeout: Duration,
    pub counters: &'a Counters,
}

impl Lookup for Discovery<'_> {
    async fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Reply, String> {
        let msg = query(
            self.resolver,
            name,
            rtype,
            true,
            self.timeout,
            self.counters,
        )
        .await
        .map_err(|e| e.message)?;
        Ok(Reply {
            rcode: msg.metadata.response_code,
            authoritative: msg.metadata.authoritative,
            answers: msg.answers,
            authorities: msg.authorities,
        })
    }
}

/// The TXT values `server` itself serves for `name` (recursion off), with its rcode.
pub async fn served_txt(
    server: SocketAddr,
    name: &Name,
    timeout: Duration,
    counters: &Counters,
) -> Result<(ResponseCode, Vec<String>), PluginError> {
    let msg = query(server, name, RecordType::TXT, false, timeout, counters).await?;
    let values = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) if &r.name == name => Some(
                t.txt_data
                    .iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect();
    Ok((msg.metadata.response_code, values))
}

/// One RR of an UPDATE: the owner (the end of its CNAME chain), the value, add or delete,
/// and whether the message proves where the owner lies (see [`update_messages`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub name: Name,
    pub value: String,
    pub change: Change,
    pub prove: bool,
}

/// Builds the UPDATE messages (one per [`MESSAGE_BUDGET`] bytes, i.e. one for any ordinary
/// batch) that delete and add the single TXT RRs of `items` in `zone`, deletes first (a
/// value both deleted and added stays). For every item with `prove`, prerequisites (RFC 2136
/// §2.4.3, "RRset does not exist") make the server refuse the whole message (YXRRSET) unless
/// the owner really lies in `zone` as written: no NS RRset (a delegation, i.e. a zone cut)
/// at any name from the owner up to below the apex, and no CNAME at the owner (an added TXT
/// beside a CNAME is dropped silently). So an accepted UPDATE proves placement without
/// asking anyone per name.
pub fn update_messages(zone: &Name, items: &[Item], ttl: u32) -> Vec<Message> {
    // The budget is an estimate: if a message comes out too big anyway (the encoder
    // silently truncates at 64 KiB: every update must survive a decode), pack again with a
    // smaller budget.
    let mut budget = MESSAGE_BUDGET;
    loop {
        let messages = pack(zone, items, ttl, budget);
        let fits = messages.iter().all(|m| {
            m.to_vec().is_ok_and(|b| {
                b.len() <= MESSAGE_LIMIT
                    && Message::from_vec(&b).is_ok_and(|d| d.updates().len() == m.updates().len())
            })
        });
        if fits || budget < MESSAGE_BUDGET / 4 {
            return messages;
        }
        budget = budget * 7 / 8;
    }
}

/// Largest encoded UPDATE accepted from [`pack`] (the TSIG record still has to fit).
const MESSAGE_LIMIT: usize = 64_000;

fn pack(zone: &Name, items: &[Item], ttl: u32, budget: usize) -> Vec<Message> {
    let mut ordered: Vec<&Item> = items
        .iter()
        .filter(|i| i.change == Change::Delete)
        .collect();
    ordered.extend(items.iter().filter(|i| i.change == Change::Add));
    let mut messages = Vec::new();
    let mut current: Option<(Message, std::collections::BTreeSet<(Name, RecordType)>)> = None;
    let mut used = 0usize;
    for item in ordered {
        let proofs = if item.prove {
            proofs_for(zone, &item.name)
        } else {
            Vec::new()
        };
        // Counted uncompressed: the encoder writes these names in full (measured: 195
        // bytes per add with its three prerequisites, 85 per delete).
        let cost = item.name.len()
            + item.value.len()
            + 16
            + proofs.iter().map(|(n, _)| n.len() + 12).sum::<usize>();
        if current.is_some() && used + cost > budget {
            messages.extend(current.take().map(|(m, _)| m));
            used = 0;
        }
        let (msg, asked) = current.get_or_insert_with(|| (new_update(zone), Default::default()));
        for (owner, rtype) in proofs {
            if asked.insert((owner.clone(), rtype)) {
                let mut pre = Record::update0(owner, 0, rtype);
                pre.dns_class = DNSClass::NONE;
                msg.add_pre_requisite(pre.into_record_of_rdata());
            }
        }
        let mut record = Record::from_rdata(
            item.name.clone(),
            ttl,
            RData::TXT(TXT::new(vec![item.value.clone()])),
        );
        match item.change {
            // RFC 2136 §2.5.1, as `append(.., must_exist = false)`: no prerequisite on the
            // RRset, so a second value on the same name (wildcard + apex) is simply added.
            Change::Add => {
                record.dns_class = DNSClass::IN;
            }
            // §2.5.4, as `delete_by_rdata`: class NONE, TTL 0, this value only.
            Change::Delete => {
                record.dns_class = DNSClass::NONE;
                record.ttl = 0;
            }
        }
        msg.add_update(record);
        used += cost;
    }
    messages.extend(current.map(|(m, _)| m));
    messages
}

/// The "RRset does not exist" prerequisites that prove `owner` lies in `zone`: NS at every
/// name from `owner` up to (not including) the apex, CNAME at `owner`.
fn proofs_for(zone: &Name, owner: &Name) -> Vec<(Name, RecordType)> {
    let mut out = vec![(owner.clone(), RecordType::CNAME)];
    let mut n = owner.clone();
    while n.num_labels() > zone.num_labels() && zone.zone_of(&n) {
        out.push((n.clone(), RecordType::NS));
        n = n.base_name();
    }
    out
}

fn new_update(zone: &Name) -> Message {
    let mut query = Query::new();
    query
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Update);
    msg.metadata.recursion_desired = false;
    msg.add_zone(query);
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_MAX as u16).set_version(0);
    msg.edns = Some(edns);
    msg
}

/// A prerequisite-only UPDATE (the zone's SOA exists): changes nothing, but the server checks
/// the TSIG signature, so it tests the key.
pub fn noop_update(zone: &Name) -> Message {
    let mut msg = new_update(zone);
    let mut pre = Record::update0(zone.clone(), 0, RecordType::SOA);
    pre.dns_class = DNSClass::ANY;
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
    auth: &Auth,
    msg: Message,
    timeout: Duration,
    counters: &Counters,
) -> Result<(), PluginError> {
    match send_update_with_proofs(server, auth, msg, timeout, counters).await? {
        true => Ok(()),
        false => Err(PluginError::new(
            ErrorKind::Provider,
            format!("UPDATE at {server}: the server answered YXRRSET"),
        )),
    }
}

/// [`send_update`] for a message with prerequisites: `Ok(false)` when the server refused it
/// because one does not hold (YXRRSET: nothing of the message was applied).
pub async fn send_update_with_proofs(
    server: SocketAddr,
    auth: &Auth,
    msg: Message,
    timeout: Duration,
    counters: &Counters,
) -> Result<bool, PluginError> {
    // SERVFAIL is a transient server failure (PowerDNS on SQLite answers it while a zone
    // transfer holds the database, seen in the lab); adding an RR that exists and deleting
    // one that is gone are no-ops, so the same UPDATE is safely sent again, a bounded number
    // of times.
    let mut attempt = 1;
    loop {
        let what = format!("UPDATE of zone {} at {server}", zone_of_update(&msg));
        let rcode = match auth {
            Auth::Hmac(key) => {
                send_update_once(server, key, msg.clone(), timeout, counters).await?
            }
            Auth::Gss(g) => g.exchange(server, &msg, timeout, counters, &what).await?,
        };
        match rcode {
            ResponseCode::ServFail if attempt < SERVFAIL_ATTEMPTS => {
                tokio::time::sleep(SERVFAIL_PAUSE * attempt).await;
                attempt += 1;
            }
            ResponseCode::YXRRSet => return Ok(false),
            rcode => {
                let r = check_rcode(&what, auth, rcode).map(|()| true);
                return match r {
                    Err(mut e) if attempt > 1 => {
                        e.message = format!("{} (after {attempt} attempts)", e.message);
                        Err(e)
                    }
                    other => other,
                };
            }
        }
    }
}

/// How UPDATEs are signed: an HMAC TSIG key, or GSS-TSIG (Kerberos).
#[derive(Debug)]
pub enum Auth {
    Hmac(TsigKey),
    Gss(crate::gss::GssTsig),
}

impl Auth {
    /// Who signs, for messages: `key NAME (ALG)` or the GSS-TSIG principal.
    pub fn describe(&self) -> String {
        match self {
            Auth::Hmac(k) => format!("key {}", k.name),
            Auth::Gss(g) => g.describe(),
        }
    }
}

/// UPDATEs sent in all when the server answers SERVFAIL, and the pause before the next.
const SERVFAIL_ATTEMPTS: u32 = 4;
const SERVFAIL_PAUSE: Duration = Duration::from_millis(200);

fn zone_of_update(msg: &Message) -> String {
    msg.queries
        .first()
        .map(|q| q.name().to_string())
        .unwrap_or_default()
}

/// One exchange of a signed UPDATE; returns the server's rcode (TSIG and network failures
/// are errors).
async fn send_update_once(
    server: SocketAddr,
    key: &TsigKey,
    msg: Message,
    timeout: Duration,
    counters: &Counters,
) -> Result<ResponseCode, PluginError> {
    let zone = zone_of_update(&msg);
    let signer = TSigner::new(
        key.secret.bytes().to_vec(),
        key.algorithm.clone(),
        parse_name(&key.name)?,
        FUDGE,
    )
    .map_err(|e| PluginError::config(format!("TSIG key {}: {e}", key.name)))?;
    let size = msg.to_vec().map(|v| v.len()).unwrap_or(usize::MAX);
    let what = format!("UPDATE of zone {zone} at {server}");
    let request = |m: Message| {
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        options.recursion_desired = false;
        DnsRequest::new(m, options)
    };
    let mut outcome = None;
    if size <= UDP_MAX {
        Counters::bump(&counters.update_messages);
        let client = udp_client(server, timeout, Some(signer.clone()));
        match client.send(request(msg.clone())).first_answer().await {
            Ok(resp) if !resp.metadata.truncation => outcome = Some(Ok(resp.into_message())),
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
                .send(request(msg))
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
    Ok(answer.metadata.response_code)
}

fn is_tsig_error(e: &NetError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("hmac") || text.contains("tsig") || text.contains("signature")
}

fn is_timeout(e: &NetError) -> bool {
    matches!(e, NetError::Timeout) || e.to_string().to_ascii_lowercase().contains("timed out")
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

fn check_rcode(what: &str, auth: &Auth, rcode: ResponseCode) -> Result<(), PluginError> {
    let signer = auth.describe();
    match rcode {
        ResponseCode::NoError => Ok(()),
        ResponseCode::NotAuth
        | ResponseCode::BADSIG
        | ResponseCode::BADKEY
        | ResponseCode::BADTIME => Err(match auth {
            Auth::Hmac(key) => {
                tsig_rejected(what, key, &format!("server said {}", rcode_name(rcode)))
            }
            Auth::Gss(_) => PluginError::new(
                ErrorKind::Auth,
                format!(
                    "{what}: GSS-TSIG signature rejected (server said {}): check the principal, \
                     the server's service key and the clocks ({signer})",
                    rcode_name(rcode)
                ),
            ),
        }),
        ResponseCode::Refused => Err(PluginError::new(
            ErrorKind::Refused,
            format!(
                "{what}: REFUSED by the server's update policy: {signer} may not change \
                 these TXT records (check update-policy / allow-update for the zone; AD: the \
                 zone's or record's security, Secure dynamic updates)"
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

#[cfg(test)]
mod tests {

    use super::*;

    fn batch(n: usize, change: Change, prove: bool) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                name: parse_name(&format!("_acme-challenge.h{i}.example.test.")).expect("name"),
                value: format!("{i:043}"),
                change,
                prove,
            })
            .collect()
    }

    #[test]
    fn one_update_per_zone_with_single_rrs_added_and_deleted_by_value() {
        let zone = parse_name("example.test").expect("zone");
        let adds = update_messages(&zone, &batch(200, Change::Add, false), 60);
        assert_eq!(adds.len(), 1, "200 records fit one UPDATE");
        let m = &adds[0];
        assert_eq!(m.metadata.op_code, OpCode::Update);
        assert_eq!(m.zones()[0].name(), &zone);
        assert!(
            m.prerequisites().is_empty(),
            "no RRset-must-not-exist prerequisite"
        );
        assert_eq!(m.updates().len(), 200);
        assert!(
            m.updates()
                .iter()
                .all(|r| r.dns_class == DNSClass::IN && r.ttl == 60)
        );
        let dels = update_messages(&zone, &batch(3, Change::Delete, false), 60);
        let d = &dels[0];
        assert!(
            d.updates().iter().all(|r| r.dns_class == DNSClass::NONE
                && r.ttl == 0
                && matches!(r.data, RData::TXT(_))),
            "value-specific deletes (class NONE), never the RRset (class ANY)"
        );
    }

    #[test]
    fn huge_batches_split_below_the_tcp_message_limit() {
        let zone = parse_name("example.test").expect("zone");
        let msgs = update_messages(&zone, &batch(1000, Change::Add, true), 60);
        assert_eq!(msgs.len(), 4, "1,000 adds with their placement proofs");
        for m in &msgs {
            let bytes = m.to_vec().expect("encodes");
            assert!(bytes.len() <= MESSAGE_LIMIT);
            let back = Message::from_vec(&bytes).expect("decodes");
            assert_eq!(back.updates().len(), m.updates().len(), "nothing truncated");
            assert_eq!(back.prerequisites().len(), m.prerequisites().len());
        }
        let deletes = update_messages(&zone, &batch(1000, Change::Delete, false), 60);
        assert_eq!(deletes.len(), 2, "1,000 deletes");
        assert_eq!(msgs.iter().map(|m| m.updates().len()).sum::<usize>(), 1000);
    }

    #[test]
    fn deletes_and_adds_share_one_update_deletes_first_with_placement_proofs() {
        let zone = parse_name("example.test").expect("zone");
        let mut items = batch(2, Change::Add, true);
        items.extend(batch(3, Change::Delete, false));
        let msgs = update_messages(&zone, &items, 60);
        assert_eq!(msgs.len(), 1, "one UPDATE for deletes and adds");
        let classes: Vec<DNSClass> = msgs[0].updates().iter().map(|r| r.dns_class).collect();
        assert_eq!(
            classes,
            [
                DNSClass::NONE,
                DNSClass::NONE,
                DNSClass::NONE,
                DNSClass::IN,
                DNSClass::IN
            ],
            "deletes before adds"
        );
        // Per added owner: no CNAME at it, no NS at it or at h{i}.example.test.
        let pre: Vec<(String, RecordType, DNSClass)> = msgs[0]
            .prerequisites()
            .iter()
            .map(|r| (r.name.to_string(), r.record_type(), r.dns_class))
            .collect();
        assert_eq!(pre.len(), 6, "{pre:?}");
        assert!(pre.contains(&(
            "_acme-challenge.h1.example.test.".to_owned(),
            RecordType::CNAME,
            DNSClass::NONE
        )));
        assert!(pre.contains(&(
            "h1.example.test.".to_owned(),
            RecordType::NS,
            DNSClass::NONE
        )));
        assert!(
            !pre.iter().any(|(n, _, _)| n == "example.test."),
            "never the apex (it has NS)"
        );
        assert!(msgs[0].to_vec().is_ok(), "encodes");
    }
}
