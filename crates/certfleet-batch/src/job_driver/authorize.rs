//! The `authorizing` and `validating` steps: every pending authorization of the order is
//! read (the fresh ones were read under the order gate), its challenge presented through the
//! dns-01 zone batcher or the http-01 solver, `validating` written before the challenges
//! are answered, then the **order** polled until the CA has decided (see
//! [`certfleet_issue::validation`]). Records are cleaned up on every path.

use certfleet_acme::{AuthorizationStatus, ChallengeStatus, Order, OrderStatus};
use certfleet_dns01::TxtRecord;
use certfleet_http01::Http01Response;
use certfleet_issue::validation::{AnsweredChallenge, explain_invalid_order};
use certfleet_issue::{ChallengeKind, IssueError};

use super::{JobDriver, now};
use crate::error::RunError;
use crate::governor::registered_domain;
use crate::store::{JobStatus, JobUpdate};

/// One challenge being answered.
#[derive(Debug)]
struct Pending {
    challenge: AnsweredChallenge,
    /// The challenge still needs our response (not already `processing`).
    respond: bool,
}

impl JobDriver {
    /// Presents, responds to and polls every pending authorization of the order.
    pub(super) async fn authorize(&mut self, status: JobStatus) -> Result<JobStatus, RunError> {
        let Some((order, _)) = self.current_order().await? else {
            return Ok(JobStatus::Ordering);
        };
        match order.state.status {
            OrderStatus::Invalid => {
                return self
                    .reorder(format!("order {} became invalid", order.url))
                    .await;
            }
            OrderStatus::Pending => {}
            _ => {
                self.order = Some((order, false));
                return Ok(JobStatus::Finalizing);
            }
        }
        let sh = self.sh.clone();
        let zone = registered_domain(&self.job.spec.names[0]);
        let _zone_permit = sh.zone_permit(&zone).await;
        let (pending, dns, http) = self.collect(&order).await?;
        if pending.is_empty() {
            // Every authorization is valid and the CA derives `ready` from them.
            self.order = Some((order, true));
        } else {
            let outcome = self.validate(status, &pending, &dns, &http).await;
            // Cleanup on every path; a leftover record is untidy, not fatal.
            if let Some(b) = &sh.dns01
                && let Err(e) = b.cleanup(dns).await
            {
                tracing::warn!(job = %self.job.id, "dns-01 cleanup failed: {e}");
            }
            if let (Some(s), false) = (&sh.http01, http.is_empty())
                && let Err(e) = s.cleanup(&http).await
            {
                tracing::warn!(job = %self.job.id, "http-01 cleanup failed: {e}");
            }
            if let Err(RunError::Issue(IssueError::ValidationFailed { name, .. })) = &outcome {
                sh.governor
                    .authorization_failed(sh.account.url(), name, now())
                    .await?;
            }
            self.order = Some((outcome?, false));
        }
        Ok(JobStatus::Finalizing)
    }

    /// Reads every authorization; lists the challenges to answer and what to present.
    async fn collect(
        &mut self,
        order: &Order,
    ) -> Result<(Vec<Pending>, Vec<TxtRecord>, Vec<Http01Response>), RunError> {
        let mut prefetched = std::mem::take(&mut self.prefetched);
        let sh = &self.sh;
        let wanted = match self.job.spec.challenge.as_deref() {
            Some("http-01") => ChallengeKind::Http01,
            _ => ChallengeKind::Dns01,
        };
        let (mut pending, mut dns, mut http) = (Vec::new(), Vec::new(), Vec::new());
        for authz_url in &order.state.authorizations {
            let authz = match prefetched.iter().position(|a| &a.url == authz_url) {
                Some(i) => prefetched.swap_remove(i),
                None => sh.account.authorization(authz_url).await?,
            };
            let state = &authz.state;
            let name = state.order_identifier().value;
            match state.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(IssueError::AuthorizationUnusable {
                        name,
                        status: other.as_str().to_owned(),
                    }
                    .into());
                }
            }
            let kind = if state.wildcard {
                ChallengeKind::Dns01
            } else {
                wanted
            };
            let (challenge, token) = certfleet_issue::pick_challenge(state, &name, kind)?;
            match kind {
                ChallengeKind::Dns01 => dns.push(TxtRecord::for_domain(
                    &state.identifier.value,
                    sh.account.dns01_txt_value(&token),
                )),
                ChallengeKind::Http01 => http.push(Http01Response {
                    key_authorization: sh.account.key_authorization(&token),
                    token,
                }),
            }
            pending.push(Pending {
                challenge: AnsweredChallenge {
                    name,
                    authz_url: authz_url.clone(),
                    challenge_url: challenge.url.clone(),
                    kind,
                },
                respond: challenge.status == ChallengeStatus::Pending,
            });
        }
        Ok((pending, dns, http))
    }

    async fn validate(
        &mut self,
        status: JobStatus,
        pending: &[Pending],
        dns: &[TxtRecord],
        http: &[Http01Response],
    ) -> Result<Order, RunError> {
        let sh = self.sh.clone();
        if !dns.is_empty() {
            let batcher = sh.dns01.as_ref().ok_or_else(|| RunError::NoSolver {
                job: self.job.id,
                challenge: "dns-01".to_owned(),
            })?;
            batcher.present(dns.to_vec()).await?;
        }
        if !http.is_empty() {
            let solver = sh.http01.as_ref().ok_or_else(|| RunError::NoSolver {
                job: self.job.id,
                challenge: "http-01".to_owned(),
            })?;
            solver.present(http).await.map_err(IssueError::from)?;
        }
        if status != JobStatus::Validating {
            self.write(JobUpdate::to(JobStatus::Validating)).await?;
        }
        for p in pending.iter().filter(|p| p.respond) {
            sh.account
                .respond_to_challenge(&p.challenge.challenge_url)
                .await?;
        }
        let order_url =
            self.job.order_url.clone().ok_or_else(|| {
                RunError::Task("validating a job without an order URL".to_owned())
            })?;
        let order = self.wait_authorized(&order_url, pending).await?;
        Ok(order)
    }

    /// Polls the **order** (not each authorization) until the CA has decided every
    /// authorization: one poll per order whatever its number of names, and it keeps clear
    /// of Pebble 2.4's lock inversion, which authorization polls during other orders'
    /// new-order scans can trigger. An `invalid` order is explained by reading its
    /// authorizations once.
    async fn wait_authorized(
        &self,
        order_url: &str,
        pending: &[Pending],
    ) -> Result<Order, RunError> {
        let started = now();
        let mut attempt = 1;
        let mut retry_after = None;
        loop {
            self.pause(
                attempt,
                retry_after.as_ref(),
                started,
                "the order",
                order_url,
            )
            .await?;
            attempt += 1;
            let order = self.sh.account.order(order_url).await?;
            match order.state.status {
                OrderStatus::Pending => retry_after = order.retry_after,
                OrderStatus::Invalid => {
                    let answered: Vec<AnsweredChallenge> =
                        pending.iter().map(|p| p.challenge.clone()).collect();
                    return Err(explain_invalid_order(
                        &self.sh.account,
                        order_url,
                        order.state.error.as_ref(),
                        &answered,
                    )
                    .await
                    .into());
                }
                _ => return Ok(order),
            }
        }
    }
}
