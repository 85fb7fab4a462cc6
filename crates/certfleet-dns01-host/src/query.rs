//! Single DNS queries over UDP (TCP when truncated), counted, with or without recursion.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::FirstAnswer;
use hickory_net::{DnsHandle, DnsMultiplexer};
use hickory_proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

type Dns = Client<TokioRuntimeProvider>;

/// What a server answered.
#[derive(Debug)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    /// Answer and authority sections.
    pub records: Vec<Record>,
    /// How many of `records` came from the answer section (the rest are authority).
    pub answer_count: usize,
}

impl Answer {
    /// As the shared zone routine reads replies.
    pub fn into_reply(self) -> certfleet_dns_zones::Reply {
        let mut answers = self.records;
        let authorities = answers.split_off(self.answer_count.min(answers.len()));
        certfleet_dns_zones::Reply {
            rcode: self.rcode,
            authoritative: self.authoritative,
            answers,
            authorities,
        }
    }

    pub fn txt_values(&self) -> BTreeSet<String> {
        self.records
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|d| String::from_utf8_lossy(d).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect()
    }
}

/// Sends queries and counts them. UDP clients are kept per server.
#[derive(Debug)]
pub struct Querier {
    timeout: Duration,
    count: AtomicU64,
    udp: Mutex<HashMap<SocketAddr, ClientSlot>>,
}

struct ClientSlot(Dns);

impl std::fmt::Debug for ClientSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl Querier {
    pub fn new(timeout: Duration) -> Querier {
        Querier {
            timeout,
            count: AtomicU64::new(0),
            udp: Mutex::new(HashMap::new()),
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn udp_client(&self, addr: SocketAddr) -> Dns {
        if let Some(c) = self
            .udp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
        {
            return c.0.clone();
        }
        let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::new())
            .with_timeout(Some(self.timeout))
            .build();
        let (client, bg) = Client::from_sender(conn);
        tokio::spawn(bg);
        self.udp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, ClientSlot(client.clone()));
        client
    }

    /// One query for `name`/`rtype` at `server`; `recursion` sets the RD bit.
    pub async fn query(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
        recursion: bool,
    ) -> Result<Answer, String> {
        let mut query = Query::query(name.clone(), rtype);
        query.set_query_class(DNSClass::IN);
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = recursion;
        options.use_edns = true;
        self.count.fetch_add(1, Ordering::Relaxed);
        let client = self.udp_client(server);
        let resp = client
            .lookup(query.clone(), options)
            .first_answer()
            .await
            .map_err(|e| e.to_string())?;
        let resp = if resp.metadata.truncation {
            self.count.fetch_add(1, Ordering::Relaxed);
            let (connect, handle) = TcpClientStream::new(
                server,
                None,
                Some(self.timeout),
                TokioRuntimeProvider::new(),
            );
            let stream = connect.await.map_err(|e| e.to_string())?;
            let (client, bg): (Dns, _) =
                Client::from_sender(DnsMultiplexer::new(stream, handle).with_timeout(self.timeout));
            tokio::spawn(bg);
            client
                .lookup(query, options)
                .first_answer()
                .await
                .map_err(|e| e.to_string())?
        } else {
            resp
        };
        let msg = resp.into_message();
        let answer_count = msg.answers.len();
        let mut records = msg.answers;
        records.extend(msg.authorities);
        Ok(Answer {
            rcode: msg.metadata.response_code,
            authoritative: msg.metadata.authoritative,
            records,
            answer_count,
        })
    }
}

pub use certfleet_dns_zones::rcode_name;
