use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use certfleet_acme::{
    Account, AuthorizationState, AuthorizationStatus, CertId, CertificateChain, Challenge,
    ChallengeType, Identifier, NewOrder, Order, OrderStatus, PollPolicy, RetryAfter, choose_chain,
};
use certfleet_dns01::TxtRecord;
use certfleet_http01::Http01Response;
use certfleet_keys::SigningKey;
use certfleet_keys::csr::build_csr;
use time::OffsetDateTime;

use crate::validation::{AnsweredChallenge, explain_invalid_order};
use crate::{CertificateInfo, ChallengeKind, ChallengeSolvers, IssueError};

/// What to issue: the names (already validated and normalised), the certificate key and
/// order options.
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    pub names: Vec<String>,
    pub cert_key: Arc<dyn SigningKey>,
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
}

/// Drives orders for one account. Cheap to clone; clones can issue concurrently.
#[derive(Clone, Debug)]
pub struct Issuer {
    account: Account,
    solvers: ChallengeSolvers,
    poll: PollPolicy,
}

/// What the solvers were given for one order.
#[derive(Debug, Default)]
struct Presented {
    http01: Vec<Http01Response>,
    dns01: Vec<TxtRecord>,
}

impl Issuer {
    pub fn new(account: Account, solvers: ChallengeSolvers, poll: PollPolicy) -> Issuer {
        Issuer {
            account,
            solvers,
            poll,
        }
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    /// Runs one order to a downloaded certificate.
    pub async fn issue(&self, req: &CertificateRequest) -> Result<IssuedCertificate, IssueError> {
        if req.names.is_empty() {
            return Err(IssueError::InvalidRequest("no names given".to_owned()));
        }
        for name in &req.names {
            self.solvers.kind_for(name)?;
        }
        let new_order = NewOrder {
            identifiers: req.names.iter().map(Identifier::dns).collect(),
            not_before: None,
            not_after: None,
            profile: req.profile.clone(),
            replaces: req.replaces.clone(),
        };
        let mut order = self.account.new_order(&new_order).await?;
        tracing::info!(order = %order.url, names = %req.names.join(","), "order created");

        let mut assumed_ready = false;
        if order.state.status == OrderStatus::Pending {
            match self.authorize(&order).await? {
                Some(decided) => order = decided,
                None => {
                    // Every authorization was valid already and CAs derive `ready` from
                    // them (RFC 8555 §7.1.6), so finalize without re-reading the order. A
                    // CA that lags answers orderNotReady and we fall back to polling.
                    order.state.status = OrderStatus::Ready;
                    assumed_ready = true;
                }
            }
        }
        order = self
            .wait_order(
                order,
                &[OrderStatus::Ready, OrderStatus::Valid],
                "the order to become ready",
            )
            .await?;

        if order.state.status == OrderStatus::Ready {
            let names: Vec<String> = order
                .state
                .identifiers
                .iter()
                .map(|i| i.value.clone())
                .collect();
            let csr = build_csr(req.cert_key.as_ref(), &names).await?;
            tracing::info!(order = %order.url, "finalizing");
            order = match self.account.finalize(&order, &csr.der).await {
                Err(e)
                    if assumed_ready
                        && e.problem_kind()
                            == Some(&certfleet_acme::ProblemKind::OrderNotReady) =>
                {
                    tracing::debug!(order = %order.url, "order not ready yet; polling");
                    let fresh = self.account.order(&order.url).await?;
                    let ready = self
                        .wait_order(fresh, &[OrderStatus::Ready], "the order to become ready")
                        .await?;
                    self.account.finalize(&ready, &csr.der).await?
                }
                other => other?,
            };
            // `processing` right after finalize is normal (RFC 8555 §7.4): wait before the
            // first re-read instead of asking at once.
            if order.state.status == OrderStatus::Processing {
                let delay = order.retry_after.as_ref().map_or(self.poll.initial, |ra| {
                    ra.delay_from(OffsetDateTime::now_utc())
                        .min(self.poll.max_retry_after)
                });
                tokio::time::sleep(delay).await;
            }
            order = self
                .wait_order(order, &[OrderStatus::Valid], "certificate issuance")
                .await?;
        }
        let certificate_url = order.state.certificate.clone().ok_or_else(|| {
            IssueError::from(certfleet_acme::AcmeError::InvalidResponse {
                url: order.url.clone(),
                detail: "order is valid but has no certificate URL".to_owned(),
            })
        })?;
        let chain = self
            .download(&certificate_url, req.preferred_chain.as_deref())
            .await?;
        let info = CertificateInfo::from_der(chain.leaf_der())?;
        check_matches(req, &info)?;
        let cert_id = CertId::from_certificate_der(chain.leaf_der()).ok();
        tracing::info!(serial = %info.serial_hex, not_after = %info.not_after.date(), "certificate issued");
        Ok(IssuedCertificate {
            names: req.names.clone(),
            order_url: order.url,
            certificate_url,
            chain,
            info,
            cert_id,
        })
    }

    /// Answers one challenge per pending authorization and waits for all of them. Records
    /// handed to solvers are cleaned up whatever the outcome.
    /// Returns the order as last read once the CA decided every authorization (`None`
    /// when all were valid already).
    async fn authorize(&self, order: &Order) -> Result<Option<Order>, IssueError> {
        let mut pending = Vec::new();
        let mut presented = Presented::default();
        for authz_url in &order.state.authorizations {
            let authz = self.account.authorization(authz_url).await?;
            let state = &authz.state;
            let name = state.order_identifier().value;
            match state.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(IssueError::AuthorizationUnusable {
                        name,
                        status: format!("{other:?}").to_lowercase(),
                    });
                }
            }
            let kind = self.solvers.kind_for(&name)?;
            let (challenge, token) = pick_challenge(state, &name, kind)?;
            match kind {
                ChallengeKind::Http01 => presented.http01.push(Http01Response {
                    key_authorization: self.account.key_authorization(&token),
                    token,
                }),
                ChallengeKind::Dns01 => presented.dns01.push(TxtRecord::for_domain(
                    &state.identifier.value,
                    self.account.dns01_txt_value(&token),
                )),
            }
            pending.push(AnsweredChallenge {
                name,
                authz_url: authz_url.clone(),
                challenge_url: challenge.url.clone(),
                kind,
            });
        }
        if pending.is_empty() {
            return Ok(None);
        }
        let outcome = self
            .present_and_validate(&order.url, &pending, &presented)
            .await;
        let cleanup = self.cleanup(&presented).await;
        let decided = outcome?;
        if let Err(e) = cleanup {
            // The certificate can still be issued; leftover records are only untidy.
            tracing::warn!("challenge cleanup failed: {e}");
        }
        Ok(Some(decided))
    }

    async fn present_and_validate(
        &self,
        order_url: &str,
        pending: &[AnsweredChallenge],
        presented: &Presented,
    ) -> Result<Order, IssueError> {
        if let (Some(solver), false) = (&self.solvers.http01, presented.http01.is_empty()) {
            tracing::info!(count = presented.http01.len(), via = %solver.describe(), "presenting http-01 responses");
            solver.present(&presented.http01).await?;
        }
        if let (Some(solver), false) = (&self.solvers.dns01, presented.dns01.is_empty()) {
            tracing::info!(
                count = presented.dns01.len(),
                via = solver.name(),
                "presenting dns-01 records"
            );
            solver.present(&presented.dns01).await?;
            if let Some(check) = &self.solvers.dns01_propagation {
                check.wait_until_visible(&presented.dns01).await?;
            }
        }
        // One order's challenges go one after another: every response carries the next
        // nonce, so no newNonce round trip is needed. Parallelism comes from running many
        // orders at once, not from splitting one.
        for p in pending {
            self.account.respond_to_challenge(&p.challenge_url).await?;
        }
        self.wait_authorized(order_url, pending).await
    }

    async fn cleanup(&self, presented: &Presented) -> Result<(), IssueError> {
        let mut first_error = None;
        if let (Some(solver), false) = (&self.solvers.http01, presented.http01.is_empty())
            && let Err(e) = solver.cleanup(&presented.http01).await
        {
            first_error.get_or_insert(IssueError::from(e));
        }
        if let (Some(solver), false) = (&self.solvers.dns01, presented.dns01.is_empty())
            && let Err(e) = solver.cleanup(&presented.dns01).await
        {
            first_error.get_or_insert(IssueError::from(e));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Polls the order until the CA has decided every authorization (see
    /// [`crate::validation`]); the first poll waits as the policy says.
    async fn wait_authorized(
        &self,
        order_url: &str,
        answered: &[AnsweredChallenge],
    ) -> Result<Order, IssueError> {
        let started = OffsetDateTime::now_utc();
        let mut attempt = 1;
        let mut retry_after: Option<RetryAfter> = None;
        loop {
            self.pause(
                attempt,
                retry_after.as_ref(),
                started,
                "the authorizations",
                order_url,
            )
            .await?;
            attempt += 1;
            let order = self.account.order(order_url).await?;
            match order.state.status {
                OrderStatus::Pending => retry_after = order.retry_after,
                OrderStatus::Invalid => {
                    return Err(explain_invalid_order(
                        &self.account,
                        order_url,
                        order.state.error.as_ref(),
                        answered,
                    )
                    .await);
                }
                _ => {
                    tracing::info!(order = %order_url, "authorizations valid");
                    return Ok(order);
                }
            }
        }
    }

    /// Polls until the order reaches one of `targets`; `invalid` ends the wait with the
    /// order's problem.
    async fn wait_order(
        &self,
        mut order: Order,
        targets: &[OrderStatus],
        what: &'static str,
    ) -> Result<Order, IssueError> {
        let started = OffsetDateTime::now_utc();
        let mut attempt = 0u32;
        loop {
            if targets.contains(&order.state.status) {
                return Ok(order);
            }
            if order.state.status == OrderStatus::Invalid {
                return Err(IssueError::OrderInvalid {
                    url: order.url.clone(),
                    problem: order.state.error.clone().map(Box::new),
                });
            }
            // The first re-read is immediate: after the authorizations turned valid the
            // order we hold is simply stale. Later ones wait as the policy says.
            self.pause(
                attempt,
                order.retry_after.as_ref(),
                started,
                what,
                &order.url,
            )
            .await?;
            attempt += 1;
            order = self.account.order(&order.url).await?;
        }
    }

    /// Sleeps before poll number `attempt` (none before the first), as the policy says.
    async fn pause(
        &self,
        attempt: u32,
        retry_after: Option<&RetryAfter>,
        started: OffsetDateTime,
        what: &'static str,
        url: &str,
    ) -> Result<(), IssueError> {
        if attempt == 0 {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        let delay = self
            .poll
            .next_delay(attempt, retry_after, now, started)
            .map_err(|_| IssueError::PollTimeout {
                what,
                url: url.to_owned(),
                attempts: attempt,
                waited_secs: u64::try_from((now - started).whole_seconds()).unwrap_or(0),
            })?;
        if delay > Duration::ZERO {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    async fn download(
        &self,
        url: &str,
        preferred_chain: Option<&str>,
    ) -> Result<CertificateChain, IssueError> {
        let download = self.account.download_certificate(url).await?;
        let Some(preferred) = preferred_chain else {
            return Ok(download.chain);
        };
        if download
            .chain
            .top_issuer_common_name()
            .as_deref()
            .is_some_and(|cn| cn.eq_ignore_ascii_case(preferred))
        {
            return Ok(download.chain);
        }
        let alternates = self.account.download_alternate_chains(&download).await?;
        let chosen = choose_chain(download.chain, alternates, preferred);
        if !chosen
            .issuer_common_names()
            .iter()
            .any(|cn| cn.eq_ignore_ascii_case(preferred))
        {
            tracing::warn!(
                preferred,
                "no chain leads to the preferred issuer; using the default chain"
            );
        }
        Ok(chosen)
    }
}

/// The challenge of `kind` that an authorization for `name` offers, with its token, or an
/// error naming what the CA offered instead.
pub fn pick_challenge<'a>(
    state: &'a AuthorizationState,
    name: &str,
    kind: ChallengeKind,
) -> Result<(&'a Challenge, String), IssueError> {
    let wanted = match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
    };
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
    let token = challenge.token.clone().ok_or_else(|| {
        IssueError::from(certfleet_acme::AcmeError::InvalidResponse {
            url: challenge.url.clone(),
            detail: "challenge has no token".to_owned(),
        })
    })?;
    Ok((challenge, token))
}

/// The CA must certify exactly our key and our names; anything else is a CA bug we refuse to
/// install.
pub fn check_matches(req: &CertificateRequest, info: &CertificateInfo) -> Result<(), IssueError> {
    if info.public_key_der != req.cert_key.public_key_der() {
        return Err(IssueError::CertificateMismatch {
            detail: "the certificate's public key is not the key the CSR was signed with"
                .to_owned(),
        });
    }
    let want: BTreeSet<String> = req.names.iter().map(|n| n.to_ascii_lowercase()).collect();
    let got: BTreeSet<String> = info.dns_names.iter().cloned().collect();
    if want != got {
        return Err(IssueError::CertificateMismatch {
            detail: format!(
                "names {:?} were requested but the certificate names {:?}",
                want, got
            ),
        });
    }
    Ok(())
}
