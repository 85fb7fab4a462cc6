use anyhow::{Context as _, Result, bail};
use certfleet_acme::{AcmeClient, CertId};
use certfleet_issue::bundle::{self, BundleDir, KeyOutput};
use certfleet_issue::output::CertificateMeta;
use certfleet_issue::renewal::{RenewalDecision, decide};
use certfleet_issue::{CertificateRequest, ExistingKey};
use time::OffsetDateTime;

use super::issue::{issue_with, prepare_solvers, report, solver_plan};
use crate::cli::RenewArgs;
use crate::context::Context;
use crate::state::InventoryEntry;

pub async fn run(ctx: &Context, args: RenewArgs) -> Result<()> {
    let entries: Vec<InventoryEntry> = match &args.name {
        Some(name) => {
            let name = crate::names::normalize(std::slice::from_ref(name))?.remove(0);
            let entry = ctx.state.load_inventory(&name)?.with_context(|| {
                format!(
                    "--name {name:?}: no certificate with that first name in the inventory of {}",
                    ctx.state.root().display()
                )
            })?;
            vec![entry]
        }
        None => ctx.state.inventory()?,
    };
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| e.directory == ctx.directory())
        .collect();
    if entries.is_empty() {
        println!(
            "nothing to renew: no certificates from {} in the inventory",
            ctx.directory()
        );
        return Ok(());
    }
    let (client, account) = ctx.account().await?;
    let (mut renewed, mut skipped, mut failed) = (0usize, 0usize, Vec::new());
    for entry in &entries {
        let first = &entry.names[0];
        match renew_one(ctx, &client, &account, entry, &args).await {
            Ok(true) => renewed += 1,
            Ok(false) => skipped += 1,
            Err(e) => {
                tracing::error!("{first}: renewal failed: {e:#}");
                failed.push(first.clone());
            }
        }
    }
    println!(
        "renewed {renewed}, not due {skipped}, failed {}",
        failed.len()
    );
    if !failed.is_empty() {
        bail!("renewal failed for {}", failed.join(", "));
    }
    Ok(())
}

/// Renews one certificate if due (or forced). Returns whether it was renewed.
async fn renew_one(
    ctx: &Context,
    client: &AcmeClient,
    account: &certfleet_acme::Account,
    entry: &InventoryEntry,
    args: &RenewArgs,
) -> Result<bool> {
    let first = &entry.names[0];
    let meta = CertificateMeta::read(&entry.out_dir)
        .with_context(|| format!("{first}: reading the current certificate's meta.json"))?;
    let ari = client.directory().renewal_info.is_some();
    let cert_id: Option<CertId> = match meta.ari_cert_id.as_deref().map(str::parse::<CertId>) {
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            tracing::warn!(
                "{first}: meta.json has an unusable ari_cert_id ({e}); using the certificate's lifetime"
            );
            None
        }
        None => None,
    };
    let window = match (&cert_id, ari) {
        (Some(id), true) => match client.renewal_info(id).await {
            Ok(info) => Some(info.window),
            Err(e) => {
                tracing::warn!(
                    "{first}: renewal info unavailable ({e}); using the certificate's lifetime"
                );
                None
            }
        },
        _ => None,
    };
    let decision = decide(
        OffsetDateTime::now_utc(),
        meta.not_before,
        meta.not_after,
        window.as_ref(),
        &meta.serial,
    );
    match (&decision, args.force) {
        (RenewalDecision::NotYet { renew_at, reason }, false) => {
            tracing::info!("{first}: not due ({reason}); renews from {renew_at}");
            return Ok(false);
        }
        (RenewalDecision::NotYet { .. }, true) => tracing::info!("{first}: renewing (forced)"),
        (RenewalDecision::Due(why), _) => tracing::info!("{first}: renewing: {why}"),
    }
    let cert_key = ctx.load_key(&entry.key_ref).await?;
    let plan = solver_plan(ctx, &args.solver, &entry.challenge, Some(entry))?;
    let prepared = prepare_solvers(ctx, &plan).await?;
    let bundle = BundleDir::new(&entry.out_dir)?;
    bundle::sweep(bundle.parent())?;
    let request = CertificateRequest {
        names: entry.names.clone(),
        profile: entry.profile.clone(),
        // Only CAs that offer ARI know what `replaces` means (RFC 9773 §5); one that
        // refuses it is asked again without it (the order steps do that).
        replaces: if ari { meta.ari_cert_id.clone() } else { None },
        preferred_chain: entry.preferred_chain.clone(),
    };
    let issued = issue_with(
        ctx,
        account,
        &prepared,
        &request,
        &mut ExistingKey(cert_key),
    )
    .await?;
    let current_key = bundle.current_key();
    let key_output = if entry.key_in_out_dir {
        KeyOutput::LinkFrom(&current_key)
    } else {
        KeyOutput::Reference(&entry.key_ref)
    };
    let new_meta = CertificateMeta::new(
        &issued,
        entry.key_ref.clone(),
        account.url(),
        ctx.directory(),
    );
    bundle.stage()?.commit(&issued, key_output, &new_meta)?;
    report(&issued, &entry.out_dir, client);
    Ok(true)
}
