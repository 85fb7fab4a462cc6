use anyhow::{Context as _, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certfleet_acme::{AccountState, ExternalAccountBinding, MacAlgorithm, NewAccount};
use serde_json::json;
use time::OffsetDateTime;

use crate::cli::{AccountCommand, EabArgs};
use crate::context::Context;
use crate::state::AccountRecord;

pub async fn run(ctx: &Context, cmd: AccountCommand) -> Result<()> {
    match cmd {
        AccountCommand::Register {
            key,
            contact,
            agree_tos,
            eab,
        } => register(ctx, &key, contact, agree_tos, &eab).await,
        AccountCommand::Show => show(ctx).await,
        AccountCommand::Find { key } => find(ctx, &key).await,
        AccountCommand::Update { contact } => {
            validate_contacts(&contact)?;
            let mut record = ctx.state.require_account(ctx.directory())?;
            let (_, account) = ctx.account().await?;
            let state = account.update_contact(&contact).await?;
            record.contact = state.contact.clone();
            ctx.state.save_account(&record)?;
            print_account(ctx, account.url(), &record.key_ref.to_string(), &state)
        }
        AccountCommand::Rollover { new_key } => {
            let mut record = ctx.state.require_account(ctx.directory())?;
            let new_key = ctx.load_stored_key_str(&new_key, "account key").await?;
            if new_key.key_ref() == &record.key_ref {
                bail!("--new-key {} is already the account key", record.key_ref);
            }
            let (_, account) = ctx.account().await?;
            let rolled = account.rollover(new_key.clone()).await?;
            let old = std::mem::replace(&mut record.key_ref, new_key.key_ref().clone());
            ctx.state.save_account(&record)?;
            tracing::info!(account = rolled.url(), old = %old, new = %record.key_ref, "account key rolled over; the old key no longer works");
            println!("{}", record.key_ref);
            Ok(())
        }
        AccountCommand::Deactivate { yes } => {
            if !yes {
                bail!(
                    "deactivation is permanent: the account can never be used again. Pass --yes to confirm"
                );
            }
            let mut record = ctx.state.require_account(ctx.directory())?;
            let (_, account) = ctx.account().await?;
            let state = account.deactivate().await?;
            record.deactivated_at = Some(OffsetDateTime::now_utc());
            ctx.state.save_account(&record)?;
            tracing::info!(account = account.url(), "account deactivated");
            tracing::warn!(
                account = account.url(),
                "dns-persist-01 records naming this account (accounturi=…) stop authorizing anything; \
                 remove them, and publish new ones for the next account (`certfleet persist records`)"
            );
            print_account(ctx, account.url(), &record.key_ref.to_string(), &state)
        }
    }
}

async fn register(
    ctx: &Context,
    key: &str,
    contact: Vec<String>,
    agree_tos: bool,
    eab: &EabArgs,
) -> Result<()> {
    validate_contacts(&contact)?;
    let external_account_binding = eab_from_args(eab)?;
    let key = ctx.load_stored_key_str(key, "account key").await?;
    if let Some(existing) = ctx.state.load_account(ctx.directory())?
        && &existing.key_ref != key.key_ref()
        && existing.deactivated_at.is_none()
    {
        bail!(
            "{} already holds an account for {} with key {}; use `certfleet account rollover --new-key` to change its key, or another --state-dir",
            ctx.state.root().display(),
            ctx.directory(),
            existing.key_ref
        );
    }
    let client = ctx.client().await?;
    let meta = &client.directory().meta;
    if let (Some(tos), false) = (&meta.terms_of_service, agree_tos) {
        bail!(
            "the CA asks you to agree to its terms of service ({tos}): read them and pass --agree-tos"
        );
    }
    if meta.external_account_required && external_account_binding.is_none() {
        bail!(
            "this CA requires an external account binding: pass --eab-kid and --eab-hmac-key with the values your CA gave you"
        );
    }
    let request = NewAccount {
        contact: contact.clone(),
        terms_of_service_agreed: agree_tos,
        only_return_existing: false,
        external_account_binding,
    };
    let account = client.new_account(key.clone(), &request).await?;
    // The CA returns an existing account for a known key and ignores the contact sent:
    // bring it in line, or say what it is.
    let mut contact = contact;
    let state = account.state().await?;
    let mut have = state.contact.clone();
    let mut want = contact.clone();
    have.sort();
    want.sort();
    if have != want {
        if contact.is_empty() {
            tracing::info!(
                "the account exists already; its contact stays {:?} (`account update --contact` changes it)",
                state.contact
            );
            contact = state.contact.clone();
        } else {
            let updated = account.update_contact(&contact).await?;
            tracing::info!(
                "the account exists already; contact updated from {:?} to {:?}",
                state.contact,
                updated.contact
            );
            contact = updated.contact;
        }
    }
    let record = AccountRecord {
        directory: ctx.directory().to_owned(),
        url: account.url().to_owned(),
        key_ref: key.key_ref().clone(),
        contact,
        created_at: OffsetDateTime::now_utc(),
        deactivated_at: None,
    };
    ctx.state.save_account(&record)?;
    tracing::info!(account = account.url(), state_dir = %ctx.state.root().display(), "account registered");
    println!("{}", account.url());
    Ok(())
}

/// `account show`; a deactivated account is shown from the local record (the CA no longer
/// answers for it).
async fn show(ctx: &Context) -> Result<()> {
    let record = ctx.state.load_account(ctx.directory())?;
    if let Some(r) = record.as_ref().filter(|r| r.deactivated_at.is_some()) {
        return super::print_json(&json!({
            "url": r.url,
            "status": "deactivated",
            "contact": r.contact,
            "key_ref": r.key_ref.to_string(),
            "directory": ctx.directory(),
            "deactivated_at": r.deactivated_at.map(crate::logging::to_second),
        }));
    }
    let (_, account) = ctx.account().await?;
    let state = account.state().await?;
    print_account(
        ctx,
        account.url(),
        &account.key().key_ref().to_string(),
        &state,
    )
}

async fn find(ctx: &Context, key: &str) -> Result<()> {
    let key = ctx.load_key_str(key).await?;
    let client = ctx.client().await?;
    let request = NewAccount {
        contact: Vec::new(),
        terms_of_service_agreed: false,
        only_return_existing: true,
        external_account_binding: None,
    };
    let account = client
        .new_account(key.clone(), &request)
        .await
        .with_context(|| {
            format!(
                "no usable account at {} for key {}",
                ctx.directory(),
                key.key_ref()
            )
        })?;
    // A key that finds an account and no local record: adopt it (recovering a lost state dir).
    if ctx.state.load_account(ctx.directory())?.is_none() {
        ctx.state.save_account(&AccountRecord {
            directory: ctx.directory().to_owned(),
            url: account.url().to_owned(),
            key_ref: key.key_ref().clone(),
            contact: Vec::new(),
            created_at: OffsetDateTime::now_utc(),
            deactivated_at: None,
        })?;
        tracing::info!("no local record for this CA: saved the account found");
    }
    println!("{}", account.url());
    Ok(())
}

fn eab_from_args(eab: &EabArgs) -> Result<Option<ExternalAccountBinding>> {
    let (Some(kid), Some(key)) = (&eab.eab_kid, &eab.eab_hmac_key) else {
        return Ok(None);
    };
    let algorithm: MacAlgorithm = eab.eab_alg.parse().map_err(|_| {
        anyhow::anyhow!(
            "--eab-alg {:?}: expected HS256, HS384 or HS512",
            eab.eab_alg
        )
    })?;
    // Never echo the key itself: it is a credential.
    let hmac_key = URL_SAFE_NO_PAD
        .decode(key.trim().trim_end_matches('='))
        .map_err(|_| anyhow::anyhow!("--eab-hmac-key is not base64url (the value is not shown)"))?;
    if hmac_key.is_empty() {
        bail!("--eab-hmac-key is empty");
    }
    if hmac_key.len() < algorithm.min_key_bytes() {
        bail!(
            "--eab-hmac-key is {} bytes long, but {algorithm} needs at least {} (RFC 7518 §3.2): check --eab-alg against what your CA gave you (the key is not shown)",
            hmac_key.len(),
            algorithm.min_key_bytes()
        );
    }
    Ok(Some(ExternalAccountBinding {
        key_id: kid.clone(),
        hmac_key,
        algorithm,
    }))
}

fn validate_contacts(contact: &[String]) -> Result<()> {
    for c in contact {
        let Some(addr) = c.strip_prefix("mailto:") else {
            bail!("--contact {c:?}: expected a mailto: URL, e.g. mailto:ops@example.com");
        };
        let valid = addr.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !host.ends_with('.')
        }) && !addr.contains([',', ' ', '<', '>']);
        if !valid {
            bail!("--contact {c:?}: {addr:?} is not an e-mail address");
        }
    }
    Ok(())
}

