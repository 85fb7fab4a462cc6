//! `renew`: each certificate in the inventory against the CA directory it came from, with a
//! new key by default, one writer per certificate (and per state directory for `--all`).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use certfleet_acme::AcmeClient;
use certfleet_issue::bundle::{self, BundleDir, KeyOutput};
use certfleet_issue::output::CertificateMeta;
use certfleet_issue::renewal::{RenewalDecision, RenewalWindows, decide};
use certfleet_issue::{CertificateRequest, ExistingKey, KeyChoice};
use time::OffsetDateTime;

use super::issue::{NewBundle, deploy, issue_with, prepare_solvers, report, solver_plan};
use crate::cli::RenewArgs;
use crate::context::Context;
use crate::logging::to_second;
use crate::state::InventoryEntry;

/// What happened to one certificate.
enum Outcome {
    Renewed { hook_failed: bool },
    NotDue,
}

pub async fn run(ctx: &Context, args: RenewArgs, quiet: bool) -> Result<()> {
    let what = if args.all {
        "renew --all"
    } else {
        "renew --name"
    };
    let _all = match args.all {
        true => Some(crate::lock::state_dir(&ctx.state, what)?),
        false => None,
    };
    let entries: Vec<InventoryEntry> = match &args.name {
        Some(name) => {
            let name = crate::names::normalize(std::slice::from_ref(name))?.remove(0);
            let entry = ctx.state.load_inventory(&name)?.with_context(|| {
                format!(
                    "--name {name:?}: no certificate with that first name in the inventory of {} (`certfleet certificates` lists them)",
                    ctx.state.root().display()
                )
            })?;
            vec![entry]
        }
        None => ctx.state.inventory()?,
    };
    if entries.is_empty() {
        if !quiet {
            println!(
                "nothing to renew: the inventory in {} is empty",
                ctx.state.root().display()
            );
        }
        return Ok(());
    }
    // Each certificate renews at the CA it came from, whatever `--directory` says.
    let mut by_ca: BTreeMap<String, Vec<InventoryEntry>> = BTreeMap::new();
    for e in entries {
        by_ca.entry(e.directory.clone()).or_default().push(e);
    }
    let (mut renewed, mut skipped, mut failed, mut hooks_failed) =
        (0usize, 0usize, Vec::new(), Vec::new());
    for (directory, entries) in &by_ca {
        let ca_ctx = ctx.for_directory(directory);
        let (client, account) = match ca_ctx.account().await {
            Ok(pair) => pair,
            Err(e) => {
                for entry in entries {
                    tracing::error!("{}: renewal failed: {e:#}", entry.names[0]);
                    failed.push(entry.names[0].clone());
                }
                continue;
            }
        };
        // Per CA: one CA's renewalInfo outage says nothing about another's.
        let windows = RenewalWindows::default();
        for entry in entries {
            let first = &entry.names[0];
            let outcome = match crate::lock::certificate(&ctx.state, first, what) {
                Ok(_lock) => {
                    renew_one(&ca_ctx, &client, &account, entry, &args, &windows, quiet).await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Outcome::Renewed { hook_failed }) => {
                    renewed += 1;
                    if hook_failed {
                        hooks_failed.push(first.clone());
                    }
                }
                Ok(Outcome::NotDue) => skipped += 1,
                Err(e) => {
                    tracing::error!("{first}: renewal failed: {e:#}");
                    failed.push(first.clone());
                }
            }
        }
        windows.finish();
    }
    if !quiet {
        println!(
            "renewed {renewed}, not due {skipped}, failed {}, deploy hooks failed {}",
            failed.len(),
            hooks_failed.len()
        );
    }
    match (failed.is_empty(), hooks_failed.is_empty()) {
        (true, true) => Ok(()),
        (false, _) => bail!("renewal failed for {}", failed.join(", ")),
        (true, false) => bail!(
            "renewed, but the deploy hook failed for {} (the new certificates are in place)",
            hooks_failed.join(", ")
        ),
    }
}

