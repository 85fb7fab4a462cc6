//! GSS-TSIG (RFC 3645): Kerberos-signed dynamic updates for Active Directory DNS and
//! Kerberized BIND (`tkey-gssapi-keytab`).
//!
//! Per server, a GSS-API security context is negotiated with TKEY (RFC 2930 mode 3,
//! algorithm `gss-tsig`, the query in the additional section, as many rounds as the mechanism
//! needs) under a fresh key name; it is kept for the batch and later batches and negotiated
//! again when it expires or the server no longer knows it (BADKEY). Every UPDATE carries a
//! TSIG record whose MAC is `gss_get_mic` over the RFC 8945 digest input (hickory's
//! `message_tbs`, the one implementation the HMAC path uses too), and every answer's TSIG is
//! checked with `gss_verify_mic`. Credentials: a client keytab (`keytab` + optional
//! `principal`; kept in a private in-memory ccache) or the default credentials cache
//! (`kinit`, `KRB5CCNAME`, or `KRB5_CLIENT_KTNAME` honoured by MIT Kerberos itself).
//! Everything goes over TCP: Kerberos tokens rarely fit a 512-byte answer, and AD expects it.

use std::collections::HashMap;
use std::ffi::CString;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dns::{Counters, rcode_name};
use crate::tkey::{algorithm_name, tcp_exchange, tkey_round};
use certfleet_plugin_abi::{ErrorKind, PluginError};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::tsig::{
    TSIG, TsigAlgorithm, TsigError, make_tsig_record, message_tbs, signed_bitmessage_to_buf,
};
use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name as GssName;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, GSS_NT_KRB5_PRINCIPAL};

/// TKEY rounds before giving up (Kerberos needs one or two).
const MAX_ROUNDS: usize = 4;
/// Renew a context this long before the server would drop it.
const RENEW_MARGIN: Duration = Duration::from_secs(60);
const FUDGE: u16 = 300;

/// The `[plugins.rfc2136]` settings of GSS-TSIG.
#[derive(Debug, Default)]
pub struct GssSettings {
    pub keytab: Option<String>,
    pub principal: Option<String>,
    pub server_principal: Option<String>,
}

/// A negotiated context with one server.
struct Session {
    ctx: ClientCtx,
    key_name: Name,
    renew_at: Instant,
}

/// GSS-TSIG credentials and the contexts negotiated with each server.
pub struct GssTsig {
    settings: GssSettings,
    /// Host names of servers, for the service principal `DNS/host` (from `server` or the
    /// zone's SOA MNAME).
    hosts: std::sync::Mutex<HashMap<SocketAddr, String>>,
    sessions: tokio::sync::Mutex<HashMap<SocketAddr, Session>>,
    /// TKEY negotiations completed (a metric: one per server per batch, or fewer).
    pub negotiations: AtomicU64,
}

