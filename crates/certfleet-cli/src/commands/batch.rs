//! `certfleet batch run|plan|status`: the composition root of a batch run (store, rate
//! governor, solvers, key backends) around `certfleet_batch::Orchestrator`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use certfleet_batch::batch_file::{BatchFile, CertDefaults, Challenge, KeySource, ParseOptions};
use certfleet_batch::governor::Governor;
use certfleet_batch::zone_batcher::BatcherConfig;
use certfleet_batch::{
    BatchId, Job, JobStatus, Limits, NewBatch, Orchestrator, OrchestratorConfig, RunHolder,
    RunKeys, RunSolvers, StateStore, StatusCounts, plan,
};
use certfleet_dns01::Dns01Solver as _;
use certfleet_store_postgres::is_postgres_url;
use serde_json::json;
use time::OffsetDateTime;

use crate::cli::{BatchCommand, BatchRunArgs, CertOptions, SolverArgs};
use crate::commands::issue::{Http01Plan, http01_plan};
use crate::context::Context;
use crate::stop::Stop;

mod fleet;
mod hooks;
mod inventory;
mod preset;
mod renewal;
mod report;
mod stopped;
#[cfg(feature = "test-hooks")]
mod window_hook;

use inventory::InventoryWriter;
use renewal::RenewalCheck;
use report::{JobPages, NotIssued, Report, rfc3339};

pub async fn run(ctx: &Context, cmd: BatchCommand, stop: &Stop) -> Result<()> {
    match cmd {
        BatchCommand::Run(args) => run_batch(ctx, *args, stop).await,
        BatchCommand::Plan { file, rate_limits } => {
            let batch = load(
                ctx,
                &file,
                false,
                &SolverArgs::default(),
                &CertOptions::default(),
                None,
            )?;
            let (chosen, limits) = limits(ctx, rate_limits.as_deref())?;
            println!(
                "rate-limit preset: {} (from {})",
                chosen.name, chosen.source
            );
            print!(
                "{}",
                plan::plan(&batch.certs, &limits, OffsetDateTime::now_utc())
            );
            Ok(())
        }
        BatchCommand::Status { jobs, store } => status(ctx, jobs, store.as_deref()).await,
        BatchCommand::Deploy { to, names, store } => {
            fleet::deploy(ctx, &to, &names, store.as_deref()).await
        }
    }
}

/// The governor's limits: the preset (flag, else config, else by the directory URL) with
/// the config's overrides.
fn limits(ctx: &Context, flag: Option<&str>) -> Result<(preset::Chosen, Limits)> {
    let chosen = preset::choose(flag, &ctx.settings.batch.rate_limits, ctx.directory())?;
    let limits = Limits::preset(chosen.preset).with_overrides(&ctx.settings.batch.limits);
    limits.validate().context("batch.limits")?;
    Ok((chosen, limits))
}

/// Reads and validates the whole batch file; every problem is reported with its line.
/// The per-certificate flags (the options of `issue`) are defaults under the file's own.
fn load(
    ctx: &Context,
    file: &Path,
    skip_invalid: bool,
    solver: &SolverArgs,
    cert: &CertOptions,
    deploy_hook: Option<&str>,
) -> Result<BatchFile> {
    let flagged = solver.dns_plugin.is_some();
    let http_flags = solver.http_listen.is_some() || solver.webroot.is_some();
    let dns_plugin = solver
        .dns_plugin
        .clone()
        .or_else(|| ctx.settings.dns01.plugin.clone());
    // `--challenge` decides; else a batch defaults to dns-01 when a DNS plugin is known
    // (flag or [dns01] plugin), unless http-01 is asked for by flag; otherwise [issue]
    // challenge decides.
    let challenge = if let Some(c) = cert.challenge {
        Challenge::from(c)
    } else if http_flags && !flagged {
        Challenge::Http01
    } else if dns_plugin.is_some() || ctx.settings.issue.challenge == "dns-01" {
        Challenge::Dns01
    } else {
        Challenge::Http01
    };
    if let Some(KeySource::Existing(r)) = cert.key_choice()
        && r.has_pin_value()
    {
        bail!(
            "--key {r}: a batch keeps the key reference for later runs and renewals, never a \
             PIN: give it with pin-source=file:/path/to/pin or pin-source=env:VARIABLE \
             instead of pin-value="
        );
    }
    let options = ParseOptions {
        skip_invalid,
        defaults: CertDefaults {
            key: Some(
                cert.key_choice()
                    .unwrap_or(KeySource::Generate(ctx.settings.issue.key_alg)),
            ),
            challenge: Some(challenge),
            dns_plugin: dns_plugin.filter(|_| challenge == Challenge::Dns01 || flagged),
            profile: cert
                .profile
                .clone()
                .or_else(|| ctx.settings.issue.profile.clone()),
            preferred_chain: cert
                .preferred_chain
                .clone()
                .or_else(|| ctx.settings.issue.preferred_chain.clone()),
            output_dir: cert.out.clone(),
            deploy_hook: deploy_hook.map(str::to_owned),
        },
        ..ParseOptions::default()
    };
    let batch = BatchFile::load(file, &options)?;
    for w in &batch.warnings {
        tracing::warn!("{}: {w}", file.display());
    }
    for s in &batch.skipped {
        tracing::warn!("{}: skipped: {s}", file.display());
    }
    Ok(batch)
}

