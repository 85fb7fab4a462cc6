use std::sync::Arc;

use certfleet_acme::{
    Account, AuthorizationState, CertId, CertificateChain, Challenge, ChallengeType, OrderStatus,
    PollPolicy,
};
use certfleet_keys::SigningKey;

use crate::poll::Poller;
use crate::steps::{Authorized, Checkpoint, NextStep, OrderSteps, new_order_request, next_step};
use crate::{CertificateInfo, ChallengeKind, ChallengeSolvers, IssueError};

/// What to issue: the names (already validated and normalised) and order options. The
/// certificate key comes from the [`Checkpoint`] once the order is ready.
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    pub names: Vec<String>,
    pub profile: Option<String>,
    /// ARI CertID of the certificate this one replaces (RFC 9773 §5).
    pub replaces: Option<String>,
    /// Issuer CN of the chain to prefer among the default and alternate chains.
    pub preferred_chain: Option<String>,
}

/// A certificate as issued, with what we learned about it.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub names: Vec<String>,
    pub order_url: String,
    pub certificate_url: String,
    pub chain: CertificateChain,
    pub info: CertificateInfo,
    /// ARI CertID; `None` when the leaf lacks an authority key identifier.
    pub cert_id: Option<CertId>,
    /// The key the certificate certifies.
    pub key: Arc<dyn SigningKey>,
}

/// A checkpoint for a key that exists already (`--key`, renewals): nothing to record.
#[derive(Debug)]
pub struct ExistingKey(pub Arc<dyn SigningKey>);

#[async_trait::async_trait]
impl Checkpoint<IssueError> for ExistingKey {
    async fn answering(&mut self) -> Result<(), IssueError> {
        Ok(())
    }

    async fn finalize_key(&mut self) -> Result<Arc<dyn SigningKey>, IssueError> {
        Ok(self.0.clone())
    }
}

/// Drives orders for one account (`issue`, `renew`): the [`OrderSteps`] in sequence with
/// nothing stored between them. Cheap to clone; clones can issue concurrently.
#[derive(Clone, Debug)]
pub struct Issuer {
    steps: OrderSteps,
}

impl Issuer {
    pub fn new(account: Account, solvers: ChallengeSolvers, poll: PollPolicy) -> Issuer {
        Issuer {
            steps: OrderSteps::new(account, solvers, Poller::new(poll)),
        }
    }

    pub fn account(&self) -> &Account {
        &self.steps.account
    }

    /// Runs one order to a downloaded, checked certificate. The key is asked of
    /// `checkpoint` only once the order is ready to be finalized.
    pub async fn issue(
        &self,
        req: &CertificateRequest,
        checkpoint: &mut dyn Checkpoint<IssueError>,
    ) -> Result<IssuedCertificate, IssueError> {
        if req.names.is_empty() {
            return Err(IssueError::InvalidRequest("no names given".to_owned()));
        }
        for name in &req.names {
            self.steps.solvers.kind_for(name)?;
        }
        let steps = &self.steps;
        let new_order = new_order_request(&req.names, req.profile.clone(), req.replaces.clone());
        let (order, _) = steps.new_order(&new_order).await?;
        tracing::info!(order = %order.url, names = %req.names.join(","), "order created");
        let authorized = if next_step(order.state.status, false) == NextStep::Authorize {
            let prefetched = steps.read_authorizations(&order).await?;
            let mut authorized = steps.authorize(order, prefetched, checkpoint).await?;
            if !authorized.assumed_ready {
                authorized.order = steps
                    .wait_order(
                        authorized.order,
                        &[OrderStatus::Ready, OrderStatus::Valid],
                        "the order to become ready",
                    )
                    .await?;
            }
            authorized
        } else {
            Authorized {
                order: steps
                    .wait_order(
                        order,
                        &[OrderStatus::Ready, OrderStatus::Valid],
                        "the order to become ready",
                    )
                    .await?,
                assumed_ready: false,
            }
        };
        let issued = steps
            .finalize(
                authorized,
                &req.names,
                req.preferred_chain.as_deref(),
                checkpoint,
            )
            .await?;
        tracing::info!(serial = %issued.info.serial_hex, not_after = %issued.info.not_after.date(), "certificate issued");
        Ok(issued)
    }
}

/// The challenge of `kind` that an authorization for `name` offers, with its token, or an
/// error naming what the CA offered instead.
pub fn pick_challenge<'a>(
    state: &'a AuthorizationState,
    name: &str,
    kind: ChallengeKind,
) -> Result<(&'a Challenge, String), IssueError> {
    let wanted = challenge_type(kind);
    let challenge = state
        .challenges
        .iter()
        .find(|c| c.kind == wanted)
        .ok_or_else(|| IssueError::ChallengeNotOffered {
            name: name.to_owned(),
            wanted: kind.as_str(),
            offered: state
                .challenges
                .iter()
                .map(|c| c.kind.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    // dns-persist-01 carries no token (the record names the account instead).
    if kind == ChallengeKind::DnsPersist01 {
        return Ok((challenge, challenge.token.clone().unwrap_or_default()));
    }
    let token = challenge.token.clone().ok_or_else(|| {
        IssueError::from(certfleet_acme::AcmeError::InvalidResponse {
            url: challenge.url.clone(),
            detail: "challenge has no token".to_owned(),
        })
    })?;
    Ok((challenge, token))
}

/// The ACME challenge type of a kind.
pub fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
        ChallengeKind::DnsPersist01 => ChallengeType::DnsPersist01,
    }
}