impl std::fmt::Debug for GssTsig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GssTsig")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl GssTsig {
    /// Checks what can be checked without the network: the keytab is readable.
    pub fn new(settings: GssSettings) -> Result<GssTsig, PluginError> {
        if let Some(path) = &settings.keytab {
            std::fs::File::open(path).map_err(|e| {
                PluginError::new(
                    ErrorKind::Config,
                    format!("keytab = {path:?}: keytab unreadable: {e}"),
                )
            })?;
        }
        Ok(GssTsig {
            settings,
            hosts: std::sync::Mutex::new(HashMap::new()),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            negotiations: AtomicU64::new(0),
        })
    }

    /// Who signs: the configured principal, or where the credentials come from.
    pub fn describe(&self) -> String {
        let who = self
            .settings
            .principal
            .clone()
            .unwrap_or_else(|| "the default principal".to_owned());
        match &self.settings.keytab {
            Some(k) => format!("GSS-TSIG as {who} (keytab {k})"),
            None => format!("GSS-TSIG as {who} (credentials cache)"),
        }
    }

    /// Remembers the host name of a server (for `DNS/host`).
    pub fn learn_host(&self, server: SocketAddr, host: &str) {
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(server)
            .or_insert_with(|| host.trim_end_matches('.').to_owned());
    }

    /// The server's service principal: `server_principal`, else `DNS@host` (host-based,
    /// so krb5.conf's domain_realm picks the realm).
    fn target(&self, server: SocketAddr) -> Result<(GssName, String), PluginError> {
        let (text, kind) = match &self.settings.server_principal {
            Some(p) if p.contains('@') && p.contains('/') => (p.clone(), GSS_NT_KRB5_PRINCIPAL),
            Some(p) => match p.split_once('/') {
                Some((svc, host)) => (format!("{svc}@{host}"), GSS_NT_HOSTBASED_SERVICE),
                None => (p.clone(), GSS_NT_HOSTBASED_SERVICE),
            },
            None => {
                let host = self
                    .hosts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&server)
                    .cloned()
                    .ok_or_else(|| {
                        PluginError::config(format!(
                            "GSS-TSIG: no host name known for server {server}; set \
                             server_principal (e.g. \"DNS/ns1.example.com\")"
                        ))
                    })?;
                (format!("DNS@{host}"), GSS_NT_HOSTBASED_SERVICE)
            }
        };
        let shown = text.replacen('@', "/", usize::from(kind == GSS_NT_HOSTBASED_SERVICE));
        let name = GssName::new(text.as_bytes(), Some(kind)).map_err(|e| {
            PluginError::config(format!("server_principal {shown:?}: not a valid name: {e}"))
        })?;
        Ok((name, shown))
    }

    /// `plugin check`: acquires the credentials (a ticket from the keytab, or the ccache's)
    /// and says whose they are and how long they last.
    pub fn check_credentials(&self) -> Result<String, PluginError> {
        let cred = self.credential()?;
        let name = cred
            .name()
            .ok()
            .and_then(|n| n.display_name().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| "?".into());
        let life = cred.lifetime().map(|d| d.as_secs()).unwrap_or(0);
        if life == 0 {
            return Err(kerberos_error(
                "Kerberos credentials",
                "credentials expired",
                self,
            ));
        }
        Ok(format!("{name}, valid for {life} s ({})", self.describe()))
    }

    /// Initiator credentials: from the keytab into a private in-memory ccache, else the
    /// default ccache (optionally for `principal`).
    fn credential(&self) -> Result<Cred, PluginError> {
        let principal = match &self.settings.principal {
            Some(p) => Some(
                GssName::new(p.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL)).map_err(|e| {
                    PluginError::config(format!("principal {p:?}: not a valid name: {e}"))
                })?,
            ),
            None => None,
        };
        let result = match &self.settings.keytab {
            Some(kt) => acquire_from_keytab(self.settings.principal.as_deref(), kt),
            None => Cred::acquire(principal.as_ref(), None, CredUsage::Initiate, None),
        };
        result.map_err(|e| kerberos_error("acquiring Kerberos credentials", &e.to_string(), self))
    }

    /// Signs `msg` with the context for `server` (negotiated if needed), sends it over TCP
    /// and returns the verified answer's rcode. A BADKEY answer (the server forgot the
    /// context) renegotiates once.
    pub async fn exchange(
        &self,
        server: SocketAddr,
        msg: &Message,
        timeout: Duration,
        counters: &Counters,
        what: &str,
    ) -> Result<ResponseCode, PluginError> {
        let mut sessions = self.sessions.lock().await;
        for attempt in 0..2 {
            let fresh = match sessions.get(&server) {
                Some(s) if Instant::now() < s.renew_at && attempt == 0 => false,
                _ => {
                    let s = self.negotiate(server, timeout, counters).await?;
                    sessions.insert(server, s);
                    true
                }
            };
            let Some(session) = sessions.get_mut(&server) else {
                continue;
            };
            let mut signed = msg.clone();
            let request_mac = sign(session, &mut signed, what)?;
            let bytes = signed
                .to_vec()
                .map_err(|e| PluginError::new(ErrorKind::Internal, format!("{what}: {e}")))?;
            Counters::bump(&counters.update_messages);
            let answer = tcp_exchange(server, &bytes, timeout)
                .await
                .map_err(|e| PluginError::new(ErrorKind::Network, format!("{what}: {e}")))?;
            match verify(session, &answer, &request_mac) {
                Verified::Ok(rcode) => return Ok(rcode),
                Verified::Rejected(TsigError::BadKey) if !fresh => {
                    // The server dropped the context (restart, expiry): negotiate anew.
                    sessions.remove(&server);
                }
                Verified::Rejected(e) => {
                    return Err(PluginError::new(
                        ErrorKind::Auth,
                        format!(
                            "{what}: the server rejected the GSS-TSIG signature ({}; {})",
                            tsig_error_name(e),
                            self.describe()
                        ),
                    ));
                }
                Verified::Bad(why) => {
                    return Err(PluginError::new(
                        ErrorKind::Auth,
                        format!("{what}: the answer's GSS-TSIG signature is not valid: {why}"),
                    ));
                }
            }
        }
        Err(PluginError::new(
            ErrorKind::Auth,
            format!(
                "{what}: the server answered BADKEY to a freshly negotiated GSS-TSIG context ({})",
                self.describe()
            ),
        ))
    }

    /// TKEY negotiation (RFC 3645 §4.1): tokens back and forth until the context is
    /// complete; the server's last answer, when signed, is verified with the new context.
    async fn negotiate(
        &self,
        server: SocketAddr,
        timeout: Duration,
        counters: &Counters,
    ) -> Result<Session, PluginError> {
        let cred = self.credential()?;
        let (target, shown) = self.target(server)?;
        let what = format!("GSS-TSIG negotiation (TKEY) with {server} as {shown}");
        let flags =
            CtxFlags::GSS_C_MUTUAL_FLAG | CtxFlags::GSS_C_REPLAY_FLAG | CtxFlags::GSS_C_INTEG_FLAG;
        let mut ctx = ClientCtx::new(Some(cred), target, flags, Some(GSS_MECH_KRB5));
        let key_name = unique_key_name()?;
        let mut token = ctx
            .step(None, None)
            .map_err(|e| kerberos_error(&what, &e.to_string(), self))?;
        for _ in 0..MAX_ROUNDS {
            let Some(out) = token.take() else { break };
            Counters::bump(&counters.dns_queries);
            let (answer_token, raw) = tkey_round(server, &key_name, &out, timeout, &what).await?;
            if !ctx.is_complete() {
                token = ctx
                    .step(Some(&answer_token), None)
                    .map_err(|e| kerberos_error(&what, &e.to_string(), self))?;
            }
            if ctx.is_complete() && token.is_none() {
                let mut session = Session {
                    ctx,
                    key_name,
                    renew_at: Instant::now(),
                };
                if let Verified::Bad(why) = verify_if_signed(&mut session, &raw) {
                    return Err(PluginError::new(
                        ErrorKind::Auth,
                        format!("{what}: the final TKEY answer's signature is not valid: {why}"),
                    ));
                }
                let life = session.ctx.lifetime().unwrap_or(Duration::from_secs(300));
                session.renew_at = Instant::now() + life.saturating_sub(RENEW_MARGIN);
                self.negotiations.fetch_add(1, Ordering::Relaxed);
                return Ok(session);
            }
        }
        Err(PluginError::new(
            ErrorKind::Auth,
            format!("{what}: the context was not complete after {MAX_ROUNDS} TKEY rounds"),
        ))
    }
}