async fn run_batch(ctx: &Context, args: BatchRunArgs, stop: &Stop) -> Result<()> {
    let max_wait = stopped::max_wait(&args)?;
    let mut batch = load(
        ctx,
        &args.file,
        args.skip_invalid,
        &args.solver,
        &args.cert,
        args.deploy_hook.as_deref(),
    )?;
    let batch_hooks = hooks::BatchHooks::new(ctx, &batch, args.batch_hook.as_deref());
    let lacking = drop_unpublished(ctx, &mut batch).await?;
    let (chosen, limits) = limits(ctx, args.rate_limits.as_deref())?;
    preset::announce(&chosen, &limits, ctx.directory());
    let store = ctx.open_store(args.store.as_deref()).await?;
    let holder = RunHolder::this_process(OffsetDateTime::now_utc(), &crate::context::hostname());
    let guard = store.begin_run(&holder).await?;
    let name = std::path::absolute(&args.file)
        .unwrap_or_else(|_| args.file.clone())
        .display()
        .to_string();
    let (record, created) = store
        .open_batch(
            &NewBatch {
                name,
                digest: batch.digest.clone(),
            },
            OffsetDateTime::now_utc(),
        )
        .await?;
    let added = store
        .add_jobs(record.id, &batch.jobs(), OffsetDateTime::now_utc())
        .await?;
    let retried = store
        .requeue_failed(record.id, OffsetDateTime::now_utc())
        .await?;
    // Deferrals our governor made under earlier limits are decided again under these.
    let reevaluated = store
        .redue_governed(record.id, OffsetDateTime::now_utc())
        .await?;
    let (client, account) = ctx.account().await?;
    let run_started = OffsetDateTime::now_utc();
    let mut renewal = RenewalCheck::default();
    if !created {
        let mut pages = JobPages::new(store.as_ref(), record.id);
        while let Some(page) = pages.next_page().await? {
            renewal += renewal::requeue_due(&client, store.as_ref(), record.id, &page).await?;
        }
    }
    tracing::info!(
        batch = record.id.0,
        certificates = batch.certs.len(),
        added,
        retried,
        reevaluated,
        renewing = renewal.requeued,
        up_to_date = renewal.up_to_date,
        resumed = !created,
        store = %store.location(),
        node = %guard.holder().node,
        "batch opened"
    );

    let (solvers, plugin_solver) = solvers(ctx, &args, &batch).await?;
    let pending_from_preset = limits.pending_authorizations_per_account;
    let governor = Arc::new(Governor::new(store.clone(), limits));
    let s = &ctx.settings.batch;
    let output_root = ctx.state.root().join("certs");
    sweep_output_dirs(&batch, &output_root, &ctx.state.root().join("inventory"))?;
    let kek = fleet::load_kek(ctx)?;
    if store.shares_bundles() && kek.is_none() {
        tracing::warn!(
            "no [batch] key_encryption_key_file: generated keys stay on the node that made \
             them; other nodes cannot finish or renew those certificates and batch deploy \
             cannot write them"
        );
    }
    let mut config = OrchestratorConfig::new(output_root);
    config.concurrency = args.concurrency.unwrap_or(s.concurrency).max(1);
    config.pending_authorizations = args
        .pending_authorizations
        .or(s.pending_authorizations)
        .or(pending_from_preset)
        .unwrap_or(certfleet_batch::DEFAULT_PENDING_AUTHORIZATIONS)
        .max(1);
    config.per_zone = args.per_zone.or(s.per_zone).map(|n| n.max(1));
    config.max_attempts = s.max_attempts.max(1);
    config.retry_backoff = Duration::from_secs(s.retry_backoff_secs);
    config.lease_for = Duration::from_secs(s.lease_secs.max(1));
    config.max_wait = max_wait;
    config.poll = ctx.poll_policy();
    config.batcher = BatcherConfig {
        window: Duration::from_millis(s.gather_millis),
        max_rounds_in_flight: s.plugin_concurrency.max(1),
        ..BatcherConfig::default()
    };
    let orchestrator = Orchestrator::new(
        store.clone(),
        governor,
        account,
        solvers,
        RunKeys {
            backends: ctx.key_backends(),
            maker: ctx.key_maker(),
            kek: kek.clone(),
        },
        config,
        guard.holder().node.clone(),
    );
    let inventory = Arc::new(inventory_writer(ctx, &args, &batch_hooks));
    let orchestrator = orchestrator
        .with_issued_hook(inventory.clone())
        .with_stop(stop.flag(), Duration::from_secs(s.stop_grace_secs));
    #[cfg(feature = "test-hooks")]
    let orchestrator = window_hook::attach(orchestrator, &args);
    let progress = tokio::spawn(show_progress(store.clone(), record.id));
    let summary = orchestrator.run(record.id).await;
    progress.abort();
    if let Some(solver) = &plugin_solver {
        log_provider_cost(solver).await;
    }
    let summary = summary?;
    let mut report = args.report.as_ref().map(|_| Report::new(run_started));
    let mut not_issued = NotIssued::default();
    let mut hook_run = hooks::HookRun::new(&batch_hooks, run_started);
    let mut pages = JobPages::new(store.as_ref(), record.id);
    while let Some(page) = pages.next_page().await? {
        for j in &page {
            if let Some(r) = report.as_mut() {
                r.push(j)?;
            }
            hook_run.note(j);
            if j.status == JobStatus::Issued {
                // Entries the hook could not write (or jobs issued by a killed run); on a
                // fleet only certificates this host holds.
                if !store.shares_bundles() || fleet::deployed_here(j) {
                    inventory.save_if_not_written(j)?;
                }
            } else {
                not_issued.note(j);
            }
        }
    }
    not_issued.finish();
    if let (Some(r), Some(path)) = (report, &args.report) {
        r.write(path)?;
    }
    if let Err(e) = store.end_run(guard.holder()).await {
        tracing::warn!("could not record the end of this run: {e}");
    }
    drop(guard);
    let counts = &summary.counts;
    tracing::info!(
        elapsed_secs = summary.elapsed.as_secs_f64(),
        up_to_date = renewal.up_to_date,
        "batch finished: {}",
        format_counts(counts)
    );
    let hooks_done = hook_run
        .finish(ctx.directory(), &args.file, args.report.as_deref())
        .await;
    stopped::early_exit(
        stop,
        summary.stopped_early,
        counts,
        store.as_ref(),
        record.id,
        &args,
    )
    .await?;
    if lacking > 0 {
        bail!(
            "{lacking} certificates were not ordered: their dns-persist-01 records are missing (listed above); \
             {} issued",
            counts.get(JobStatus::Issued)
        );
    }
    if hooks_done.failed > 0 {
        bail!(
            "{} of {} hooks failed (logged above); the certificates are in place",
            hooks_done.failed,
            hooks_done.ran
        );
    }
    if !summary.all_issued() {
        bail!(
            "{} of {} certificates were not issued",
            counts.total() - counts.get(JobStatus::Issued),
            counts.total()
        );
    }
    Ok(())
}

