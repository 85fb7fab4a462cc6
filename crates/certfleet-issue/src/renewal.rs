//! When is a certificate due? ARI (RFC 9773) when the CA offers it, else when a third of its
//! lifetime is left.

use std::sync::atomic::{AtomicUsize, Ordering};

use certfleet_acme::{AcmeClient, AcmeError, CertId, RenewalWindow};
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

/// Why the CA's renewal window could not be had: the certificate is decided by its
/// lifetime instead.
#[derive(Debug, thiserror::Error)]
enum WindowUnavailable {
    #[error("meta.json has an unusable ari_cert_id ({0})")]
    CertId(String),
    #[error("renewal info unavailable ({0})")]
    Ca(#[from] AcmeError),
}

/// The CA's renewal window (RFC 9773) for the certificate whose ARI CertID is `ari_cert_id`
/// (meta.json's `ari_cert_id`). `None` when the CA offers no `renewalInfo` or the id is
/// missing. `certfleet renew` and a batch's renewal check both ask here (through
/// [`RenewalWindows::window`]), so they agree on when a certificate is due.
async fn renewal_window(
    client: &AcmeClient,
    ari_cert_id: Option<&str>,
) -> Result<Option<RenewalWindow>, WindowUnavailable> {
    let Some(id) = ari_cert_id else {
        return Ok(None);
    };
    let cert_id = id
        .parse::<CertId>()
        .map_err(|e| WindowUnavailable::CertId(e.to_string()))?;
    if client.directory().renewal_info.is_none() {
        return Ok(None);
    }
    Ok(Some(client.renewal_info(&cert_id).await?.window))
}

impl WindowUnavailable {
    /// The CA's renewalInfo looks down (5xx, timeouts, refused connections), as opposed to
    /// an answer about this one certificate.
    fn is_outage(&self) -> bool {
        matches!(self, WindowUnavailable::Ca(e) if e.is_transient())
    }
}

/// Certificates named in a run's warnings about unavailable renewal windows; the others
/// are counted in one closing line ([`RenewalWindows::finish`]).
const NAMED_WINDOW_WARNINGS: usize = 3;

/// Outages in a row after which a run stops asking the CA for renewal windows.
const OUTAGE_TRIP: usize = 5;

/// The renewal-window lookups of one run (`renew --all`, a batch's renewal check). The
/// first three certificates whose window could not be had are named in a warning each and
/// the rest counted in one closing line: a CA whose `renewalInfo` is down would otherwise
/// log a line per certificate of a large batch. After five outages in a row the
/// rest are not asked for (decided by their lifetime): they would each wait to fail in turn.
#[derive(Debug, Default)]
pub struct RenewalWindows {
    unavailable: AtomicUsize,
    outages_in_a_row: AtomicUsize,
    not_asked: AtomicUsize,
}

impl RenewalWindows {
    /// The renewal window of `name`'s certificate; `None` decides by its lifetime.
    pub async fn window(
        &self,
        client: &AcmeClient,
        ari_cert_id: Option<&str>,
        name: &str,
    ) -> Option<RenewalWindow> {
        if self.outages_in_a_row.load(Ordering::Relaxed) >= OUTAGE_TRIP {
            self.not_asked.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let e = match renewal_window(client, ari_cert_id).await {
            Ok(window) => {
                self.outages_in_a_row.store(0, Ordering::Relaxed);
                return window;
            }
            Err(e) => e,
        };
        if self.unavailable.fetch_add(1, Ordering::Relaxed) < NAMED_WINDOW_WARNINGS {
            tracing::warn!("{name}: {e}; using the certificate's lifetime");
        }
        if !e.is_outage() {
            self.outages_in_a_row.store(0, Ordering::Relaxed);
        } else if self.outages_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 == OUTAGE_TRIP {
            tracing::warn!(
                "the CA's renewalInfo failed {OUTAGE_TRIP} times in a row (last: {e}): the \
                 remaining certificates are decided by their lifetime without asking"
            );
        }
        None
    }

    /// The closing lines: certificates not named above, certificates not asked for.
    pub fn finish(&self) {
        let unavailable = self.unavailable.load(Ordering::Relaxed);
        if unavailable > NAMED_WINDOW_WARNINGS {
            tracing::warn!(
                "renewal info unavailable for {} more certificates (not named above); each was \
                 decided by its lifetime",
                unavailable - NAMED_WINDOW_WARNINGS
            );
        }
        let not_asked = self.not_asked.load(Ordering::Relaxed);
        if not_asked > 0 {
            tracing::warn!(
                "{not_asked} certificates were decided by their lifetime without asking the CA \
                 (its renewalInfo was failing)"
            );
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
