use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use certfleet_acme::Account;
use certfleet_http01::{StandaloneServer, Webroot};
use certfleet_issue::bundle::{self, BundleDir, KeyOutput, Staging};
use certfleet_issue::output::CertificateMeta;
use certfleet_issue::{
    CertificateRequest, ChallengeKind, ChallengeSolvers, Checkpoint, IssueError, IssuedCertificate,
    Issuer, KeyChoice, KeyMaker,
};
use certfleet_keys::{KeyRef, SigningKey};

use crate::cli::{IssueArgs, SolverArgs};
use crate::context::Context;
use crate::names;
use crate::state::InventoryEntry;

/// Where the challenge responses will be served, resolved from flags, config and defaults.
#[derive(Debug, Clone)]
pub enum Http01Plan {
    Standalone(SocketAddr),
    Webroot(PathBuf),
}

pub async fn run(ctx: &Context, args: IssueArgs) -> Result<()> {
    // Everything that can be checked locally is checked before the first request, and
    // nothing is written before the order is ready to be finalized.
    let names = names::normalize(&args.names)?;
    let opts = &args.cert;
    let challenge = match opts.challenge {
        Some(c) => ChallengeKind::from(c),
        None => ctx
            .settings
            .issue
            .challenge
            .parse()
            .map_err(anyhow::Error::msg)?,
    };
    if let Some(wild) = names.iter().find(|n| n.starts_with("*."))
        && challenge == ChallengeKind::Http01
    {
        bail!(
            "--name {wild:?}: wildcard names can only be validated with dns-01: add --challenge dns-01 --dns-plugin NAME"
        );
    }
    let plan = solver_plan(ctx, &args.solver, challenge.as_str(), None)?;
    let _lock = crate::lock::certificate(&ctx.state, &names[0], "issue")?;
    let prepared = prepare_solvers(ctx, &plan).await?;
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| ctx.state.default_cert_dir(&names[0]));
    let bundle = BundleDir::new(&out_dir)?;
    let profile = opts
        .profile
        .clone()
        .or_else(|| ctx.settings.issue.profile.clone());
    let preferred_chain = opts
        .preferred_chain
        .clone()
        .or_else(|| ctx.settings.issue.preferred_chain.clone());
    let choice = opts
        .key_choice()
        .unwrap_or(KeyChoice::Generate(ctx.settings.issue.key_alg));
    let existing = match &choice {
        KeyChoice::Existing(r) => Some(ctx.load_stored_key(r, "certificate key").await?),
        KeyChoice::Generate(_) => None,
    };
    let (client, account) = ctx.account().await?;
    check_profile(&client, profile.as_deref())?;
    if let Some(key) = &existing
        && key.public_jwk().thumbprint() == account.key().public_jwk().thumbprint()
    {
        bail!(
            "--key {}: the account key cannot also be the certificate key (CAs refuse it)",
            key.key_ref()
        );
    }
    let removed = bundle::sweep(bundle.parent())?;
    if removed > 0 {
        tracing::info!(
            removed,
            "removed leftovers of interrupted runs in {}",
            bundle.parent().display()
        );
    }
    let request = CertificateRequest {
        names: names.clone(),
        profile: profile.clone(),
        replaces: None,
        preferred_chain: preferred_chain.clone(),
    };
    let mut checkpoint = NewBundle {
        bundle: bundle.clone(),
        choice: choice.clone(),
        existing,
        maker: ctx.key_maker(),
        staging: None,
    };
    let issued = issue_with(ctx, &account, &prepared, &request, &mut checkpoint).await?;
    let generated = matches!(choice, KeyChoice::Generate(_));
    let key_ref = if generated {
        KeyRef::file(&bundle.current_key())?
    } else {
        issued.key.key_ref().clone()
    };
    let meta = CertificateMeta::new(&issued, key_ref.clone(), account.url(), ctx.directory());
    let staging = match checkpoint.staging.take() {
        Some(s) => s,
        None => bundle.stage()?,
    };
    let key_output = if generated {
        KeyOutput::InStaging
    } else {
        KeyOutput::Reference(&key_ref)
    };
    staging.commit(&issued, key_output, &meta)?;
    let deploy_hook = args
        .hooks
        .deploy_hook
        .clone()
        .filter(|h| !h.trim().is_empty());
    ctx.state.save_inventory(&InventoryEntry {
        names: names.clone(),
        out_dir: bundle.stable().to_owned(),
        key_ref,
        key_in_out_dir: generated,
        challenge: plan.challenge().to_owned(),
        http_listen: match &plan {
            SolverPlan::Http01(Http01Plan::Standalone(a)) => Some(a.to_string()),
            _ => None,
        },
        webroot: match &plan {
            SolverPlan::Http01(Http01Plan::Webroot(w)) => Some(w.clone()),
            _ => None,
        },
        dns_plugin: match &plan {
            SolverPlan::Dns01 { plugin } => Some(plugin.clone()),
            SolverPlan::Http01(_) | SolverPlan::DnsPersist01 => None,
        },
        profile,
        preferred_chain,
        directory: ctx.directory().to_owned(),
        deploy_hook: deploy_hook.clone(),
        reuse_key: args.hooks.reuse_key,
        revoked: None,
    })?;
    report(&issued, &out_dir, &client);
    let hook = deploy_hook.or_else(|| ctx.settings.hooks.deploy.clone());
    if let Some(hook) = hook {
        deploy(
            ctx,
            &hook,
            "issued",
            &issued,
            bundle.stable(),
            &meta,
            generated,
        )
        .await?;
    }
    Ok(())
}