/// Removes what killed runs left beside the batch's certificate directories (staging
/// directories, links, unused versions) and in the renewal inventory (temporary files),
/// once per directory.
fn sweep_output_dirs(batch: &BatchFile, output_root: &Path, inventory: &Path) -> Result<()> {
    let mut parents: Vec<&Path> = batch
        .certs
        .iter()
        .map(|c| c.output_dir.as_deref().unwrap_or(output_root))
        .chain([inventory])
        .collect();
    parents.sort_unstable();
    parents.dedup();
    for parent in parents {
        let removed = certfleet_issue::bundle::sweep(parent)?;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed leftovers of interrupted runs in {}",
                parent.display()
            );
        }
    }
    Ok(())
}

/// The solvers the batch's certificates ask for (one DNS plugin per run).
async fn solvers(
    ctx: &Context,
    args: &BatchRunArgs,
    batch: &BatchFile,
) -> Result<(RunSolvers, Option<Arc<certfleet_dns01_host::PluginSolver>>)> {
    let mut out = RunSolvers::default();
    let mut plugin_solver = None;
    let mut plugins: Vec<&str> = batch
        .certs
        .iter()
        .filter(|c| c.challenge != Some(Challenge::Http01))
        .filter_map(|c| c.dns_plugin.as_deref())
        .collect();
    plugins.sort_unstable();
    plugins.dedup();
    match plugins.as_slice() {
        [] => {}
        [plugin] => {
            let solver = crate::dns::load_solver(&ctx.settings, plugin).await?;
            tracing::info!(plugin = solver.name(), "dns-01 through the plugin");
            let solver = Arc::new(solver);
            plugin_solver = Some(solver.clone());
            out.dns01 = Some(solver);
            out.propagation = crate::dns::propagation(&ctx.settings)?;
        }
        many => bail!(
            "the batch uses several DNS plugins ({}); run one batch per plugin",
            many.join(", ")
        ),
    }
    if batch
        .certs
        .iter()
        .any(|c| c.challenge == Some(Challenge::Http01))
    {
        out.http01 = Some(match http01_plan(ctx, &args.solver, None)? {
            Http01Plan::Standalone(addr) => {
                // Bound only while some job serves a challenge (a batch may wait for days).
                Arc::new(certfleet_http01::OnDemandServer::new(addr, Default::default()).await?)
            }
            Http01Plan::Webroot(dir) => Arc::new(certfleet_http01::Webroot::new(&dir)?),
        });
    }
    Ok((out, plugin_solver))
}

