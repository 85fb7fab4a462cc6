use anyhow::{Context as _, Result};
use certfleet_acme::RevocationReason;
use certfleet_issue::CertificateInfo;
use clap::ValueEnum as _;

use crate::cli::{ReasonArg, RevokeArgs};
use crate::context::Context;

pub async fn run(ctx: &Context, args: RevokeArgs) -> Result<()> {
    let pem = std::fs::read_to_string(&args.cert)
        .with_context(|| format!("reading --cert {}", args.cert.display()))?;
    let der = certfleet_issue::first_pem_certificate(&pem)
        .with_context(|| format!("--cert {}", args.cert.display()))?;
    let info = CertificateInfo::from_der(&der)?;
    let reason = args.reason.map(|r| match r {
        ReasonArg::Unspecified => RevocationReason::Unspecified,
        ReasonArg::KeyCompromise => RevocationReason::KeyCompromise,
        ReasonArg::Superseded => RevocationReason::Superseded,
        ReasonArg::CessationOfOperation => RevocationReason::CessationOfOperation,
        ReasonArg::AffiliationChanged => RevocationReason::AffiliationChanged,
        ReasonArg::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
    });
    match &args.cert_key {
        Some(key) => {
            let key = ctx.load_key_str(key).await?;
            if key.public_key_der() != info.public_key_der.as_slice() {
                anyhow::bail!(
                    "--cert-key {} is not the key of {} (serial {})",
                    key.key_ref(),
                    args.cert.display(),
                    info.serial_hex
                );
            }
            let client = ctx.client().await?;
            let revoked = client
                .revoke_with_certificate_key(key.as_ref(), &der, reason)
                .await;
            if let Err(e) = revoked {
                // RFC 8555 §7.6 lets the certificate key revoke; some CAs (acme2certifier
                // 0.46.3) look for an account of that key instead.
                if e.problem_kind() == Some(&certfleet_acme::ProblemKind::AccountDoesNotExist) {
                    return Err(anyhow::Error::new(e).context(format!(
                        "this CA refuses revocation signed by the certificate key (RFC 8555 §7.6 allows it);                          revoke with the account that issued {}: certfleet revoke --cert {} (without --cert-key)",
                        info.serial_hex,
                        args.cert.display()
                    )));
                }
                return Err(e.into());
            }
        }
        None => {
            let (_, account) = ctx.account().await?;
            account.revoke(&der, reason).await?;
        }
    }
    tracing::info!(serial = %info.serial_hex, names = %info.dns_names.join(","), "certificate revoked");
    record_revocation(ctx, &info.serial_hex, args.reason)?;
    println!("revoked {}", info.serial_hex);
    Ok(())
}

/// Marks the inventory entry whose current certificate has `serial` as revoked, so the next
/// `renew` replaces it (with a new key after keyCompromise).
fn record_revocation(ctx: &Context, serial: &str, reason: Option<ReasonArg>) -> Result<()> {
    let norm = |s: &str| s.trim_start_matches('0').to_ascii_lowercase();
    for mut entry in ctx.state.inventory()? {
        let Ok(meta) = certfleet_issue::output::CertificateMeta::read(&entry.out_dir) else {
            continue;
        };
        if norm(&meta.serial) != norm(serial) {
            continue;
        }
        let reason = reason
            .and_then(|r| r.to_possible_value())
            .map_or("unspecified".to_owned(), |v| v.get_name().to_owned());
        tracing::info!(
            "{}: recorded as revoked ({reason}); the next `certfleet renew` replaces it",
            entry.names[0]
        );
        entry.revoked = Some(crate::state::Revocation {
            serial: meta.serial,
            reason,
            at: time::OffsetDateTime::now_utc(),
        });
        ctx.state.save_inventory(&entry)?;
    }
    Ok(())
}
