//! TKEY (RFC 2930) mode 3 on the wire for GSS-TSIG (RFC 3645): the query of one negotiation
//! round, the answer's token and errors, and the one-message TCP exchange GSS-TSIG uses.

use std::net::SocketAddr;
use std::time::Duration;

use certfleet_plugin_abi::{ErrorKind, PluginError};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dns::rcode_name;

/// RR type TKEY (RFC 2930); hickory has no type for it.
pub(crate) const TKEY: u16 = 249;
/// TKEY mode 3: GSS-API negotiation.
pub(crate) const MODE_GSSAPI: u16 = 3;

pub(crate) fn algorithm_name() -> Name {
    Name::from_ascii("gss-tsig.").unwrap_or_else(|_| Name::root())
}

/// The TKEY query of one round: question `KEYNAME TKEY ANY`, the TKEY RR (mode 3, the
/// token as key data) in the additional section.
pub(crate) fn tkey_query(key_name: &Name, token: &[u8], now: u64) -> Message {
    let mut rdata = Vec::with_capacity(token.len() + 40);
    let alg = algorithm_name();
    for label in alg.iter() {
        rdata.push(label.len() as u8);
        rdata.extend_from_slice(label);
    }
    rdata.push(0);
    let inception = now as u32;
    rdata.extend_from_slice(&inception.to_be_bytes());
    rdata.extend_from_slice(&(inception.wrapping_add(86_400)).to_be_bytes());
    rdata.extend_from_slice(&MODE_GSSAPI.to_be_bytes());
    rdata.extend_from_slice(&0u16.to_be_bytes());
    rdata.extend_from_slice(&(token.len() as u16).to_be_bytes());
    rdata.extend_from_slice(token);
    rdata.extend_from_slice(&0u16.to_be_bytes());
    let mut msg = Message::new(
        (now as u16) ^ (token.len() as u16),
        MessageType::Query,
        OpCode::Query,
    );
    msg.metadata.recursion_desired = false;
    let mut q = Query::new();
    q.set_name(key_name.clone())
        .set_query_type(RecordType::Unknown(TKEY))
        .set_query_class(DNSClass::ANY);
    msg.add_query(q);
    let mut rr = Record::from_rdata(
        key_name.clone(),
        0,
        RData::Unknown {
            code: RecordType::Unknown(TKEY),
            rdata: NULL::with(rdata),
        },
    );
    rr.dns_class = DNSClass::ANY;
    msg.add_additional(rr);
    msg
}