/// Records every issued certificate in the renewal inventory, so `renew --all` covers
/// batch certificates too.
fn inventory_writer(
    ctx: &Context,
    args: &BatchRunArgs,
    hooks: &hooks::BatchHooks,
) -> InventoryWriter {
    InventoryWriter {
        deploy_hooks: hooks.per_cert().clone(),
        state: ctx.state.clone(),
        http_listen: args.solver.http_listen.map(|a| a.to_string()),
        webroot: args.solver.webroot.clone(),
        directory: ctx.directory().to_owned(),
        written: Default::default(),
    }
}

async fn all_jobs(store: &dyn StateStore, batch: BatchId) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    // Bounded: every page advances past the last id seen.
    loop {
        let page = store
            .list_jobs(batch, jobs.last().map(|j: &Job| j.id), 500)
            .await?;
        if page.is_empty() {
            return Ok(jobs);
        }
        jobs.extend(page);
    }
}

fn format_counts(counts: &StatusCounts) -> String {
    JobStatus::ALL
        .iter()
        .filter(|s| counts.get(**s) > 0)
        .map(|s| format!("{s} {}", counts.get(*s)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A progress bar with counts per state and an ETA on a terminal; a log line every few
/// seconds otherwise. Runs until aborted.
async fn show_progress(store: Arc<dyn StateStore>, batch: BatchId) {
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{bar:40.cyan/blue} {pos}/{len} done  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    });
    let every = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Ok(counts) = store.status_counts(batch).await else {
            continue;
        };
        let done = counts.get(JobStatus::Issued) + counts.get(JobStatus::Failed);
        // With certificates deferred, when the next one is due.
        let mut message = format_counts(&counts);
        if counts.get(JobStatus::Deferred) > 0
            && let Ok(Some(next)) = store.next_due(batch, OffsetDateTime::now_utc()).await
        {
            message.push_str(&format!("; next due {}", rfc3339(next)));
        }
        match &bar {
            Some(bar) => {
                bar.set_length(counts.total());
                bar.set_position(done);
                bar.set_message(message);
            }
            None => tracing::info!("progress: {done}/{} ({message})", counts.total()),
        }
    }
}