/// Runs the deploy hook for a certificate just written; a failure names the certificate,
/// which stays in place.
pub async fn deploy(
    ctx: &Context,
    hook: &str,
    event: &str,
    issued: &IssuedCertificate,
    lineage: &Path,
    meta: &CertificateMeta,
    key_in_dir: bool,
) -> Result<()> {
    let cert = crate::hooks::Deployed {
        event,
        names: &issued.names,
        lineage,
        serial: &issued.info.serial_hex,
        not_after: issued.info.not_after,
        key_ref: meta.key_ref.to_string(),
        key_in_dir,
        ca: &meta.directory,
    };
    crate::hooks::run_deploy_hook(hook, &cert, ctx.settings.hooks.timeout())
        .await
        .with_context(|| {
            format!(
                "the certificate for {} was {event} and written to {}, but its deploy hook failed",
                issued.names.join(", "),
                lineage.display()
            )
        })
}

/// The checkpoint of `issue`: the key exists, or is made in the new bundle's staging
/// directory right before finalize (so a failed order leaves no key behind).
#[derive(Debug)]
pub struct NewBundle {
    pub bundle: BundleDir,
    pub choice: KeyChoice,
    pub existing: Option<Arc<dyn SigningKey>>,
    pub maker: Arc<dyn KeyMaker>,
    pub staging: Option<Staging>,
}

#[async_trait::async_trait]
impl Checkpoint<IssueError> for NewBundle {
    async fn answering(&mut self) -> Result<(), IssueError> {
        Ok(())
    }

    async fn finalize_key(&mut self) -> Result<Arc<dyn SigningKey>, IssueError> {
        if let Some(key) = &self.existing {
            return Ok(key.clone());
        }
        let KeyChoice::Generate(alg) = self.choice else {
            return Err(IssueError::InvalidRequest(
                "no certificate key was loaded".to_owned(),
            ));
        };
        let staging = self.bundle.stage()?;
        let key = self.maker.generate(alg, &staging.key_path()).await?;
        self.staging = Some(staging);
        self.existing = Some(key.clone());
        Ok(key)
    }
}

/// How an order's challenges are answered.
#[derive(Debug, Clone)]
pub enum SolverPlan {
    Http01(Http01Plan),
    /// dns-01 through the named plugin (wildcards included).
    Dns01 {
        plugin: String,
    },
    /// dns-persist-01: records published beforehand, nothing presented per order.
    DnsPersist01,
}

impl SolverPlan {
    pub fn challenge(&self) -> &'static str {
        match self {
            SolverPlan::Http01(_) => "http-01",
            SolverPlan::Dns01 { .. } => "dns-01",
            SolverPlan::DnsPersist01 => "dns-persist-01",
        }
    }
}

/// Resolves the solver plan for `challenge`: flags, then what the inventory recorded, then
/// config. For renewals (`recorded`), http-01 flags switch to http-01 and `--dns-plugin` to
/// dns-01; otherwise the recorded challenge and plugin are reused.
pub fn solver_plan(
    ctx: &Context,
    flags: &SolverArgs,
    challenge: &str,
    recorded: Option<&InventoryEntry>,
) -> Result<SolverPlan> {
    let challenge = match recorded {
        Some(_) if flags.http_listen.is_some() || flags.webroot.is_some() => "http-01",
        Some(_) if flags.dns_plugin.is_some() => "dns-01",
        Some(entry) => entry.challenge.as_str(),
        None => challenge,
    };
    if challenge == "dns-persist-01" {
        if let Some(p) = &flags.dns_plugin {
            bail!(
                "--dns-plugin {p}: dns-persist-01 writes no DNS record at issuance (publish the records once with `certfleet persist records --provision --dns-plugin {p}`)"
            );
        }
        return Ok(SolverPlan::DnsPersist01);
    }
    if challenge != "dns-01" {
        if let Some(p) = &flags.dns_plugin {
            bail!("--dns-plugin {p}: only used with --challenge dns-01");
        }
        return Ok(SolverPlan::Http01(http01_plan(ctx, flags, recorded)?));
    }
    let plugin = flags
        .dns_plugin
        .clone()
        .or_else(|| recorded.and_then(|e| e.dns_plugin.clone()))
        .or_else(|| ctx.settings.dns01.plugin.clone())
        .context(
            "dns-01 needs a DNS provider plugin: pass --dns-plugin NAME or set [dns01] plugin \
             (`certfleet plugin list` shows what is installed)",
        )?;
    Ok(SolverPlan::Dns01 { plugin })
}

