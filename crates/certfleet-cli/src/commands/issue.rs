use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use certfleet_acme::Account;
use certfleet_dns01::Dns01Solver as _;
use certfleet_http01::{StandaloneServer, Webroot};
use certfleet_issue::output::{CertificateMeta, KeyOutput, PRIVKEY_FILE, write_certificate_dir};
use certfleet_issue::{CertificateRequest, ChallengeSolvers, IssuedCertificate, Issuer};
use certfleet_keys::file::FileKey;
use certfleet_keys::{KeyAlgorithm, KeyRef, SigningKey};

use crate::cli::{ChallengeArg, IssueArgs, SolverArgs};
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
    // Everything that can be checked locally is checked before the first request.
    let names = names::normalize(&args.names)?;
    let challenge = match args.challenge {
        Some(ChallengeArg::Http01) => "http-01",
        Some(ChallengeArg::Dns01) => "dns-01",
        None => ctx.settings.issue.challenge.as_str(),
    };
    if let Some(wild) = names.iter().find(|n| n.starts_with("*."))
        && challenge != "dns-01"
    {
        bail!(
            "--name {wild:?}: wildcard names can only be validated with dns-01: add --challenge dns-01 --dns-plugin NAME"
        );
    }
    let plan = solver_plan(ctx, &args.solver, challenge, None)?;
    let prepared = prepare_solvers(ctx, &plan).await?;
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| ctx.state.default_cert_dir(&names[0]));
    let profile = args
        .profile
        .clone()
        .or_else(|| ctx.settings.issue.profile.clone());
    let preferred_chain = args
        .preferred_chain
        .clone()
        .or_else(|| ctx.settings.issue.preferred_chain.clone());

    // The certificate key: the one named, or a new file key that becomes privkey.pem.
    let (cert_key, new_key_pem) = match &args.key {
        Some(k) => (ctx.load_key_str(k).await?, None),
        None => {
            let alg = args.key_alg.unwrap_or(ctx.settings.issue.key_alg);
            let (key, pem) = generate_pending_key(&out_dir, alg).await?;
            (key, Some(pem))
        }
    };
    let (client, account) = ctx.account().await?;
    check_profile(&client, profile.as_deref())?;
    if cert_key.public_jwk().thumbprint() == account.key().public_jwk().thumbprint() {
        bail!(
            "--key {}: the account key cannot also be the certificate key (CAs refuse it)",
            cert_key.key_ref()
        );
    }
    let request = CertificateRequest {
        names: names.clone(),
        cert_key: cert_key.clone(),
        profile: profile.clone(),
        replaces: None,
        preferred_chain: preferred_chain.clone(),
    };
    let issued = issue_with(ctx, &account, &prepared, &request).await?;

    let (key_ref, key_output) = match &new_key_pem {
        Some(pem) => (
            KeyRef::file(&out_dir.join(PRIVKEY_FILE))?,
            KeyOutput::PrivateKeyPem(pem),
        ),
        None => (
            cert_key.key_ref().clone(),
            KeyOutput::Reference(cert_key.key_ref()),
        ),
    };
    let meta = CertificateMeta::new(&issued, key_ref.clone(), account.url(), ctx.directory());
    write_certificate_dir(&out_dir, &issued, key_output, &meta)?;
    remove_pending_key(&out_dir);
    ctx.state.save_inventory(&InventoryEntry {
        names: names.clone(),
        out_dir: std::path::absolute(&out_dir).unwrap_or(out_dir.clone()),
        key_ref,
        key_in_out_dir: new_key_pem.is_some(),
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
            SolverPlan::Http01(_) => None,
        },
        profile,
        preferred_chain,
        directory: ctx.directory().to_owned(),
    })?;
    report(&issued, &out_dir, &client);
    Ok(())
}

/// How an order's challenges are answered.
#[derive(Debug, Clone)]
pub enum SolverPlan {
    Http01(Http01Plan),
    /// dns-01 through the named plugin (wildcards included).
    Dns01 {
        plugin: String,
    },
}

impl SolverPlan {
    pub fn challenge(&self) -> &'static str {
        match self {
            SolverPlan::Http01(_) => "http-01",
            SolverPlan::Dns01 { .. } => "dns-01",
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
) -> Result<IssuedCertificate> {
    let issuer = Issuer::new(account.clone(), prepared.solvers.clone(), ctx.poll_policy());
    let result = issuer.issue(request).await;
    if let Some(solver) = &prepared.dns {
        match solver.metrics().await {
            Ok(counters) => tracing::info!(
                plugin = solver.name(),
                "dns-01 provider cost: {}",
                counters
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Err(e) => tracing::debug!("plugin metrics unavailable: {e}"),
        }
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

const PENDING_KEY: &str = ".privkey.pem.pending";

/// A new key for this certificate, written (0600, atomically) beside the output before the
/// order so it is never lost, and moved into place with the certificate.
async fn generate_pending_key(
    out_dir: &Path,
    alg: KeyAlgorithm,
) -> Result<(Arc<dyn SigningKey>, Vec<u8>)> {
    certfleet_fs::ensure_dir(out_dir, 0o755)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;
    let path = out_dir.join(PENDING_KEY);
    // A leftover from an interrupted run: its certificate was never written, so replace it.
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::debug!("replacing {} left by an interrupted run", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let p = path.clone();
    let key = tokio::task::spawn_blocking(move || FileKey::generate(alg, &p))
        .await
        .context("key generation task failed")??;
    let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok((Arc::new(key), pem))
}

fn remove_pending_key(out_dir: &Path) {
    let path = out_dir.join(PENDING_KEY);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove {}: {e}", path.display());
    }
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
