//! How names are proven.

use std::fmt;

/// The challenge type used for non-wildcard names (wildcards need dns-01, or
/// dns-persist-01 with a `policy=wildcard` record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ChallengeKind {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "dns-01")]
    Dns01,
    /// A persistent `_validation-persist` record published once; nothing written per order.
    #[serde(rename = "dns-persist-01")]
    DnsPersist01,
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<ChallengeKind, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http-01" => Ok(ChallengeKind::Http01),
            "dns-01" => Ok(ChallengeKind::Dns01),
            "dns-persist-01" => Ok(ChallengeKind::DnsPersist01),
            _ => Err(format!(
                "unknown challenge {s:?} (expected http-01, dns-01 or dns-persist-01)"
            )),
        }
    }
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::Dns01 => "dns-01",
            ChallengeKind::DnsPersist01 => "dns-persist-01",
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