/// Resolves the http-01 plan: flags, then what the inventory recorded, then config.
pub fn http01_plan(
    ctx: &Context,
    flags: &SolverArgs,
    recorded: Option<&InventoryEntry>,
) -> Result<Http01Plan> {
    if let Some(w) = &flags.webroot {
        return Ok(Http01Plan::Webroot(w.clone()));
    }
    if let Some(a) = flags.http_listen {
        return Ok(Http01Plan::Standalone(a));
    }
    if let Some(entry) = recorded {
        if let Some(w) = &entry.webroot {
            return Ok(Http01Plan::Webroot(w.clone()));
        }
        if let Some(a) = &entry.http_listen {
            let addr = a.parse().with_context(|| {
                format!("inventory for {}: bad http_listen {a:?}", entry.names[0])
            })?;
            return Ok(Http01Plan::Standalone(addr));
        }
    }
    if let Some(w) = &ctx.settings.http01.webroot {
        return Ok(Http01Plan::Webroot(w.clone()));
    }
    // Validated when settings were loaded.
    let addr = ctx
        .settings
        .http01
        .listen
        .parse()
        .with_context(|| format!("http01.listen = {:?}", ctx.settings.http01.listen))?;
    Ok(Http01Plan::Standalone(addr))
}

/// Solvers ready for orders: the http-01 server already bound, or the DNS plugin loaded
/// and configured (so a bad plugin fails before anything is ordered).
#[derive(Debug, Clone)]
pub struct PreparedSolvers {
    solvers: ChallengeSolvers,
    dns: Option<certfleet_dns01_host::PluginSolver>,
}

pub async fn prepare_solvers(ctx: &Context, plan: &SolverPlan) -> Result<PreparedSolvers> {
    Ok(match plan {
        SolverPlan::Http01(Http01Plan::Standalone(addr)) => PreparedSolvers {
            solvers: ChallengeSolvers::http01(Arc::new(StandaloneServer::bind(*addr).await?)),
            dns: None,
        },
        SolverPlan::Http01(Http01Plan::Webroot(dir)) => PreparedSolvers {
            solvers: ChallengeSolvers::http01(Arc::new(Webroot::new(dir)?)),
            dns: None,
        },
        SolverPlan::DnsPersist01 => PreparedSolvers {
            solvers: ChallengeSolvers::dns_persist01(),
            dns: None,
        },
        SolverPlan::Dns01 { plugin } => {
            let solver = crate::dns::load_solver(&ctx.settings, plugin).await?;
            let mut solvers = ChallengeSolvers::dns01(Arc::new(solver.clone()));
            solvers.dns01_propagation = crate::dns::propagation(&ctx.settings)?;
            PreparedSolvers {
                solvers,
                dns: Some(solver),
            }
        }
    })
}

/// Runs the order with prepared solvers; logs what the DNS plugin spent.
pub async fn issue_with(
    ctx: &Context,
    account: &Account,
    prepared: &PreparedSolvers,
    request: &CertificateRequest,
    checkpoint: &mut dyn Checkpoint<IssueError>,
) -> Result<IssuedCertificate> {
    let issuer = Issuer::new(account.clone(), prepared.solvers.clone(), ctx.poll_policy());
    let result = issuer.issue(request, checkpoint).await;
    if let Some(solver) = &prepared.dns {
        super::batch::log_provider_cost(solver).await;
    }
    let issued = result
        .with_context(|| format!("issuing a certificate for {}", request.names.join(", ")))?;
    Ok(issued)
}

fn check_profile(client: &certfleet_acme::AcmeClient, profile: Option<&str>) -> Result<()> {
    let Some(profile) = profile else {
        return Ok(());
    };
    let offered = &client.directory().meta.profiles;
    if offered.is_empty() {
        bail!("--profile {profile:?}: this CA advertises no certificate profiles");
    }
    if !offered.contains_key(profile) {
        bail!(
            "--profile {profile:?}: not offered by this CA (offered: {})",
            offered.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

pub fn report(issued: &IssuedCertificate, out_dir: &Path, client: &certfleet_acme::AcmeClient) {
    let stats = client.stats();
    tracing::info!(
        http_requests = stats.http_requests,
        signatures = stats.signatures,
        new_nonce = stats.new_nonce_requests,
        bad_nonce_retries = stats.bad_nonce_retries,
        "protocol cost"
    );
    println!(
        "issued {} (serial {}, valid until {}) -> {}",
        issued.names.join(", "),
        issued.info.serial_hex,
        issued
            .info
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| issued.info.not_after.to_string()),
        out_dir.display()
    );
}