/// The fields of a TKEY answer that matter: error and key data (the server's token).
pub(crate) fn parse_tkey(rdata: &[u8]) -> Result<(u16, u16, Vec<u8>), String> {
    let mut i = 0;
    loop {
        let len = *rdata.get(i).ok_or("truncated algorithm name")? as usize;
        if len & 0xC0 != 0 {
            return Err("compressed algorithm name".into());
        }
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    let u16_at = |at: usize| -> Result<u16, String> {
        rdata
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated TKEY".to_owned())
    };
    let mode = u16_at(i + 8)?;
    let error = u16_at(i + 10)?;
    let key_len = u16_at(i + 12)? as usize;
    let key = rdata
        .get(i + 14..i + 14 + key_len)
        .ok_or("truncated key data")?
        .to_vec();
    Ok((mode, error, key))
}

/// One TKEY round: returns the server's token and the raw answer.
pub(crate) async fn tkey_round(
    server: SocketAddr,
    key_name: &Name,
    token: &[u8],
    timeout: Duration,
    what: &str,
) -> Result<(Vec<u8>, Vec<u8>), PluginError> {
    let query = tkey_query(key_name, token, crate::gss::now_secs());
    let bytes = query
        .to_vec()
        .map_err(|e| PluginError::new(ErrorKind::Internal, format!("{what}: {e}")))?;
    let raw = tcp_exchange(server, &bytes, timeout)
        .await
        .map_err(|e| PluginError::new(ErrorKind::Network, format!("{what}: {e}")))?;
    let answer = Message::from_vec(&raw).map_err(|e| {
        PluginError::new(
            ErrorKind::Provider,
            format!("{what}: unreadable answer: {e}"),
        )
    })?;
    let rcode = answer.metadata.response_code;
    let no_gss = |detail: String| {
        PluginError::new(
            ErrorKind::Provider,
            format!(
                "{what}: the server does not speak GSS-TSIG ({detail}); BIND needs \
                 tkey-gssapi-keytab (or tkey-gssapi-credential), AD DNS needs the zone's \
                 dynamic updates set to Secure only"
            ),
        )
    };
    if rcode != ResponseCode::NoError {
        return Err(match rcode {
            ResponseCode::NotImp | ResponseCode::FormErr | ResponseCode::Refused => {
                no_gss(format!("it answered {}", rcode_name(rcode)))
            }
            ResponseCode::NotAuth | ResponseCode::BADKEY | ResponseCode::BADSIG => {
                no_gss(format!("it answered {}", rcode_name(rcode)))
            }
            other => PluginError::new(
                ErrorKind::Provider,
                format!("{what}: the server answered {}", rcode_name(other)),
            ),
        });
    }
    let tkey = answer
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::Unknown { code, rdata } if u16::from(*code) == TKEY => {
                Some(rdata.anything.clone())
            }
            _ => None,
        })
        .ok_or_else(|| no_gss("no TKEY record in its answer".into()))?;
    let (mode, error, key) = parse_tkey(&tkey)
        .map_err(|e| PluginError::new(ErrorKind::Provider, format!("{what}: TKEY answer: {e}")))?;
    if error != 0 {
        let name = match error {
            16 => "BADSIG".to_owned(),
            17 => "BADKEY".to_owned(),
            18 => "BADTIME".to_owned(),
            19 => "BADMODE".to_owned(),
            20 => "BADNAME".to_owned(),
            21 => "BADALG".to_owned(),
            e => format!("error {e}"),
        };
        let hint = match error {
            17 => {
                "the server could not accept the Kerberos ticket: its keytab lacks the \
                 service key, the ticket is for another principal, or the clocks differ by \
                 more than the allowed skew"
            }
            18 => {
                "clock skew: this host's clock and the server's differ too much; fix the time (NTP)"
            }
            19 | 21 => "the server does not do GSS-API TKEY (tkey-gssapi-keytab missing?)",
            _ => "the server refused the TKEY negotiation",
        };
        return Err(PluginError::new(
            ErrorKind::Auth,
            format!("{what}: TKEY {name}: {hint}"),
        ));
    }
    if mode != MODE_GSSAPI {
        return Err(no_gss(format!("TKEY answered in mode {mode}")));
    }
    Ok((key, raw))
}

/// One DNS message over TCP (two-byte length prefix), bounded by `timeout`.
pub(crate) async fn tcp_exchange(
    server: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let work = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(|e| format!("connecting to {server}: {e}"))?;
        let len = u16::try_from(msg.len()).map_err(|_| "message over 64 KiB".to_owned())?;
        let mut out = Vec::with_capacity(msg.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(msg);
        s.write_all(&out)
            .await
            .map_err(|e| format!("sending to {server}: {e}"))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)
            .await
            .map_err(|e| format!("reading from {server}: {e}"))?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("reading from {server}: {e}"))?;
        Ok::<_, String>(buf)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer from {server} within {} s", timeout.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tkey_query_carries_mode_3_and_the_token_in_the_additional_section() {
        let key = Name::from_ascii("k1.sig-certfleet.").expect("name");
        let msg = tkey_query(&key, b"token-bytes", 1_700_000_000);
        assert_eq!(msg.queries[0].query_type(), RecordType::Unknown(TKEY));
        assert_eq!(msg.queries[0].query_class(), DNSClass::ANY);
        let wire = msg.to_vec().expect("encodes");
        let back = Message::from_vec(&wire).expect("decodes");
        let rdata = match &back.additionals[0].data {
            RData::Unknown { rdata, .. } => rdata.anything.clone(),
            other => panic!("expected TKEY, got {other:?}"),
        };
        let (mode, error, token) = parse_tkey(&rdata).expect("parses");
        assert_eq!((mode, error, token.as_slice()), (3, 0, &b"token-bytes"[..]));
        assert!(rdata.starts_with(b"\x08gss-tsig\x00"));
    }
}
