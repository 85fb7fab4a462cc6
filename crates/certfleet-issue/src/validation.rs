//! After the challenges are answered: what to poll, and how a failure is explained.
//!
//! Both order drivers (this crate's [`crate::Issuer`] and the batch job driver) poll the
//! **order** rather than each authorization (RFC 8555 §7.1.6: the order turns `ready` once
//! every authorization is valid and `invalid` once one fails). That is one poll per order
//! whatever its number of names, and it keeps clear of Pebble 2.4's lock inversion, which
//! authorization polls during other orders' new-order scans can trigger. Only an `invalid`
//! order has its authorizations read, once, to say which name failed and why.

use certfleet_acme::{Account, AuthorizationStatus, Problem, ProblemKind};

use crate::{ChallengeKind, IssueError};

/// A challenge this client answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnsweredChallenge {
    /// The name as ordered (`*.example.com` for a wildcard).
    pub name: String,
    pub authz_url: String,
    pub challenge_url: String,
    pub kind: ChallengeKind,
}

/// Why an order went invalid: the first failed authorization with its challenge's error, or
/// the order's own problem when no authorization failed.
pub async fn explain_invalid_order(
    account: &Account,
    order_url: &str,
    order_problem: Option<&Problem>,
    answered: &[AnsweredChallenge],
) -> IssueError {
    match failed_authorization(account, order_problem, answered).await {
        Ok(Some(e)) | Err(e) => e,
        Ok(None) => IssueError::OrderInvalid {
            url: order_url.to_owned(),
            problem: order_problem.cloned().map(Box::new),
        },
    }
}

/// The first answered authorization the CA decided against, explained; `None` while every
/// one is valid or pending. Also read while an order stays `pending`: acme2certifier
/// 0.46.3 leaves the order `pending` after an authorization turned `invalid` (RFC 8555
/// §7.1.6 says the order becomes `invalid`).
pub async fn failed_authorization(
    account: &Account,
    order_problem: Option<&Problem>,
    answered: &[AnsweredChallenge],
) -> Result<Option<IssueError>, IssueError> {
    for a in answered {
        let authz = account.authorization(&a.authz_url).await?;
        let status = authz.state.status;
        if matches!(
            status,
            AuthorizationStatus::Valid | AuthorizationStatus::Pending
        ) {
            continue;
        }
        let wanted = crate::driver::challenge_type(a.kind);
        let problem = authz
            .state
            .challenges
            .iter()
            .filter(|c| c.kind == wanted)
            .find_map(|c| c.error.clone())
            .or_else(|| order_problem.cloned())
            .unwrap_or_else(|| {
                Problem::new(
                    ProblemKind::Other("about:blank".to_owned()),
                    format!(
                        "authorization is {} and the CA gave no reason",
                        status.as_str()
                    ),
                )
            });
        if a.kind == ChallengeKind::DnsPersist01
            && let Some(record) = authz
                .state
                .challenges
                .iter()
                .find(|c| c.kind == wanted)
                .and_then(|c| persist_record_for(account, &a.name, c))
        {
            return Ok(Some(IssueError::PersistRecordMissing {
                name: a.name.clone(),
                record,
                problem: Box::new(problem),
            }));
        }
        return Ok(Some(IssueError::ValidationFailed {
            name: a.name.clone(),
            kind: a.kind.as_str(),
            problem: Box::new(problem),
        }));
    }
    Ok(None)
}

/// The record a dns-persist-01 challenge asks for, for this account (`policy=wildcard`
/// for a wildcard name).
fn persist_record_for(
    account: &Account,
    name: &str,
    challenge: &certfleet_acme::Challenge,
) -> Option<String> {
    let policy = certfleet_acme::persist::PersistPolicy {
        issuer_domain_name: challenge.issuer_domain_names.first()?.clone(),
        account_url: account.url().to_owned(),
        wildcard: name.starts_with("*."),
        persist_until: None,
    };
    certfleet_acme::persist::PersistRecord::new(name, &policy)
        .ok()
        .map(|r| r.to_string())
}