/// gss_acquire_cred_from with `client_keytab` and a private `MEMORY:` ccache, so the
/// keytab is used without touching the user's ccache or the process environment.
fn acquire_from_keytab(
    principal: Option<&str>,
    keytab: &str,
) -> Result<Cred, libgssapi::error::Error> {
    use libgssapi_sys as sys;
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let kt = c(&format!("FILE:{}", keytab.trim_start_matches("FILE:")));
    let cc = c(&format!(
        "MEMORY:certfleet-rfc2136-{}",
        unique_label().unwrap_or_default()
    ));
    let k_kt = c("client_keytab");
    let k_cc = c("ccache");
    let mut elements = [
        sys::gss_key_value_element_desc {
            key: k_kt.as_ptr(),
            value: kt.as_ptr(),
        },
        sys::gss_key_value_element_desc {
            key: k_cc.as_ptr(),
            value: cc.as_ptr(),
        },
    ];
    let store = sys::gss_key_value_set_desc {
        count: elements.len() as u32,
        elements: elements.as_mut_ptr(),
    };
    let mut minor: sys::OM_uint32 = 0;
    let mut name: sys::gss_name_t = std::ptr::null_mut();
    if let Some(p) = principal {
        let mut buf = sys::gss_buffer_desc {
            length: p.len(),
            value: p.as_ptr() as *mut std::ffi::c_void,
        };
        // GSS_KRB5_NT_PRINCIPAL_NAME, 1.2.840.113554.1.2.2.1 (RFC 1964).
        const KRB5_PRINCIPAL_OID: &[u8] = b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x01";
        let mut oid = sys::gss_OID_desc {
            length: KRB5_PRINCIPAL_OID.len() as u32,
            elements: KRB5_PRINCIPAL_OID.as_ptr() as *mut std::ffi::c_void,
        };
        // SAFETY: the buffer points at `p` and the OID at a static, both alive for the call
        // (the library copies what it keeps); `name` receives a new name released below.
        let major = unsafe { sys::gss_import_name(&mut minor, &mut buf, &mut oid, &mut name) };
        if major != sys::GSS_S_COMPLETE {
            return Err(libgssapi::error::Error {
                major: libgssapi::error::MajorFlags::from_bits_retain(major),
                minor,
            });
        }
    }
    let mut cred: sys::gss_cred_id_t = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call (CStrings and the element array outlive
    // it); a null name means the keytab's first principal, a null mech set the default.
    let major = unsafe {
        sys::gss_acquire_cred_from(
            &mut minor,
            name,
            0,
            std::ptr::null_mut(),
            sys::GSS_C_INITIATE as sys::gss_cred_usage_t,
            &store,
            &mut cred,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if !name.is_null() {
        let mut m2: sys::OM_uint32 = 0;
        // SAFETY: `name` came from gss_import_name above and is released once.
        unsafe { sys::gss_release_name(&mut m2, &mut name) };
    }
    if major != sys::GSS_S_COMPLETE {
        return Err(libgssapi::error::Error {
            major: libgssapi::error::MajorFlags::from_bits_retain(major),
            minor,
        });
    }
    // SAFETY: `cred` is a credential the library just returned; `Cred` takes ownership.
    Ok(unsafe { Cred::from_c(cred) })
}

/// Maps a GSS-API/Kerberos failure to an error an admin can act on.
fn kerberos_error(what: &str, text: &str, g: &GssTsig) -> PluginError {
    let lower = text.to_ascii_lowercase();
    let who = g.describe();
    let (kind, hint) = if lower.contains("clock skew") {
        (
            ErrorKind::Auth,
            "clock skew: this host's clock differs from the KDC's or the DNS server's by more \
             than the allowed skew (krb5.conf clockskew, 5 minutes by default); fix the time \
             (NTP)",
        )
    } else if lower.contains("key table")
        || lower.contains("keytab")
        || lower.contains("permission denied")
    {
        (
            ErrorKind::Config,
            "keytab unreadable or without the principal's key (check the path, its \
             permissions and `klist -k`)",
        )
    } else if lower.contains("no kerberos credentials")
        || lower.contains("no credentials cache")
        || lower.contains("credentials cache file")
        || lower.contains("expired")
        || lower.contains("not found in credentials cache")
    {
        (
            ErrorKind::Auth,
            "no valid Kerberos ticket: run `kinit` as the service account, or set keytab (and \
             principal) in [plugins.rfc2136]",
        )
    } else if lower.contains("client") && lower.contains("not found in kerberos database") {
        (
            ErrorKind::Config,
            "the client principal is unknown to the KDC (check principal and the keytab)",
        )
    } else if lower.contains("not found in kerberos database") {
        (
            ErrorKind::Config,
            "the DNS server's service principal is unknown to the KDC (AD: the DC's \
             DNS/host SPN; BIND: DNS/host in its tkey-gssapi-keytab); set server_principal",
        )
    } else {
        (ErrorKind::Auth, "Kerberos failure")
    };
    PluginError::new(kind, format!("{what}: {hint} ({who}: {})", text.trim()))
}

fn unique_label() -> Result<String, PluginError> {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    Ok(format!("{:016x}", h.finish()))
}

/// A key name no other client uses: `<random>.sig-certfleet.` (like nsupdate's).
fn unique_key_name() -> Result<Name, PluginError> {
    Name::from_ascii(format!("{}.sig-certfleet.", unique_label()?))
        .map_err(|e| PluginError::new(ErrorKind::Internal, format!("TKEY key name: {e}")))
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Adds the gss-tsig TSIG record to `msg`; returns its MAC (the request MAC of the answer).
fn sign(session: &mut Session, msg: &mut Message, what: &str) -> Result<Vec<u8>, PluginError> {
    let pre = TSIG::new(
        TsigAlgorithm::Unknown(algorithm_name()),
        now_secs(),
        FUDGE,
        Vec::new(),
        msg.metadata.id,
        None,
        Vec::new(),
    );
    let tbs = message_tbs(&*msg, &pre, &session.key_name)
        .map_err(|e| PluginError::new(ErrorKind::Internal, format!("{what}: {e}")))?;
    let mic = session.ctx.get_mic(&tbs).map_err(|e| {
        PluginError::new(
            ErrorKind::Auth,
            format!("{what}: gss_get_mic failed (context expired?): {e}"),
        )
    })?;
    let mac = mic.to_vec();
    msg.set_signature(Box::new(make_tsig_record(
        session.key_name.clone(),
        pre.set_mac(mac.clone()),
    )));
    Ok(mac)
}

enum Verified {
    Ok(ResponseCode),
    Rejected(TsigError),
    Bad(String),
}

/// Checks the answer's TSIG with `gss_verify_mic`; an unsigned answer is accepted only
/// when it reports a TSIG error (the server could not sign it).
fn verify(session: &mut Session, raw: &[u8], request_mac: &[u8]) -> Verified {
    let rcode = match Message::from_vec(raw) {
        Ok(m) => m.metadata.response_code,
        Err(e) => return Verified::Bad(format!("unreadable answer: {e}")),
    };
    let (tbs, rr) = match signed_bitmessage_to_buf(raw, Some(request_mac), true) {
        Ok(x) => x,
        Err(_) => {
            return match rcode {
                ResponseCode::NotAuth | ResponseCode::BADKEY => {
                    Verified::Rejected(TsigError::BadKey)
                }
                ResponseCode::BADSIG => Verified::Rejected(TsigError::BadSig),
                ResponseCode::BADTIME => Verified::Rejected(TsigError::BadTime),
                _ => Verified::Bad(format!("the answer ({}) is not signed", rcode_name(rcode))),
            };
        }
    };
    if let Some(e) = rr.data.error {
        return Verified::Rejected(e);
    }
    if let Err(e) = session.ctx.verify_mic(&tbs, &rr.data.mac) {
        return Verified::Bad(format!("gss_verify_mic: {e}"));
    }
    let skew = now_secs().abs_diff(rr.data.time);
    if skew > u64::from(rr.data.fudge) {
        return Verified::Bad(format!(
            "signed {skew} s away from this host's clock (fudge {} s)",
            rr.data.fudge
        ));
    }
    Verified::Ok(rcode)
}

/// Verifies the final TKEY answer when the server signed it (BIND does).
fn verify_if_signed(session: &mut Session, raw: &[u8]) -> Verified {
    match signed_bitmessage_to_buf(raw, None, true) {
        Ok((tbs, rr)) => match session.ctx.verify_mic(&tbs, &rr.data.mac) {
            Ok(()) => Verified::Ok(ResponseCode::NoError),
            Err(e) => Verified::Bad(format!("gss_verify_mic: {e}")),
        },
        Err(_) => Verified::Ok(ResponseCode::NoError),
    }
}

fn tsig_error_name(e: TsigError) -> String {
    match e {
        TsigError::BadSig => "BADSIG".into(),
        TsigError::BadKey => "BADKEY".into(),
        TsigError::BadTime => "BADTIME: clock skew".into(),
        TsigError::BadTrunc => "BADTRUNC".into(),
        TsigError::Unknown(c) => format!("TSIG error {c}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kerberos_failures_are_named_for_the_admin() {
        let g = GssTsig::new(GssSettings {
            principal: Some("acme@CORP.TEST".into()),
            ..GssSettings::default()
        })
        .expect("no keytab to open");
        let cases = [
            (
                "Unspecified GSS failure (Clock skew too great)",
                "clock skew",
            ),
            (
                "No credentials were supplied (No Kerberos credentials available)",
                "no valid Kerberos ticket",
            ),
            ("(Ticket expired)", "no valid Kerberos ticket"),
            ("(Key table file '/x' not found)", "keytab unreadable"),
            (
                "(Server DNS/ns9.corp.test@CORP.TEST not found in Kerberos database)",
                "service principal is unknown to the KDC",
            ),
            (
                "(Client 'nobody@CORP.TEST' not found in Kerberos database)",
                "client principal is unknown to the KDC",
            ),
        ];
        for (text, named) in cases {
            let e = kerberos_error("negotiation", text, &g);
            assert!(e.message.contains(named), "{text}: {}", e.message);
            assert!(e.message.contains("acme@CORP.TEST"), "{}", e.message);
        }
        let e = GssTsig::new(GssSettings {
            keytab: Some("/nonexistent/acme.keytab".into()),
            ..GssSettings::default()
        })
        .expect_err("unreadable keytab");
        assert!(e.message.contains("keytab unreadable") && e.message.contains("/nonexistent"));
    }

    #[test]
    fn key_names_are_unique() {
        let a = unique_key_name().expect("a");
        let b = unique_key_name().expect("b");
        assert_ne!(a, b);
        assert!(a.to_ascii().ends_with(".sig-certfleet."));
    }
}
