//! The steps of one ACME order, shared by every driver (`issue`, `renew`, the batch job
//! driver): new order → authorizations → present / answer / poll → cleanup → key → CSR →
//! finalize → download and chain choice → check.
//!
//! Drivers differ only in what they do *between* steps, which they say through a
//! [`Checkpoint`]: `issue` and `renew` do nothing but hand over the key when it is needed;
//! the batch writes its fenced store status before each network step that depends on it.
//! So the poll policy, the errors, the chain choice and the checks exist once.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use certfleet_acme::{
    Account, AcmeError, Authorization, AuthorizationStatus, CertId, CertificateChain,
    ChallengeStatus, Identifier, NewOrder, Order, OrderStatus, ProblemKind, RetryAfter,
    choose_chain,
};
use certfleet_dns01::TxtRecord;
use certfleet_http01::Http01Response;
use certfleet_keys::SigningKey;
use certfleet_keys::csr::build_csr;
use time::OffsetDateTime;

use crate::poll::Poller;
use crate::validation::{AnsweredChallenge, explain_invalid_order};
use crate::{CertificateInfo, ChallengeKind, ChallengeSolvers, IssueError, IssuedCertificate};

/// Every this many order polls that still say `pending`, the answered authorizations are
/// read too.
const STALLED_ORDER_CHECK_EVERY: u32 = 4;

/// Pages of the account's orders list read when looking for an interrupted run's order
/// (Pebble pages by 3: 6,000 orders).
pub const LOST_ORDER_MAX_PAGES: usize = 2_000;

/// What [`OrderSteps::find_open_order`] found.
#[derive(Debug)]
pub enum OpenOrderSearch {
    /// An open order for the names that nobody stores: continue it.
    Found(Box<Order>),
    /// The whole list was read and holds no such order: none was created.
    Absent { listed: usize, fetched: usize },
    /// The list or the fetch bound ran out first: an order may exist unseen.
    Incomplete { listed: usize, fetched: usize },
    /// The CA keeps no orders list (Boulder): an order may exist unseen.
    NoList,
}

/// What a driver does between steps. `E` is the driver's error type, so a batch store
/// error travels through the steps unchanged.
#[async_trait]
pub trait Checkpoint<E>: Send {
    /// The challenges are presented and about to be answered.
    async fn answering(&mut self) -> Result<(), E>;

    /// The certificate key, asked for only once the order is ready (or further): a new key
    /// is made right before finalize, never for an order that cannot be finalized.
    async fn finalize_key(&mut self) -> Result<Arc<dyn SigningKey>, E>;
}

/// The order's challenges still to be answered, and what the solvers are given for them.
#[derive(Debug, Default)]
pub struct Challenges {
    pub answered: Vec<AnsweredChallenge>,
    /// Per entry of `answered`: the challenge still needs our response (not already
    /// `processing` from an earlier attempt).
    respond: Vec<bool>,
    http01: Vec<Http01Response>,
    dns01: Vec<TxtRecord>,
}

impl Challenges {
    pub fn is_empty(&self) -> bool {
        self.answered.is_empty()
    }
}

/// The order once the CA decided its authorizations.
#[derive(Debug)]
pub struct Authorized {
    pub order: Order,
    /// Every authorization was valid already: the CA derives `ready` from them (RFC 8555
    /// §7.1.6), so finalize may go ahead without re-reading the order.
    pub assumed_ready: bool,
}

/// What an order's status asks of any driver next: the one sequencing rule of `issue`,
/// `renew` and the batch (which resumes from a stored status at any of these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// `pending` with authorizations not known to be valid: present and answer challenges
    /// ([`OrderSteps::authorize`]).
    Authorize,
    /// `ready`, `processing`, `valid`, or `pending` with every authorization valid (the CA
    /// derives `ready`, RFC 8555 §7.1.6): [`OrderSteps::finalize`], which finalizes only a
    /// `ready` order and otherwise waits and downloads.
    Finalize,
    /// `invalid`: this order is over; a certificate needs a new order.
    Reorder,
}

/// The step an order in `status` needs next; `assumed_ready` when every authorization was
/// made valid since the order was read ([`Authorized::assumed_ready`]).
pub fn next_step(status: OrderStatus, assumed_ready: bool) -> NextStep {
    match status {
        OrderStatus::Invalid => NextStep::Reorder,
        OrderStatus::Pending if !assumed_ready => NextStep::Authorize,
        OrderStatus::Pending
        | OrderStatus::Ready
        | OrderStatus::Processing
        | OrderStatus::Valid => NextStep::Finalize,
    }
}

/// The step functions over one account, its solvers and the poll policy. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OrderSteps {
    pub account: Account,
    pub solvers: ChallengeSolvers,
    pub poller: Poller,
}

