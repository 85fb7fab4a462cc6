//! Single DNS queries over UDP (TCP when truncated), counted, with or without recursion.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_client::client::Client;
use hickory_client::proto::DnsHandle;
use hickory_client::proto::op::{Query, ResponseCode};
use hickory_client::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::udp::UdpClientStream;
use hickory_client::proto::xfer::{DnsRequestOptions, FirstAnswer};

/// What a server answered.
#[derive(Debug)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// Answer and authority sections.
    pub records: Vec<Record>,
}

impl Answer {
    pub fn cname_of(&self, name: &Name) -> Option<Name> {
        self.records.iter().find_map(|r| match r.data() {
            RData::CNAME(c) if r.name() == name => Some(c.0.clone()),
            _ => None,
        })
    }

    pub fn soa_owner(&self) -> Option<Name> {
        self.records.iter().find_map(|r| match r.data() {
            RData::SOA(_) => Some(r.name().clone()),
            _ => None,
        })
    }

    pub fn txt_values(&self) -> BTreeSet<String> {
        self.records
            .iter()
            .filter_map(|r| match r.data() {
                RData::TXT(t) => Some(
                    t.txt_data()
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

struct ClientSlot(Client);

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

    async fn udp_client(&self, addr: SocketAddr) -> Result<Client, String> {
        if let Some(c) = self
            .udp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
        {
            return Ok(c.0.clone());
        }
        let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::new())
            .with_timeout(Some(self.timeout))
            .build();
        let (client, bg) = Client::connect(conn).await.map_err(|e| e.to_string())?;
        tokio::spawn(bg);
        self.udp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, ClientSlot(client.clone()));
        Ok(client)
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
        let client = self.udp_client(server).await?;
        let resp = client
            .lookup(query.clone(), options)
            .first_answer()
            .await
            .map_err(|e| e.to_string())?;
        let resp = if resp.truncated() {
            self.count.fetch_add(1, Ordering::Relaxed);
            let (stream, handle) = TcpClientStream::new(
                server,
                None,
                Some(self.timeout),
                TokioRuntimeProvider::new(),
            );
            let (client, bg) = Client::with_timeout(stream, handle, self.timeout, None)
                .await
                .map_err(|e| e.to_string())?;
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
        let mut records = msg.answers().to_vec();
        records.extend(msg.name_servers().iter().cloned());
        Ok(Answer {
            rcode: msg.response_code(),
            records,
        })
    }
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