/// Renews one certificate if due (or forced).
async fn renew_one(
    ctx: &Context,
    client: &AcmeClient,
    account: &certfleet_acme::Account,
    entry: &InventoryEntry,
    args: &RenewArgs,
    windows: &RenewalWindows,
    quiet: bool,
) -> Result<Outcome> {
    let first = &entry.names[0];
    if std::fs::symlink_metadata(&entry.out_dir).is_err() {
        bail!(
            "the certificate directory {} is gone; `certfleet delete --name {first}` removes the certificate from the inventory",
            entry.out_dir.display()
        );
    }
    let meta = CertificateMeta::read(&entry.out_dir)
        .with_context(|| format!("{first}: reading the current certificate's meta.json"))?;
    let revoked = entry.revoked.as_ref().filter(|r| r.serial == meta.serial);
    let decision = match revoked {
        Some(r) => RenewalDecision::Due(format!("revoked ({}) at {}", r.reason, to_second(r.at))),
        None => {
            let window = windows
                .window(client, meta.ari_cert_id.as_deref(), first)
                .await;
            decide(
                OffsetDateTime::now_utc(),
                meta.not_before,
                meta.not_after,
                window.as_ref(),
                &meta.serial,
            )
        }
    };
    match (&decision, args.force) {
        (RenewalDecision::NotYet { renew_at, reason }, false) => {
            tracing::info!(
                "{first}: not due ({reason}); renews from {}",
                to_second(*renew_at)
            );
            return Ok(Outcome::NotDue);
        }
        (RenewalDecision::NotYet { .. }, true) => tracing::info!("{first}: renewing (forced)"),
        (RenewalDecision::Due(why), _) => tracing::info!("{first}: renewing: {why}"),
    }
    let compromised = revoked.is_some_and(|r| r.key_compromised());
    let wants_reuse = args.hooks.reuse_key || entry.reuse_key;
    if wants_reuse && compromised {
        tracing::warn!(
            "{first}: not reusing the key: the certificate was revoked for keyCompromise"
        );
    }
    let reuse = wants_reuse && !compromised;
    if compromised && !entry.key_in_out_dir {
        bail!(
            "{first}: the key {} was reported compromised and certfleet does not manage it: issue again with a new key (`certfleet issue --name {first} --key NEWREF` or `--key-alg ALG`)",
            entry.key_ref
        );
    }
    let plan = solver_plan(ctx, &args.solver, &entry.challenge, Some(entry))?;
    let prepared = prepare_solvers(ctx, &plan).await?;
    let bundle = BundleDir::new(&entry.out_dir)?;
    bundle::sweep(bundle.parent())?;
    let request = CertificateRequest {
        names: entry.names.clone(),
        profile: entry.profile.clone(),
        // Only CAs that offer ARI know what `replaces` means (RFC 9773 §5); one that
        // refuses it is asked again without it (the order steps do that).
        replaces: if client.directory().renewal_info.is_some() && revoked.is_none() {
            meta.ari_cert_id.clone()
        } else {
            None
        },
        preferred_chain: entry.preferred_chain.clone(),
    };
    let current_key = bundle.current_key();
    // A key certfleet made (privkey.pem in the bundle) is replaced on every renewal unless
    // --reuse-key; a key the user named (file elsewhere, token, TPM) is theirs to rotate.
    let new_key = entry.key_in_out_dir && !reuse;
    let (issued, staging) = if new_key {
        let alg = match ctx.load_key(&entry.key_ref).await {
            Ok(k) => k.algorithm(),
            Err(e) => {
                tracing::warn!(
                    "{first}: cannot read the current key ({e}); the new key is {}",
                    ctx.settings.issue.key_alg
                );
                ctx.settings.issue.key_alg
            }
        };
        let mut checkpoint = NewBundle {
            bundle: bundle.clone(),
            choice: KeyChoice::Generate(alg),
            existing: None,
            maker: ctx.key_maker(),
            staging: None,
        };
        let issued = issue_with(ctx, account, &prepared, &request, &mut checkpoint).await?;
        (issued, checkpoint.staging.take())
    } else {
        let cert_key = ctx.load_key(&entry.key_ref).await?;
        let issued = issue_with(
            ctx,
            account,
            &prepared,
            &request,
            &mut ExistingKey(cert_key),
        )
        .await?;
        (issued, None)
    };
    let key_output = match (&staging, entry.key_in_out_dir) {
        (Some(_), _) => KeyOutput::InStaging,
        (None, true) => KeyOutput::LinkFrom(&current_key),
        (None, false) => KeyOutput::Reference(&entry.key_ref),
    };
    let new_meta = CertificateMeta::new(
        &issued,
        entry.key_ref.clone(),
        account.url(),
        ctx.directory(),
    );
    let staging = match staging {
        Some(s) => s,
        None => bundle.stage()?,
    };
    staging.commit(&issued, key_output, &new_meta)?;
    let mut updated = entry.clone();
    updated.revoked = None;
    if let Some(hook) = &args.hooks.deploy_hook {
        updated.deploy_hook = Some(hook.clone()).filter(|h| !h.trim().is_empty());
    }
    if args.hooks.reuse_key {
        updated.reuse_key = true;
    }
    if &updated != entry {
        ctx.state.save_inventory(&updated)?;
    }
    if !quiet {
        report(&issued, &entry.out_dir, client);
    }
    let hook = updated
        .deploy_hook
        .clone()
        .or_else(|| ctx.settings.hooks.deploy.clone());
    let mut hook_failed = false;
    if let Some(hook) = hook
        && let Err(e) = deploy(
            ctx,
            &hook,
            "renewed",
            &issued,
            &entry.out_dir,
            &new_meta,
            entry.key_in_out_dir,
        )
        .await
    {
        tracing::error!("{first}: {e:#}");
        hook_failed = true;
    }
    Ok(Outcome::Renewed { hook_failed })
}
