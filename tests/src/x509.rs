//! Reading the certificates certfleet writes, and checking them with openssl.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use der::asn1::UintRef;
use der::oid::db::{rfc4519, rfc5912, rfc8410};
use der::{Decode, DecodePem, Encode};
use serde_json::Value;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::{DirectoryString, GeneralName};
use x509_cert::name::Name;
use x509_cert::spki::SubjectPublicKeyInfoRef;

/// The parts of a certificate the tests look at.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Subject common name, if any.
    pub subject_cn: Option<String>,
    /// Issuer common name, if any.
    pub issuer_cn: Option<String>,
    /// DNS names of the subjectAltName extension, in certificate order.
    pub dns_names: Vec<String>,
    /// IP addresses of the subjectAltName extension.
    pub ip_addresses: Vec<IpAddr>,
    /// Serial number in lowercase hex, without leading zero bytes (the form Pebble's
    /// `/cert-status-by-serial/` accepts).
    pub serial_hex: String,
    /// DER of the SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertInfo> {
        let cert = Certificate::from_der(der).context("parsing DER certificate")?;
        Self::from_cert(&cert)
    }

    /// Parses the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<CertInfo> {
        let cert = Certificate::from_pem(pem.as_bytes()).context("parsing PEM certificate")?;
        Self::from_cert(&cert)
    }

    fn from_cert(cert: &Certificate) -> Result<CertInfo> {
        let tbs = &cert.tbs_certificate;
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Some((_, san)) = tbs
            .get::<SubjectAltName>()
            .context("decoding subjectAltName")?
        {
            for name in san.0 {
                match name {
                    GeneralName::DnsName(n) => dns_names.push(n.as_str().to_owned()),
                    GeneralName::IpAddress(o) => {
                        let b = o.as_bytes();
                        if let Ok(v4) = <[u8; 4]>::try_from(b) {
                            ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
                            ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let serial = tbs.serial_number.as_bytes();
        let first_nonzero = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
        let mut serial_hex: String = serial[first_nonzero..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if serial_hex.is_empty() {
            serial_hex.push('0');
        }
        Ok(CertInfo {
            der: cert.to_der()?,
            subject_cn: common_name(&tbs.subject),
            issuer_cn: common_name(&tbs.issuer),
            dns_names,
            ip_addresses,
            serial_hex,
            spki_der: tbs.subject_public_key_info.to_der()?,
            not_before: tbs.validity.not_before.to_system_time(),
            not_after: tbs.validity.not_after.to_system_time(),
        })
    }

    /// The SAN DNS names, sorted (for comparing with the requested names as a set).
    pub fn sorted_dns_names(&self) -> Vec<String> {
        let mut v = self.dns_names.clone();
        v.sort();
        v
    }
}

/// The first certificate of a PEM file.
pub fn read_cert(path: &Path) -> Result<CertInfo> {
    read_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{}: no certificate in it", path.display()))
}

/// Every certificate of a PEM file, in file order.
pub fn read_certs(path: &Path) -> Result<Vec<CertInfo>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = Certificate::load_pem_chain(&pem)
        .with_context(|| format!("{}: not a PEM certificate chain", path.display()))?;
    certs.iter().map(CertInfo::from_cert).collect()
}

fn common_name(name: &Name) -> Option<String> {
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == rfc4519::CN {
                let decoded = atv
                    .value
                    .to_der()
                    .ok()
                    .and_then(|d| DirectoryString::from_der(&d).ok());
                return Some(match decoded {
                    Some(DirectoryString::Utf8String(s)) => s,
                    Some(DirectoryString::PrintableString(s)) => s.to_string(),
                    Some(DirectoryString::TeletexString(s)) => s.to_string(),
                    None => String::from_utf8_lossy(atv.value.value()).into_owned(),
                });
            }
        }
    }
    None
}

/// Runs `openssl verify -CAfile ROOT -untrusted CHAIN CERT`; `Ok` only if openssl says OK.
pub fn openssl_verify(root_pem: &Path, chain_pem: &Path, cert_pem: &Path) -> Result<()> {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root_pem)
        .arg("-untrusted")
        .arg(chain_pem)
        .arg(cert_pem)
        .output()
        .context("running openssl (apt-get install -y openssl)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stdout.trim_end().ends_with(": OK") {
        bail!(
            "openssl verify -CAfile {} -untrusted {} {} failed ({}):\n{stdout}{stderr}",
            root_pem.display(),
            chain_pem.display(),
            cert_pem.display(),
            out.status
        );
    }
    Ok(())
}

/// DER SubjectPublicKeyInfo of a PEM private key file (any format openssl reads: PKCS#8,
/// SEC1, PKCS#1), via `openssl pkey -pubout`.
pub fn private_key_spki_der(key_pem: &Path) -> Result<Vec<u8>> {
    let out = Command::new("openssl")
        .arg("pkey")
        .arg("-in")
        .arg(key_pem)
        .args(["-pubout", "-outform", "DER"])
        .output()
        .context("running openssl (apt-get install -y openssl)")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "openssl pkey -in {} failed: {}",
            key_pem.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn b64(jwk: &Value, field: &str) -> Result<Vec<u8>> {
    let s = jwk
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("JWK has no string `{field}`: {jwk}"))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .with_context(|| format!("JWK `{field}` is not base64url"))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

#[derive(der::Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// True if the public JWK (`{"kty":"EC","crv":"P-256","x","y"}`, `{"kty":"RSA","n","e"}`,
/// `{"kty":"OKP","crv":"Ed25519","x"}`) is the key of this DER SubjectPublicKeyInfo.
pub fn spki_matches_jwk(spki_der: &[u8], jwk: &Value) -> Result<bool> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).context("parsing SPKI")?;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| anyhow!("SPKI key has unused bits"))?;
    let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
    let alg = spki.algorithm.oid;
    if alg == rfc5912::ID_EC_PUBLIC_KEY {
        if kty != "EC" {
            return Ok(false);
        }
        let curve = spki
            .algorithm
            .parameters
            .ok_or_else(|| anyhow!("EC SPKI without curve"))?
            .decode_as::<der::oid::ObjectIdentifier>()?;
        let crv = match curve {
            c if c == rfc5912::SECP_256_R_1 => "P-256",
            c if c == rfc5912::SECP_384_R_1 => "P-384",
            c if c == rfc5912::SECP_521_R_1 => "P-521",
            c => bail!("unknown EC curve {c}"),
        };
        if jwk.get("crv").and_then(Value::as_str) != Some(crv) {
            return Ok(false);
        }
        let mut point = vec![0x04];
        point.extend(b64(jwk, "x")?);
        point.extend(b64(jwk, "y")?);
        Ok(bits == point.as_slice())
    } else if alg == rfc5912::RSA_ENCRYPTION {
        if kty != "RSA" {
            return Ok(false);
        }
        let key = RsaPublicKey::from_der(bits).context("parsing RSAPublicKey")?;
        Ok(
            strip_zeros(key.modulus.as_bytes()) == strip_zeros(&b64(jwk, "n")?)
                && strip_zeros(key.public_exponent.as_bytes()) == strip_zeros(&b64(jwk, "e")?),
        )
    } else if alg == rfc8410::ID_ED_25519 {
        Ok(kty == "OKP"
            && jwk.get("crv").and_then(Value::as_str) == Some("Ed25519")
            && bits == b64(jwk, "x")?.as_slice())
    } else {
        bail!("unsupported SPKI algorithm {alg}")
    }
}
