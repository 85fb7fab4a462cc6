//! `certfleet persist records`: the dns-persist-01 records a DNS team publishes once for
//! this account and CA (draft-ietf-acme-dns-persist).

use anyhow::{Context as _, Result, bail};
use certfleet_acme::persist::{PersistPolicy, PersistRecord};

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
        } => {
            let names = names::normalize(&raw)?;
            let (client, account) = ctx.account().await?;
            let issuer = match issuer {
                Some(i) => i,
                None => client
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
                    })?,
            };
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
