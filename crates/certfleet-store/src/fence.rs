//! The one rule for refusing a fenced write, used by every backend: a write about a job is
//! accepted only while the job's stored fencing token and holder are the writer's lease's.

use crate::StoreError;
use crate::store::{FencingToken, Lease};

/// Checks `lease` against what the store holds for its job (`fence`, `holder`):
/// [`StoreError::Fenced`] when the lease is stale (another claim took the job over, or it
/// was released).
pub fn check(lease: &Lease, fence: i64, holder: Option<String>) -> Result<(), StoreError> {
    if fence == lease.token.0 && holder.as_deref() == Some(lease.node.as_str()) {
        return Ok(());
    }
    Err(StoreError::Fenced {
        job: lease.job,
        presented: lease.token,
        current: FencingToken(fence),
        holder: holder.unwrap_or_else(|| "nobody".to_owned()),
    })
}

/// A conditional write that matched no row although the lease checked current afterwards:
/// the row changed between the two statements (a racing claim), so the write stays refused.
pub fn changed_concurrently(lease: &Lease) -> StoreError {
    StoreError::Fenced {
        job: lease.job,
        presented: lease.token,
        current: lease.token,
        holder: "(changed concurrently)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::store::JobId;

    fn lease() -> Lease {
        Lease {
            job: JobId(7),
            node: "a".into(),
            token: FencingToken(3),
            expires_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn only_the_current_token_and_holder_pass() {
        assert!(check(&lease(), 3, Some("a".into())).is_ok());
        let stale = check(&lease(), 4, Some("b".into())).expect_err("taken over");
        assert!(
            matches!(&stale, StoreError::Fenced { current: FencingToken(4), holder, .. } if holder == "b"),
            "{stale:?}"
        );
        assert!(
            check(&lease(), 3, Some("b".into())).is_err(),
            "other holder"
        );
        let released = check(&lease(), 3, None).expect_err("released");
        assert!(released.to_string().contains("by nobody"), "{released}");
    }
}