impl OrderSteps {
    pub fn new(account: Account, solvers: ChallengeSolvers, poller: Poller) -> OrderSteps {
        OrderSteps {
            account,
            solvers,
            poller,
        }
    }

    /// Sends newOrder. A CA that refuses `replaces` (RFC 9773 §5: already replaced, or a
    /// CertID it does not know) is asked again without it; the second value says whether
    /// `replaces` went through.
    pub async fn new_order(&self, req: &NewOrder) -> Result<(Order, bool), IssueError> {
        match self.account.new_order(req).await {
            Ok(o) => Ok((o, req.replaces.is_some())),
            Err(e) if req.replaces.is_some() && rejected_replaces(&e) => {
                tracing::info!("the CA refused `replaces` ({e}); ordering without it");
                let plain = NewOrder {
                    replaces: None,
                    ..req.clone()
                };
                Ok((self.account.new_order(&plain).await?, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Looks in the account's orders list (RFC 8555 §7.1.2.1) for an order for exactly
    /// `names` that is still `pending` or `ready` and that `known` does not claim (orders
    /// the caller already stores for other jobs). Reads every page (Pebble serves 3
    /// orders a page, oldest first) up to [`LOST_ORDER_MAX_PAGES`], then fetches the
    /// unclaimed orders newest first, at most `max_fetch` of them. A batch job interrupted
    /// between newOrder and storing the order URL continues that order instead of
    /// ordering a second time.
    pub async fn find_open_order(
        &self,
        names: &[String],
        known: &(dyn Fn(&str) -> bool + Sync),
        max_fetch: usize,
    ) -> Result<OpenOrderSearch, IssueError> {
        let want: Vec<Identifier> = names.iter().map(Identifier::dns).collect();
        let Some(list) = self.account.order_list(LOST_ORDER_MAX_PAGES).await? else {
            return Ok(OpenOrderSearch::NoList);
        };
        let listed = list.urls.len();
        let mut fetched = 0;
        for url in list.urls.iter().rev().filter(|u| !known(u)) {
            if fetched == max_fetch {
                return Ok(OpenOrderSearch::Incomplete { listed, fetched });
            }
            fetched += 1;
            let order = self.account.order(url).await?;
            if !matches!(
                order.state.status,
                OrderStatus::Pending | OrderStatus::Ready
            ) {
                continue;
            }
            if order.names_exactly(&want) {
                return Ok(OpenOrderSearch::Found(Box::new(order)));
            }
        }
        if list.complete {
            Ok(OpenOrderSearch::Absent { listed, fetched })
        } else {
            Ok(OpenOrderSearch::Incomplete { listed, fetched })
        }
    }

    /// Reads the order's authorizations (right after newOrder; see the batch's order gate).
    pub async fn read_authorizations(
        &self,
        order: &Order,
    ) -> Result<Vec<Authorization>, IssueError> {
        // In parallel: an order for many names waits one round trip, not one per name.
        let reads = order
            .state
            .authorizations
            .iter()
            .map(|url| self.account.authorization(url));
        Ok(futures::future::try_join_all(reads).await?)
    }

    /// One challenge per pending authorization (`prefetched` ones are not read again).
    pub async fn challenges(
        &self,
        order: &Order,
        mut prefetched: Vec<Authorization>,
    ) -> Result<Challenges, IssueError> {
        let mut out = Challenges::default();
        for authz_url in &order.state.authorizations {
            let authz = match prefetched.iter().position(|a| &a.url == authz_url) {
                Some(i) => prefetched.swap_remove(i),
                None => self.account.authorization(authz_url).await?,
            };
            order.check_authorization(&authz)?;
            let state = &authz.state;
            let name = state.order_identifier().value;
            match state.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(IssueError::AuthorizationUnusable {
                        name,
                        status: other.as_str().to_owned(),
                    });
                }
            }
            let kind = self.solvers.kind_for(&name)?;
            let (challenge, token) = crate::pick_challenge(state, &name, kind)?;
            match kind {
                ChallengeKind::Http01 => out.http01.push(Http01Response {
                    key_authorization: self.account.key_authorization(&token),
                    token,
                }),
                ChallengeKind::Dns01 => out.dns01.push(TxtRecord::for_domain(
                    &state.identifier.value,
                    self.account.dns01_txt_value(&token),
                )),
                // Published once beforehand: no DNS write per order, just `{}`.
                ChallengeKind::DnsPersist01 => {}
            }
            out.respond
                .push(challenge.status == ChallengeStatus::Pending);
            out.answered.push(AnsweredChallenge {
                name,
                authz_url: authz_url.clone(),
                challenge_url: challenge.url.clone(),
                kind,
            });
        }
        Ok(out)
    }

    /// Present → (checkpoint) → answer → poll the order until the CA decided; the records
    /// are cleaned up on every path (a failed cleanup is logged: untidy, not fatal).
    pub async fn authorize<E: From<IssueError>>(
        &self,
        order: Order,
        prefetched: Vec<Authorization>,
        checkpoint: &mut dyn Checkpoint<E>,
    ) -> Result<Authorized, E> {
        let challenges = self.challenges(&order, prefetched).await?;
        if challenges.is_empty() {
            return Ok(Authorized {
                order,
                assumed_ready: true,
            });
        }
        let outcome = self.validate(&order.url, &challenges, checkpoint).await;
        if let Err(e) = self.cleanup(&challenges).await {
            tracing::warn!(order = %order.url, "challenge cleanup failed: {e}");
        }
        Ok(Authorized {
            order: outcome?,
            assumed_ready: false,
        })
    }

    async fn validate<E: From<IssueError>>(
        &self,
        order_url: &str,
        c: &Challenges,
        checkpoint: &mut dyn Checkpoint<E>,
    ) -> Result<Order, E> {
        if !c.http01.is_empty() {
            let solver = self.solvers.http01.as_ref().ok_or_else(|| {
                IssueError::InvalidRequest("no http-01 solver is configured".to_owned())
            })?;
            tracing::debug!(count = c.http01.len(), via = %solver.describe(), "presenting http-01 responses");
            solver.present(&c.http01).await.map_err(IssueError::from)?;
        }
        if !c.dns01.is_empty() {
            let solver = self.solvers.dns01.as_ref().ok_or_else(|| {
                IssueError::InvalidRequest("no dns-01 solver is configured".to_owned())
            })?;
            tracing::debug!(
                count = c.dns01.len(),
                via = solver.name(),
                "presenting dns-01 records"
            );
            solver.present(&c.dns01).await.map_err(IssueError::from)?;
            if let Some(check) = &self.solvers.dns01_propagation {
                check
                    .wait_until_visible(&c.dns01)
                    .await
                    .map_err(IssueError::from)?;
            }
        }
        checkpoint.answering().await?;
        // One order's challenges go one after another: every response carries the next
        // nonce, so no newNonce round trip is needed. Parallelism comes from running many
        // orders at once, not from splitting one.
        for (a, respond) in c.answered.iter().zip(&c.respond) {
            if *respond {
                self.account
                    .respond_to_challenge(&a.challenge_url)
                    .await
                    .map_err(IssueError::from)?;
            }
        }
        Ok(self.wait_authorized(order_url, &c.answered).await?)
    }

    async fn cleanup(&self, c: &Challenges) -> Result<(), IssueError> {
        let mut first_error = None;
        if let (Some(solver), false) = (&self.solvers.http01, c.http01.is_empty())
            && let Err(e) = solver.cleanup(&c.http01).await
        {
            first_error.get_or_insert(IssueError::from(e));
        }
        if let (Some(solver), false) = (&self.solvers.dns01, c.dns01.is_empty())
            && let Err(e) = solver.cleanup(&c.dns01).await
        {
            first_error.get_or_insert(IssueError::from(e));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Polls the **order** until the CA has decided every authorization (see
    /// [`crate::validation`]); the first poll waits as the policy says.
    pub async fn wait_authorized(
        &self,
        order_url: &str,
        answered: &[AnsweredChallenge],
    ) -> Result<Order, IssueError> {
        let started = OffsetDateTime::now_utc();
        let mut attempt = 1;
        let mut retry_after: Option<RetryAfter> = None;
        loop {
            self.poller
                .pause(
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
                OrderStatus::Pending => {
                    retry_after = order.retry_after;
                    // A CA that leaves the order pending after an authorization failed
                    // (acme2certifier) would otherwise be polled until the timeout.
                    if attempt % STALLED_ORDER_CHECK_EVERY == 0
                        && let Some(e) = crate::validation::failed_authorization(
                            &self.account,
                            order.state.error.as_ref(),
                            answered,
                        )
                        .await?
                    {
                        return Err(e);
                    }
                }
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
                    tracing::debug!(order = %order_url, "authorizations valid");
                    return Ok(order);
                }
            }
        }
    }

    /// Polls until the order reaches one of `targets`; `invalid` ends the wait with the
    /// order's problem. The first re-read is immediate (the order we hold is merely
    /// stale), except after `processing`, which is normal right after finalize.
    pub async fn wait_order(
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
            let first = u32::from(order.state.status == OrderStatus::Processing);
            self.poller
                .pause(
                    attempt.max(first),
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

    /// Key → CSR → finalize (a `ready` order only) → wait for `valid` → download and choose
    /// the chain → check it certifies exactly our key and `names` (as requested, first
    /// name first; the CA may list the order's identifiers in another order).
    pub async fn finalize<E: From<IssueError>>(
        &self,
        authorized: Authorized,
        names: &[String],
        preferred_chain: Option<&str>,
        checkpoint: &mut dyn Checkpoint<E>,
    ) -> Result<IssuedCertificate, E> {
        let Authorized {
            mut order,
            assumed_ready,
        } = authorized;
        if assumed_ready && order.state.status == OrderStatus::Pending {
            order.state.status = OrderStatus::Ready;
        }
        let key = checkpoint.finalize_key().await?;
        if order.state.status == OrderStatus::Ready {
            let csr = build_csr(key.as_ref(), names)
                .await
                .map_err(IssueError::from)?;
            tracing::debug!(order = %order.url, "finalizing");
            order = match self.account.finalize(&order, &csr.der).await {
                // A CA that lags behind its authorizations: poll, then finalize.
                Err(e)
                    if assumed_ready && e.problem_kind() == Some(&ProblemKind::OrderNotReady) =>
                {
                    let fresh = self
                        .account
                        .order(&order.url)
                        .await
                        .map_err(IssueError::from)?;
                    let ready = self
                        .wait_order(fresh, &[OrderStatus::Ready], "the order to become ready")
                        .await?;
                    self.account
                        .finalize(&ready, &csr.der)
                        .await
                        .map_err(IssueError::from)?
                }
                other => other.map_err(IssueError::from)?,
            };
        }
        let order = self
            .wait_order(order, &[OrderStatus::Valid], "certificate issuance")
            .await?;
        Ok(self.download(order, names, key, preferred_chain).await?)
    }

    async fn download(
        &self,
        order: Order,
        names: &[String],
        key: Arc<dyn SigningKey>,
        preferred_chain: Option<&str>,
    ) -> Result<IssuedCertificate, IssueError> {
        let certificate_url = order.state.certificate.clone().ok_or_else(|| {
            IssueError::from(AcmeError::InvalidResponse {
                url: order.url.clone(),
                detail: "order is valid but has no certificate URL".to_owned(),
            })
        })?;
        let chain = self.choose_chain(&certificate_url, preferred_chain).await?;
        let info = CertificateInfo::from_der(chain.leaf_der())?;
        check_matches(key.as_ref(), names, &info)?;
        let cert_id = CertId::from_certificate_der(chain.leaf_der()).ok();
        Ok(IssuedCertificate {
            names: names.to_vec(),
            order_url: order.url,
            certificate_url,
            chain,
            info,
            cert_id,
            key,
        })
    }

    /// The default chain, or the alternate leading to `preferred` (issuer CN) if any.
    async fn choose_chain(
        &self,
        url: &str,
        preferred: Option<&str>,
    ) -> Result<CertificateChain, IssueError> {
        let download = self.account.download_certificate(url).await?;
        let Some(preferred) = preferred else {
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

/// The newOrder request for these names.
pub fn new_order_request(
    names: &[String],
    profile: Option<String>,
    replaces: Option<String>,
) -> NewOrder {
    NewOrder {
        identifiers: names.iter().map(Identifier::dns).collect(),
        not_before: None,
        not_after: None,
        profile,
        replaces,
    }
}

/// The CA must certify exactly our key and our names; anything else is a CA bug we refuse to
/// install.
pub fn check_matches(
    key: &dyn SigningKey,
    names: &[String],
    info: &CertificateInfo,
) -> Result<(), IssueError> {
    if info.public_key_der != key.public_key_der() {
        return Err(IssueError::CertificateMismatch {
            detail: "the certificate's public key is not the key the CSR was signed with"
                .to_owned(),
        });
    }
    let want: BTreeSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    let got: BTreeSet<String> = info.dns_names.iter().cloned().collect();
    if want != got {
        return Err(IssueError::CertificateMismatch {
            detail: format!("names {want:?} were requested but the certificate names {got:?}"),
        });
    }
    Ok(())
}

/// The CA refused the order because of its `replaces` field.
fn rejected_replaces(e: &AcmeError) -> bool {
    e.problem().is_some_and(|p| {
        matches!(
            p.kind,
            ProblemKind::Malformed | ProblemKind::AlreadyReplaced
        ) || p.detail.as_deref().is_some_and(|d| d.contains("replaces"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_status_has_one_next_step() {
        use NextStep::*;
        use OrderStatus::*;
        let cases = [
            (Pending, false, Authorize),
            (Pending, true, Finalize),
            (Ready, false, Finalize),
            (Processing, false, Finalize),
            (Valid, false, Finalize),
            (Invalid, false, Reorder),
            (Invalid, true, Reorder),
        ];
        for (status, assumed_ready, want) in cases {
            assert_eq!(
                next_step(status, assumed_ready),
                want,
                "order {} (assumed ready: {assumed_ready})",
                status.as_str()
            );
        }
    }
}
