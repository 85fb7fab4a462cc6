//! dns-persist-01 (draft-ietf-acme-dns-persist; CA/B Forum BR 3.2.2.4.22): one TXT record,
//! `_validation-persist.<domain>`, names the CA (an issuer domain name) and the ACME
//! account URL; every later authorization for the domain is validated against it. The
//! client publishes nothing per issuance and answers the challenge with `{}`.
//!
//! The record value is an RFC 8659 issue-value: `<issuer-domain-name>; accounturi=<URL>`
//! with optional `policy=wildcard` (wildcards and subdomains too) and
//! `persistUntil=<unix seconds>`.

use std::fmt;

/// The challenge type name.
pub const DNS_PERSIST_01: &str = "dns-persist-01";

/// The label prepended to the domain.
pub const PERSIST_LABEL: &str = "_validation-persist";

/// One persistent authorization record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PersistRecord {
    /// The name the record is for, as ordered (`*.example.com` for a wildcard).
    pub domain: String,
    /// `_validation-persist.<domain without *.>` (no trailing dot).
    pub name: String,
    /// The TXT value.
    pub value: String,
}

/// What goes into a record besides the domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistPolicy {
    pub issuer_domain_name: String,
    pub account_url: String,
    /// `policy=wildcard`: also wildcards and subdomains of the domain.
    pub wildcard: bool,
    /// `persistUntil=`: unix seconds after which the CA ignores the record.
    pub persist_until: Option<u64>,
}

/// Why a record cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    #[error(
        "issuer domain name {0:?} is not a domain name (expected e.g. letsencrypt.org, no spaces, `;` or `=`)"
    )]
    BadIssuer(String),
    #[error(
        "account URL {0:?} cannot go into a TXT record (expected an https URL without `;` or spaces)"
    )]
    BadAccountUrl(String),
    #[error("{0:?}: a wildcard name needs policy=wildcard in its dns-persist-01 record")]
    WildcardNeedsPolicy(String),
}

impl PersistRecord {
    /// The record for `domain` (a wildcard name needs `policy.wildcard`).
    pub fn new(domain: &str, policy: &PersistPolicy) -> Result<PersistRecord, PersistError> {
        let issuer = policy.issuer_domain_name.trim().trim_end_matches('.');
        if issuer.is_empty()
            || issuer
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        {
            return Err(PersistError::BadIssuer(policy.issuer_domain_name.clone()));
        }
        let url = &policy.account_url;
        if url.is_empty()
            || url
                .chars()
                .any(|c| c == ';' || c.is_whitespace() || c == '"')
        {
            return Err(PersistError::BadAccountUrl(url.clone()));
        }
        let base = domain.strip_prefix("*.");
        if base.is_some() && !policy.wildcard {
            return Err(PersistError::WildcardNeedsPolicy(domain.to_owned()));
        }
        let base = base
            .unwrap_or(domain)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let mut value = format!("{}; accounturi={url}", issuer.to_ascii_lowercase());
        if policy.wildcard {
            value.push_str("; policy=wildcard");
        }
        if let Some(t) = policy.persist_until {
            value.push_str(&format!("; persistUntil={t}"));
        }
        Ok(PersistRecord {
            domain: domain.to_owned(),
            name: format!("{PERSIST_LABEL}.{base}"),
            value,
        })
    }

    /// A zone-file line (absolute owner name, quoted value).
    pub fn zone_line(&self, ttl: u32) -> String {
        format!("{}. {ttl} IN TXT \"{}\"", self.name, self.value)
    }
}

impl fmt::Display for PersistRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} TXT \"{}\"", self.name, self.value)
    }
}

/// Whether a published TXT value authorizes `policy` for a wanted name (`wildcard_needed`
/// for `*.` names). Parsing follows the issue-value grammar: keys are case-insensitive,
/// a duplicate key or a part without `=` makes the record malformed (not matching).
pub fn value_authorizes(value: &str, policy: &PersistPolicy, wildcard_needed: bool) -> bool {
    let mut parts = value.trim().trim_matches('"').split(';').map(str::trim);
    let Some(issuer) = parts.next() else {
        return false;
    };
    if !issuer.eq_ignore_ascii_case(policy.issuer_domain_name.trim_end_matches('.')) {
        return false;
    }
    let mut account = None;
    let mut wildcard = false;
    let mut seen = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return false;
        };
        let k = k.trim().to_ascii_lowercase();
        if seen.contains(&k) {
            return false;
        }
        match k.as_str() {
            "accounturi" => account = Some(v.trim().to_owned()),
            "policy" => wildcard = v.trim().eq_ignore_ascii_case("wildcard"),
            "persistuntil" => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                match v.trim().parse::<i64>() {
                    Ok(t) if t >= now => {}
                    _ => return false,
                }
            }
            _ => {}
        }
        seen.push(k);
    }
    account.as_deref() == Some(policy.account_url.as_str()) && (wildcard || !wildcard_needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(wildcard: bool) -> PersistPolicy {
        PersistPolicy {
            issuer_domain_name: "CA.Example.".to_owned(),
            account_url: "https://ca.example/acct/1".to_owned(),
            wildcard,
            persist_until: None,
        }
    }

    #[test]
    fn record_name_and_value_follow_the_draft() {
        let r = PersistRecord::new("a.corp.test", &policy(false)).expect("record");
        assert_eq!(r.name, "_validation-persist.a.corp.test");
        assert_eq!(r.value, "ca.example; accounturi=https://ca.example/acct/1");
        assert_eq!(
            r.zone_line(300),
            "_validation-persist.a.corp.test. 300 IN TXT \"ca.example; accounturi=https://ca.example/acct/1\""
        );
        let mut p = policy(true);
        p.persist_until = Some(1_900_000_000);
        let w = PersistRecord::new("*.corp.test", &p).expect("wildcard record");
        assert_eq!(w.name, "_validation-persist.corp.test");
        assert_eq!(
            w.value,
            "ca.example; accounturi=https://ca.example/acct/1; policy=wildcard; persistUntil=1900000000"
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        assert_eq!(
            PersistRecord::new("*.corp.test", &policy(false)),
            Err(PersistError::WildcardNeedsPolicy("*.corp.test".to_owned()))
        );
        let mut p = policy(false);
        p.account_url = "https://x/; policy=wildcard".to_owned();
        assert!(matches!(
            PersistRecord::new("a.test", &p),
            Err(PersistError::BadAccountUrl(_))
        ));
        p = policy(false);
        p.issuer_domain_name = "ca example".to_owned();
        assert!(matches!(
            PersistRecord::new("a.test", &p),
            Err(PersistError::BadIssuer(_))
        ));
    }

    #[test]
    fn published_values_are_matched_like_the_ca_does() {
        let p = policy(false);
        let own = "ca.example; accounturi=https://ca.example/acct/1";
        assert!(value_authorizes(own, &p, false));
        assert!(!value_authorizes(own, &p, true), "no policy=wildcard");
        assert!(value_authorizes(
            "CA.EXAMPLE;AccountURI=https://ca.example/acct/1;Policy=wildcard",
            &p,
            true
        ));
        assert!(!value_authorizes(
            "ca.example; accounturi=https://ca.example/acct/2",
            &p,
            false
        ));
        assert!(!value_authorizes(
            "other.ca; accounturi=https://ca.example/acct/1",
            &p,
            false
        ));
        assert!(!value_authorizes(
            "ca.example; accounturi=https://ca.example/acct/1; accounturi=x",
            &p,
            false
        ));
        assert!(!value_authorizes(
            "ca.example; accounturi=https://ca.example/acct/1; persistUntil=1",
            &p,
            false
        ));
    }
}
