//! `certfleet persist records`: the dns-persist-01 records a DNS team publishes once for
//! this account and CA (draft-ietf-acme-dns-persist).

use anyhow::{Context as _, Result, bail};
use certfleet_acme::persist::{PersistPolicy, PersistRecord};
use certfleet_acme::{Account, AcmeClient};
use certfleet_dns01::TxtRecord;

use crate::cli::PersistCommand;
use crate::context::Context;
use crate::names;

pub async fn run(ctx: &Context, cmd: PersistCommand) -> Result<()> {
    match cmd {
        PersistCommand::Records {
            names: raw,
            issuer,
            wildcard,
            persist_until,
            ttl,
            json,
            check,
        } => {
            let names = names::normalize(&raw)?;
            let (client, account) = ctx.account().await?;
            let issuer = issuer_name(ctx, &client, issuer)?;
            let mut records = Vec::with_capacity(names.len());
            for name in &names {
                let policy = PersistPolicy {
                    issuer_domain_name: issuer.clone(),
                    account_url: account.url().to_owned(),
                    wildcard: wildcard || name.starts_with("*."),
                    persist_until,
                };
                let record = PersistRecord::new(name, &policy)
                    .with_context(|| format!("--name {name:?}"))?;
                // One record serves a name and its wildcard: print it once.
                if !records
                    .iter()
                    .any(|r: &PersistRecord| r.name == record.name && r.value == record.value)
                {
                    if records
                        .iter()
                        .any(|r: &PersistRecord| r.name == record.name)
                    {
                        bail!(
                            "{name}: {} would need two different values; order the wildcard and \
                             the base name with the same --wildcard setting",
                            record.name
                        );
                    }
                    records.push(record);
                }
            }
            if check {
                let missing = missing_records(ctx, &records).await?;
                for (r, servers) in &missing {
                    if servers.is_empty() {
                        println!("present  {r}");
                    } else {
                        println!("MISSING  {r}  ({})", servers.join("; "));
                    }
                }
                let absent = missing.iter().filter(|(_, s)| !s.is_empty()).count();
                if absent > 0 {
                    bail!(
                        "{absent} of {} records are not served by every authoritative server",
                        missing.len()
                    );
                }
                return Ok(());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                println!(
                    "; dns-persist-01 records for account {} at {}",
                    account.url(),
                    ctx.directory()
                );
                for r in &records {
                    println!("{}", r.zone_line(ttl));
                }
            }
            Ok(())
        }
    }
}

/// `--issuer`, else the directory's first `caaIdentities`.
pub fn issuer_name(ctx: &Context, client: &AcmeClient, flag: Option<String>) -> Result<String> {
    if let Some(i) = flag {
        return Ok(i);
    }
    client
        .directory()
        .meta
        .caa_identities
        .first()
        .cloned()
        .with_context(|| {
            format!(
                "the CA at {} lists no caaIdentities in its directory: pass --issuer DOMAIN \
                 (the issuer domain name the CA documents for dns-persist-01)",
                ctx.directory()
            )
        })
}

/// The record `name` needs for this account (`policy=wildcard` for a wildcard name).
pub fn record_for(account: &Account, issuer: &str, name: &str) -> Result<PersistRecord> {
    let policy = PersistPolicy {
        issuer_domain_name: issuer.to_owned(),
        account_url: account.url().to_owned(),
        wildcard: name.starts_with("*."),
        persist_until: None,
    };
    PersistRecord::new(name, &policy).with_context(|| format!("{name}: dns-persist-01 record"))
}

/// Asks every authoritative server once (the propagation checker of `[dns01.propagation]`):
/// per record, the servers that do not serve it (empty: present everywhere).
pub async fn missing_records(
    ctx: &Context,
    records: &[PersistRecord],
) -> Result<Vec<(PersistRecord, Vec<String>)>> {
    let check = crate::dns::authoritative_check(&ctx.settings)?;
    let txt: Vec<TxtRecord> = records
        .iter()
        .map(|r| TxtRecord {
            fqdn: format!("{}.", r.name),
            value: r.value.clone(),
        })
        .collect();
    let answers = check
        .check_once(&txt)
        .await
        .context("looking up dns-persist-01 records")?;
    Ok(records
        .iter()
        .cloned()
        .zip(answers.into_iter().map(|(_, servers)| servers))
        .collect())
}