/// Batches and their counts per state, read while a run may be going.
async fn status(ctx: &Context, list_jobs: bool, store_flag: Option<&str>) -> Result<()> {
    let store = ctx.open_store(store_flag).await?;
    let store = store.as_ref();
    let mut out = Vec::new();
    let batches = store.batches().await?;
    for b in &batches {
        let counts = store.status_counts(b.id).await?;
        let per_state: serde_json::Map<String, serde_json::Value> = counts
            .0
            .iter()
            .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
            .collect();
        let next = store.next_due(b.id, OffsetDateTime::now_utc()).await?;
        let held = held_per_node(&all_jobs(store, b.id).await?);
        out.push(json!({
            "batch": b.id.0,
            "file": b.name,
            "created_at": rfc3339(b.created_at),
            "total": counts.total(),
            "states": per_state,
            "next_due": next.map(rfc3339),
            "held_by_node": held,
        }));
    }
    let mut value = json!({ "store": store.location(), "batches": out });
    if let Some(url) = ctx.store_url(store_flag).filter(|u| is_postgres_url(u)) {
        value["nodes"] = node_list(ctx, &url).await?;
    }
    if list_jobs && let Some(b) = batches.last() {
        let jobs = all_jobs(store, b.id).await?;
        let now = OffsetDateTime::now_utc();
        let mut deployed = fleet::job_details(store, b.id).await?;
        value["jobs"] = jobs
            .iter()
            .map(|j| {
                json!({
                    "names": j.spec.names,
                    "state": j.status.as_str(),
                    "order_url": j.order_url,
                    "attempts": j.attempts,
                    "error": j.last_error,
                    "deferred_until": j.deferred_until.map(rfc3339),
                    "node": j.lease.as_ref().filter(|l| l.expires_at > now).map(|l| &l.node),
                    "lease_expires": j.lease.as_ref().map(|l| rfc3339(l.expires_at)),
                    "issued_by": j.issued.as_ref().and_then(|i| i.node.clone()),
                    "serial": j.issued.as_ref().map(|i| &i.serial),
                    "not_after": j.issued.as_ref().map(|i| rfc3339(i.not_after)),
                    "cert_dir": j.issued.as_ref().map(|i| &i.cert_dir),
                    "deployed": deployed.remove(&j.id).map_or_else(|| json!([]), |d| d["deployed"].clone()),
                })
            })
            .collect();
    }
    super::print_json(&value)
}

/// Jobs per node holding a live lease on them (several nodes share a PostgreSQL store).
fn held_per_node(jobs: &[Job]) -> serde_json::Map<String, serde_json::Value> {
    let now = OffsetDateTime::now_utc();
    let mut held = std::collections::BTreeMap::<&str, u64>::new();
    for l in jobs.iter().filter_map(|j| j.lease.as_ref()) {
        if l.expires_at > now {
            *held.entry(l.node.as_str()).or_default() += 1;
        }
    }
    held.into_iter()
        .map(|(n, c)| (n.to_owned(), json!(c)))
        .collect()
}

/// The nodes registered in a PostgreSQL store, with their heartbeats.
async fn node_list(ctx: &Context, url: &str) -> Result<serde_json::Value> {
    let nodes = ctx.open_postgres(url).await?.nodes().await?;
    Ok(nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.node,
                "host": n.host,
                "pid": n.pid,
                "started_at": rfc3339(n.started_at),
                "heartbeat_at": rfc3339(n.heartbeat_at),
                "ended_at": n.ended_at.map(rfc3339),
            })
        })
        .collect())
}

/// dns-persist-01 certificates whose records are not served by every authoritative server
/// are left out before anything is ordered, each reported with the exact record to
/// publish. Returns how many were left out.
async fn drop_unpublished(ctx: &Context, batch: &mut BatchFile) -> Result<usize> {
    if !batch
        .certs
        .iter()
        .any(|c| c.challenge == Some(Challenge::DnsPersist01))
    {
        return Ok(0);
    }
    let (client, account) = ctx.account().await?;
    let issuer = crate::commands::persist::issuer_name(ctx, &client, None)?;
    let mut records = Vec::new();
    for c in batch
        .certs
        .iter()
        .filter(|c| c.challenge == Some(Challenge::DnsPersist01))
    {
        for name in &c.names {
            records.push(crate::commands::persist::record_for(
                &account, &issuer, name,
            )?);
        }
    }
    let missing: Vec<_> = crate::commands::persist::missing_records(ctx, &records)
        .await?
        .into_iter()
        .filter(|(_, servers)| !servers.is_empty())
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let before = batch.certs.len();
    batch.certs.retain(|c| {
        c.challenge != Some(Challenge::DnsPersist01)
            || !c
                .names
                .iter()
                .any(|n| missing.iter().any(|(r, _)| &r.domain == n))
    });
    for (r, servers) in &missing {
        println!("not ordered: {}: publish {}", r.domain, r.zone_line(3600));
        tracing::warn!(name = %r.domain, "dns-persist-01 record missing: {}", servers.join("; "));
    }
    Ok(before - batch.certs.len())
}

/// Logs the plugin's own counters (UPDATE messages, DNS queries) after `issue` or a batch.
pub(crate) async fn log_provider_cost(solver: &certfleet_dns01_host::PluginSolver) {
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
