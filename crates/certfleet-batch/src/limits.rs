//! Rate-limit configuration: the presets (`letsencrypt`, `letsencrypt-staging`, `none`) and
//! custom limits, as the governor and the planner use them.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LimitsError;
use crate::gcra::Limit;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// The limits a CA applies, as far as the client can plan around them. `None` = no limit.
///
/// Deserializes from configuration such as
/// `{ new_orders_per_account = { capacity = 20, period = "60s" } }`; absent fields are
/// unlimited (`none` preset) unless merged onto a preset with [`Limits::with_overrides`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// New orders per account (charged at order creation, refunded if creation fails).
    pub new_orders_per_account: Option<Limit>,
    /// Certificates per registered domain (eTLD+1 by the PSL with private entries), across
    /// all accounts.
    pub certificates_per_registered_domain: Option<Limit>,
    /// Certificates per exact set of names, across all accounts.
    pub certificates_per_name_set: Option<Limit>,
    /// Failed authorizations per name per account (checked at new-order time).
    pub failed_authorizations_per_name: Option<Limit>,
    /// ARI renewals (`replaces`, sent inside the suggested window) are exempt from all limits.
    pub ari_renewals_exempt: bool,
    /// A renewal of an exact name set issued within this window is exempt from the
    /// new-orders and per-domain limits (Let's Encrypt: 120 days).
    #[serde(with = "opt_duration_serde")]
    pub same_set_renewal_exemption: Option<Duration>,
    /// Most names in one certificate (Let's Encrypt `classic`: 100).
    pub max_names_per_certificate: Option<usize>,
    /// Authorizations pending at once per account (Let's Encrypt: 300); the run's default
    /// bound on orders waiting for DNS or validation (unset:
    /// [`crate::DEFAULT_PENDING_AUTHORIZATIONS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_authorizations_per_account: Option<usize>,
}

/// A named set of limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// Let's Encrypt production (spec-notes §1).
    LetsEncrypt,
    /// Let's Encrypt staging: 1,500 new orders per 3 h; per-domain and exact-set limits of
    /// 30,000 per week and 60 failed validations per hour (the staging documentation's
    /// figures).
    LetsEncryptStaging,
    /// No proactive limits: only reactive pauses after a 429 or 503.
    None,
}

impl FromStr for Preset {
    type Err = LimitsError;

    fn from_str(s: &str) -> Result<Preset, LimitsError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "letsencrypt" => Ok(Preset::LetsEncrypt),
            "letsencrypt-staging" => Ok(Preset::LetsEncryptStaging),
            "none" => Ok(Preset::None),
            _ => Err(LimitsError::UnknownPreset(s.to_owned())),
        }
    }
}

fn limit(capacity: u32, period_secs: u64) -> Option<Limit> {
    Some(Limit {
        capacity,
        period: Duration::from_secs(period_secs),
    })
}

impl Limits {
    /// The limits of a preset.
    pub fn preset(preset: Preset) -> Limits {
        match preset {
            Preset::LetsEncrypt => Limits {
                new_orders_per_account: limit(300, 3 * HOUR),
                certificates_per_registered_domain: limit(50, 7 * DAY),
                certificates_per_name_set: limit(5, 7 * DAY),
                failed_authorizations_per_name: limit(5, HOUR),
                ari_renewals_exempt: true,
                same_set_renewal_exemption: Some(Duration::from_secs(120 * DAY)),
                max_names_per_certificate: Some(100),
                pending_authorizations_per_account: Some(300),
            },
            Preset::LetsEncryptStaging => Limits {
                new_orders_per_account: limit(1500, 3 * HOUR),
                certificates_per_registered_domain: limit(30_000, 7 * DAY),
                certificates_per_name_set: limit(30_000, 7 * DAY),
                failed_authorizations_per_name: limit(60, HOUR),
                ari_renewals_exempt: true,
                same_set_renewal_exemption: Some(Duration::from_secs(120 * DAY)),
                max_names_per_certificate: Some(100),
                pending_authorizations_per_account: Some(300),
            },
            Preset::None => Limits::default(),
        }
    }

    /// `self` with every limit that `custom` sets replacing ours.
    pub fn with_overrides(mut self, custom: &Limits) -> Limits {
        let pick = |ours: &mut Option<Limit>, theirs: Option<Limit>| {
            if theirs.is_some() {
                *ours = theirs;
            }
        };
        pick(
            &mut self.new_orders_per_account,
            custom.new_orders_per_account,
        );
        pick(
            &mut self.certificates_per_registered_domain,
            custom.certificates_per_registered_domain,
        );
        pick(
            &mut self.certificates_per_name_set,
            custom.certificates_per_name_set,
        );
        pick(
            &mut self.failed_authorizations_per_name,
            custom.failed_authorizations_per_name,
        );
        self.ari_renewals_exempt |= custom.ari_renewals_exempt;
        if custom.same_set_renewal_exemption.is_some() {
            self.same_set_renewal_exemption = custom.same_set_renewal_exemption;
        }
        if custom.max_names_per_certificate.is_some() {
            self.max_names_per_certificate = custom.max_names_per_certificate;
        }
        if custom.pending_authorizations_per_account.is_some() {
            self.pending_authorizations_per_account = custom.pending_authorizations_per_account;
        }
        self
    }

    /// Checks every configured limit (non-zero capacity and period).
    pub fn validate(&self) -> Result<(), LimitsError> {
        let all = [
            ("new_orders_per_account", self.new_orders_per_account),
            (
                "certificates_per_registered_domain",
                self.certificates_per_registered_domain,
            ),
            ("certificates_per_name_set", self.certificates_per_name_set),
            (
                "failed_authorizations_per_name",
                self.failed_authorizations_per_name,
            ),
        ];
        for (name, l) in all {
            if let Some(l) = l {
                Limit::new(name, l.capacity, l.period)?;
            }
        }
        Ok(())
    }
}

use certfleet_store::duration::duration_serde;
pub use certfleet_store::duration::{format_duration, parse_duration};

mod opt_duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::duration_serde")] Duration);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}