fn print_account(ctx: &Context, url: &str, key_ref: &str, state: &AccountState) -> Result<()> {
    super::print_json(&json!({
        "url": url,
        "status": format!("{:?}", state.status).to_lowercase(),
        "contact": state.contact,
        "key_ref": key_ref,
        "directory": ctx.directory(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(key: &str, alg: &str) -> EabArgs {
        EabArgs {
            eab_kid: Some("kid".into()),
            eab_hmac_key: Some(key.into()),
            eab_alg: alg.into(),
        }
    }

    #[test]
    fn mac_key_length_is_checked_against_the_algorithm_and_hyphen_keys_parse() {
        let k32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let k64 = URL_SAFE_NO_PAD.encode([7u8; 64]);
        assert!(eab_from_args(&args(&k32, "HS256")).expect("ok").is_some());
        let err = eab_from_args(&args(&k32, "HS512")).expect_err("short");
        let text = err.to_string();
        assert!(
            text.contains("32 bytes") && text.contains("at least 64"),
            "{text}"
        );
        assert!(!text.contains(&k32), "the key must not be shown: {text}");
        assert!(eab_from_args(&args(&k64, "HS512")).expect("ok").is_some());
        // A base64url key may start with '-'.
        use clap::Parser as _;
        let hyphen = format!("-{}", &k64[1..]);
        let cli = crate::cli::Cli::try_parse_from([
            "certfleet",
            "account",
            "register",
            "--key",
            "k.pem",
            "--eab-kid",
            "-kid",
            "--eab-hmac-key",
            &hyphen,
        ])
        .expect("hyphen-leading EAB values parse");
        let crate::cli::Command::Account(AccountCommand::Register { eab, .. }) = cli.command else {
            panic!("not register");
        };
        assert_eq!(eab.eab_hmac_key.as_deref(), Some(hyphen.as_str()));
        assert_eq!(eab.eab_kid.as_deref(), Some("-kid"));
    }
}
