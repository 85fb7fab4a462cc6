//! `certfleet`: ACME certificate automation. See docs/cli.md for the command contract.

mod cli;
mod commands;
mod config;
mod context;
mod dns;
mod hooks;
mod lock;
mod logging;
mod names;
mod state;
mod stop;

use std::process::ExitCode;

use crate::cli::{BatchCommand, Cli, Command};
use crate::config::Settings;
use crate::context::Context;
use crate::stop::{Interrupted, Stop};
use clap::Parser;

// A batch allocates and frees many small buffers per request (JSON, JWS, HTTP/2 frames,
// PEM): mimalloc spends less CPU on that than glibc's allocator (docs/benchmarks.md).
// Built without transparent huge pages, which tripled the peak RSS of a batch (24 → 75
// MiB; 30 MiB without). Plugins keep their own allocator: the ABI frees memory on the side
// that allocated it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_tss_logging(&cli);
    logging::init(&cli);
    // Released on every way out of main, panics included.
    let hardware = KeyHardware;
    // reqwest is built without a default rustls provider so the whole tree uses ring.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    // One async thread: the protocol work of a certificate is a few hundred microseconds
    // of CPU spread over many short steps, and handing those steps between worker threads
    // cost more CPU than the parallelism gave (docs/benchmarks.md). Work that takes long
    // or blocks (RSA, key tokens, TPMs, plugins, file writes) runs on the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run_until_signal(cli));
    // Blocking token calls still running (a signal cut a command short) get a moment to
    // return before their modules are finalized.
    runtime.shutdown_timeout(RUNTIME_DRAIN);
    drop(hardware);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Interrupted(code, _)) = e.downcast_ref::<Interrupted>() {
                eprintln!("error: {e}");
                return ExitCode::from(*code);
            }
            if let Some(stop::Exit(code, _)) = e.downcast_ref::<stop::Exit>() {
                eprintln!("error: {e}");
                return ExitCode::from(*code);
            }
            eprintln!("error: {e}");
            // Many errors already quote their source in their message; print a cause only
            // when it adds something.
            let mut shown = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                shown = text;
            }
            ExitCode::FAILURE
        }
    }
}

/// How long blocking work may run on after a command ended or was interrupted.
const RUNTIME_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Key hardware used by this process: on drop, every PKCS#11 session is closed, tokens
/// this process logged in to are logged out, every module gets `C_Finalize`, and every
/// object loaded in a TPM is flushed. A TPM reached without a resource manager (or
/// tpm2-pkcs11 straight to one) keeps nothing of a finished certfleet run.
struct KeyHardware;

impl Drop for KeyHardware {
    fn drop(&mut self) {
        let pkcs11 = certfleet_keys_pkcs11::shutdown();
        let tpms = certfleet_keys_tpm::shutdown();
        tracing::debug!(
            pkcs11_modules = pkcs11.modules,
            pkcs11_sessions = pkcs11.sessions,
            pkcs11_logouts = pkcs11.logouts,
            tpms,
            "key hardware released"
        );
    }
}

/// Runs the command unless SIGINT or SIGTERM comes first; then the command's future is
/// dropped and the caller releases the key hardware as on any other exit. `batch run`
/// gets the first signal through [`Stop`] and ends on its own (report written, exit 128 +
/// signal); a second signal cuts it short too.
async fn run_until_signal(cli: Cli) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let graceful = matches!(&cli.command, Command::Batch(BatchCommand::Run(_)));
    let stop = Stop::new();
    let command = run(cli, stop.clone());
    tokio::pin!(command);
    // Bounded: the second signal (or the command's end) returns.
    loop {
        let signal = tokio::select! {
            result = &mut command => return result,
            _ = interrupt.recv() => Interrupted(130, "SIGINT"),
            _ = terminate.recv() => Interrupted(143, "SIGTERM"),
        };
        if !graceful || !stop.request(signal) {
            return Err(signal.into());
        }
        tracing::warn!(
            "{}: stopping the batch (no new orders; the orders in flight reach a checkpoint, \
             then the report is written); send it again to stop at once",
            signal.1
        );
    }
}

/// The TPM libraries (tpm2-tss) print their own errors to stderr; certfleet reports TPM
/// errors itself. Quiet them unless the user set `TSS2_LOG` or asked for trace output.
fn quiet_tss_logging(cli: &Cli) {
    if cli.verbose < 2 && std::env::var_os("TSS2_LOG").is_none() {
        // SAFETY: called at the start of main, before the runtime or any other thread
        // exists, so nothing can read the environment concurrently.
        unsafe { std::env::set_var("TSS2_LOG", "all+none") };
    }
}

async fn run(cli: Cli, stop: Stop) -> anyhow::Result<()> {
    let settings = Settings::load(&cli)?;
    let ctx = Context::new(settings)?;
    let quiet = cli.quiet;
    match cli.command {
        Command::Key(cmd) => commands::key::run(&ctx, cmd).await,
        Command::Account(cmd) => commands::account::run(&ctx, cmd).await,
        Command::Issue(args) => commands::issue::run(&ctx, args).await,
        Command::Renew(args) => commands::renew::run(&ctx, args, quiet).await,
        Command::Revoke(args) => commands::revoke::run(&ctx, args).await,
        Command::Certificates(args) => commands::certificates::list(&ctx, args),
        Command::Delete(args) => commands::certificates::delete(&ctx, args).await,
        Command::Plugin(cmd) => commands::plugin::run(&ctx, cmd).await,
        Command::Batch(cmd) => commands::batch::run(&ctx, cmd, &stop).await,
        Command::Persist(cmd) => commands::persist::run(&ctx, cmd).await,
    }
}
