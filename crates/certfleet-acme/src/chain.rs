//! Certificate chains as downloaded (`application/pem-certificate-chain`,
//! [RFC 8555 §9.1](https://www.rfc-editor.org/rfc/rfc8555#section-9.1)) and the choice
//! between the default and alternate chains (§7.4.2) by issuer name.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::x509::{LenientCertificate, common_name};

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// A PEM chain, leaf first, with each certificate's DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateChain {
    /// The PEM text as received.
    pub pem: String,
    /// The certificates in order: leaf, then issuers.
    pub certs_der: Vec<Vec<u8>>,
}

/// A PEM chain that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid certificate chain: {0}")]
pub struct InvalidChain(pub String);

impl CertificateChain {
    /// Splits a PEM chain into certificates; each must be valid X.509 DER. Text outside
    /// the `CERTIFICATE` blocks is ignored; a chain with no certificate is an error.
    pub fn from_pem(pem: &str) -> Result<CertificateChain, InvalidChain> {
        let mut certs_der = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start + BEGIN.len()..];
            let end = after.find(END).ok_or_else(|| {
                InvalidChain(format!(
                    "certificate #{} has no END line",
                    certs_der.len() + 1
                ))
            })?;
            let b64: String = after[..end]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let der = STANDARD.decode(b64.as_bytes()).map_err(|e| {
                InvalidChain(format!(
                    "certificate #{}: bad base64: {e}",
                    certs_der.len() + 1
                ))
            })?;
            LenientCertificate::parse(&der).map_err(|e| {
                InvalidChain(format!(
                    "certificate #{}: not X.509: {e}",
                    certs_der.len() + 1
                ))
            })?;
            certs_der.push(der);
            rest = &after[end + END.len()..];
        }
        if certs_der.is_empty() {
            return Err(InvalidChain("no PEM certificate found".to_owned()));
        }
        Ok(CertificateChain {
            pem: pem.to_owned(),
            certs_der,
        })
    }

    /// The end-entity certificate (empty only for a hand-built empty chain).
    pub fn leaf_der(&self) -> &[u8] {
        self.certs_der.first().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The leaf as PEM.
    pub fn leaf_pem(&self) -> String {
        self.certs_der
            .first()
            .map(|d| pem_encode(d))
            .unwrap_or_default()
    }

    /// Everything after the leaf, as PEM (what servers call the "chain" file).
    pub fn issuer_chain_pem(&self) -> String {
        self.certs_der
            .iter()
            .skip(1)
            .map(|d| pem_encode(d))
            .collect()
    }

    /// CN of the issuer of the **last** certificate: the root this chain leads to, which
    /// is what `--preferred-chain` is matched against (as certbot and lego do).
    pub fn top_issuer_common_name(&self) -> Option<String> {
        self.certs_der.last().and_then(|d| issuer_common_name(d))
    }

    /// The issuer CN of every certificate, leaf first (certificates without one skipped).
    pub fn issuer_common_names(&self) -> Vec<String> {
        self.certs_der
            .iter()
            .filter_map(|d| issuer_common_name(d))
            .collect()
    }
}

/// PEM-encodes one certificate (64-column lines, LF).
pub fn pem_encode(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + BEGIN.len() + END.len() + 4);
    out.push_str(BEGIN);
    out.push('\n');
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// The issuer CN of a DER certificate.
pub fn issuer_common_name(der: &[u8]) -> Option<String> {
    let cert = LenientCertificate::parse(der).ok()?;
    common_name(&cert.tbs.issuer)
}

/// The subject CN of a DER certificate.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let cert = LenientCertificate::parse(der).ok()?;
    common_name(&cert.tbs.subject)
}

/// Picks the chain to install: the first (default first, then alternates in order) whose
/// top issuer CN equals `preferred_issuer_cn` (ASCII case-insensitive); else the first
/// with that CN as issuer anywhere in the chain; else `default`. An empty preference
/// keeps the default.
pub fn choose_chain(
    default: CertificateChain,
    alternates: Vec<CertificateChain>,
    preferred_issuer_cn: &str,
) -> CertificateChain {
    let wanted = preferred_issuer_cn.trim();
    if wanted.is_empty() {
        return default;
    }
    let matches = |cn: &str| cn.eq_ignore_ascii_case(wanted);
    let mut all = Vec::with_capacity(alternates.len() + 1);
    all.push(default);
    all.extend(alternates);
    if let Some(i) = all
        .iter()
        .position(|c| c.top_issuer_common_name().is_some_and(|cn| matches(&cn)))
    {
        return all.swap_remove(i);
    }
    if let Some(i) = all
        .iter()
        .position(|c| c.issuer_common_names().iter().any(|cn| matches(cn)))
    {
        return all.swap_remove(i);
    }
    all.swap_remove(0)
}

#[cfg(test)]
mod tests;
