//! When is a certificate due? ARI (RFC 9773) when the CA offers it, else when a third of its
//! lifetime is left.

use certfleet_acme::{AcmeClient, CertId, RenewalWindow};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The decision and why, for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewalDecision {
    /// Renew now; the string says why.
    Due(String),
    /// Not yet; renew at or after this instant.
    NotYet {
        renew_at: OffsetDateTime,
        reason: String,
    },
}

impl RenewalDecision {
    pub fn is_due(&self) -> bool {
        matches!(self, RenewalDecision::Due(_))
    }
}

/// Decides for a certificate valid `not_before..not_after`. `ari_window` is the CA's
/// suggested window when it offers ARI; `serial` picks a stable point inside the window so
/// that runs from cron agree with each other instead of drawing a new random time each run
/// (RFC 9773 §4.2 asks for a random point; a hash of the serial is uniformly spread).
pub fn decide(
    now: OffsetDateTime,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    ari_window: Option<&RenewalWindow>,
    serial: &str,
) -> RenewalDecision {
    if now >= not_after {
        return RenewalDecision::Due("the certificate has expired".to_owned());
    }
    if let Some(window) = ari_window {
        let renew_at = window.start + (window.end - window.start) * stable_fraction(serial);
        return if now >= renew_at {
            RenewalDecision::Due(format!(
                "inside the CA's renewal window {} .. {}",
                rfc3339(window.start),
                rfc3339(window.end)
            ))
        } else {
            RenewalDecision::NotYet {
                renew_at,
                reason: format!(
                    "the CA's renewal window is {} .. {}",
                    rfc3339(window.start),
                    rfc3339(window.end)
                ),
            }
        };
    }
    let lifetime = not_after - not_before;
    let renew_at = not_after - lifetime / 3;
    if now >= renew_at {
        RenewalDecision::Due("less than a third of its lifetime is left".to_owned())
    } else {
        RenewalDecision::NotYet {
            renew_at,
            reason: "renews with a third of its lifetime left".to_owned(),
        }
    }
}

/// The CA's renewal window (RFC 9773) for the certificate whose ARI CertID is `ari_cert_id`
/// (meta.json's `ari_cert_id`). `None` when the CA offers no `renewalInfo`, the id is
/// missing or unusable, or the CA does not answer: the caller then decides by the
/// certificate's lifetime. `name` labels the warnings. `certfleet renew` and a batch's
/// renewal check both ask here, so they agree on when a certificate is due.
pub async fn renewal_window(
    client: &AcmeClient,
    ari_cert_id: Option<&str>,
    name: &str,
) -> Option<RenewalWindow> {
    let cert_id = match ari_cert_id.map(str::parse::<CertId>)? {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(
                "{name}: meta.json has an unusable ari_cert_id ({e}); using the certificate's lifetime"
            );
            return None;
        }
    };
    client.directory().renewal_info.as_ref()?;
    match client.renewal_info(&cert_id).await {
        Ok(info) => Some(info.window),
        Err(e) => {
            tracing::warn!(
                "{name}: renewal info unavailable ({e}); using the certificate's lifetime"
            );
            None
        }
    }
}

/// A time in a message: RFC 3339 in UTC, to the second.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A number in [0, 1) derived from `seed`.
fn stable_fraction(seed: &str) -> f64 {
    let digest = Sha256::digest(seed.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn without_ari_renews_at_two_thirds() {
        let nb = datetime!(2026-01-01 0:00 UTC);
        let na = nb + Duration::days(90);
        assert!(!decide(nb + Duration::days(59), nb, na, None, "01").is_due());
        assert!(decide(nb + Duration::days(61), nb, na, None, "01").is_due());
        assert!(decide(na + Duration::seconds(1), nb, na, None, "01").is_due());
    }

    #[test]
    fn ari_window_decides_and_point_is_stable_and_inside() {
        let nb = datetime!(2026-01-01 0:00 UTC);
        let na = nb + Duration::days(90);
        let window = RenewalWindow {
            start: nb + Duration::days(10),
            end: nb + Duration::days(12),
        };
        // Far before the window: not due even though it is an ARI cert.
        let d = decide(nb + Duration::days(1), nb, na, Some(&window), "abcd");
        let RenewalDecision::NotYet { renew_at, .. } = d else {
            panic!("expected NotYet, got {d:?}");
        };
        assert!(renew_at >= window.start && renew_at < window.end);
        // The same serial always picks the same instant.
        let again = decide(nb + Duration::days(2), nb, na, Some(&window), "abcd");
        assert!(
            matches!(again, RenewalDecision::NotYet { renew_at: r, .. } if r == renew_at),
            "{again:?}"
        );
        assert!(decide(window.end, nb, na, Some(&window), "abcd").is_due());
        // A window in the past (revoked certificate) means renew now.
        let past = RenewalWindow {
            start: nb - Duration::days(2),
            end: nb - Duration::days(1),
        };
        assert!(decide(nb + Duration::days(1), nb, na, Some(&past), "abcd").is_due());
    }
}
