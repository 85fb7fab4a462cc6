pub use certfleet_request::ChallengeKind;
use std::sync::Arc;

use certfleet_dns01::{Dns01Solver, PropagationCheck};
use certfleet_http01::Http01Solver;

use crate::IssueError;

/// What can answer challenges for an order.
#[derive(Clone, Debug)]
pub struct ChallengeSolvers {
    pub preferred: ChallengeKind,
    pub http01: Option<Arc<dyn Http01Solver>>,
    pub dns01: Option<Arc<dyn Dns01Solver>>,
    /// Run after dns-01 records are presented and before the CA is told to look.
    pub dns01_propagation: Option<Arc<dyn PropagationCheck>>,
}

impl ChallengeSolvers {
    pub fn http01(solver: Arc<dyn Http01Solver>) -> ChallengeSolvers {
        ChallengeSolvers {
            preferred: ChallengeKind::Http01,
            http01: Some(solver),
            dns01: None,
            dns01_propagation: None,
        }
    }

    /// dns-persist-01: no solver, the CA reads records published beforehand.
    pub fn dns_persist01() -> ChallengeSolvers {
        ChallengeSolvers {
            preferred: ChallengeKind::DnsPersist01,
            http01: None,
            dns01: None,
            dns01_propagation: None,
        }
    }

    pub fn dns01(solver: Arc<dyn Dns01Solver>) -> ChallengeSolvers {
        ChallengeSolvers {
            preferred: ChallengeKind::Dns01,
            http01: None,
            dns01: Some(solver),
            dns01_propagation: None,
        }
    }

    /// The challenge type for `name`, or an error before anything is ordered when no
    /// configured solver can prove it.
    pub fn kind_for(&self, name: &str) -> Result<ChallengeKind, IssueError> {
        let kind = if name.starts_with("*.") && self.preferred != ChallengeKind::DnsPersist01 {
            ChallengeKind::Dns01
        } else {
            self.preferred
        };
        let available = match kind {
            ChallengeKind::Http01 => self.http01.is_some(),
            ChallengeKind::Dns01 => self.dns01.is_some(),
            // Nothing to present: the record was published once, beforehand.
            ChallengeKind::DnsPersist01 => true,
        };
        if available {
            Ok(kind)
        } else if name.starts_with("*.") {
            Err(IssueError::InvalidRequest(format!(
                "{name}: wildcard names can only be validated with dns-01; use --challenge dns-01 with a DNS provider"
            )))
        } else {
            Err(IssueError::InvalidRequest(format!(
                "{name}: no {kind} solver is configured"
            )))
        }
    }
}
