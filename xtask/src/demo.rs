//! `cargo xtask demo [--dir DIR]`: the whole flow against a local Pebble, step by step: the
//! account key is generated on a SoftHSM token and never leaves it, a private BIND serves
//! the demo zone, Pebble validates through it, and certfleet proves the names (one of them a
//! wildcard) by dns-01 through the `rfc2136` plugin with a TSIG key.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use certfleet_testenv::{
    Bind, BindOptions, BindZone, Pebble, PebbleOptions, SoftHsm, openssl_verify,
};

use crate::util::{cargo, display, ensure_packages, output, run_cmd, runtime, step, target_dir};

const ZONE: &str = "demo.certfleet.test";
const NAMES: [&str; 2] = ["demo.certfleet.test", "*.demo.certfleet.test"];
const CONTACT: &str = "mailto:admin@demo.certfleet.test";
const TOKEN: &str = "certfleet-demo";
/// A demo token's PIN; it goes into a 0600 file the key reference points at.
const DEMO_PIN: &str = "4711-demo";
/// Certificates in the demo batch (one name each, all in the demo zone).
const BATCH_SIZE: usize = 200;

pub fn run(args: &[String]) -> Result<()> {
    let dir = match args {
        [] => target_dir().join("demo"),
        [flag, d] if flag == "--dir" => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                std::env::current_dir()?.join(d)
            }
        }
        _ => bail!("usage: cargo xtask demo [--dir DIR]"),
    };
    step("packages (pebble, openssl)", ensure_packages)?;
    step(
        "cargo build -p certfleet-cli -p certfleet-plugin-rfc2136",
        || {
            run_cmd(cargo().args([
                "build",
                "-p",
                "certfleet-cli",
                "-p",
                "certfleet-plugin-rfc2136",
            ]))
        },
    )?;
    let bin = target_dir().join("debug").join("certfleet");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    prepare_dir(&dir)?;
    runtime()?.block_on(demo(&bin, &dir))
}

/// Creates `dir` and removes what a previous demo left in it.
fn prepare_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for sub in ["state", "cert", "pebble", "bind", "softhsm"] {
        let p = dir.join(sub);
        if p.exists() {
            fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for file in ["pebble-root.pem", "certfleet.toml"] {
        let p = dir.join(file);
        if p.exists() {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

async fn demo(bin: &Path, dir: &Path) -> Result<()> {
    println!(
        "==> creating a SoftHSM token {TOKEN:?} for the account key (files in {})",
        dir.join("softhsm").display()
    );
    let hsm = SoftHsm::new_in(&dir.join("softhsm")).context("setting up SoftHSM")?;
    hsm.init_token(TOKEN, DEMO_PIN)?;
    let pin_file = hsm.pin_file("user.pin", DEMO_PIN)?;
    println!("    module:       {}", hsm.module_path().display());
    println!("    PIN file:     {} (mode 0600)", pin_file.display());
    println!(
        "==> starting BIND for {ZONE} with TSIG key acme-key (files in {})",
        dir.join("bind").display()
    );
    let bind = Bind::start(BindOptions {
        zones: vec![BindZone::new(ZONE)],
        work_dir: Some(dir.join("bind")),
        ..BindOptions::default()
    })
    .await
    .context("starting BIND")?;
    println!("    primary:      {}", bind.primary());
    println!("    TSIG key:     {}", bind.key_file("acme-key")?.display());
    println!(
        "==> starting Pebble + pebble-challtestsrv, resolving through BIND (files in {})",
        dir.join("pebble").display()
    );
    let pebble = Pebble::start(
        PebbleOptions::default()
            .work_dir(dir.join("pebble"))
            .dns_server(bind.primary().to_string()),
    )
    .await
    .context("starting Pebble")?;
    println!("    directory:    {}", pebble.directory_url());
    println!("    TLS root:     {}", pebble.tls_root_pem_path().display());
    println!("    http-01 port: {}", pebble.http01_port());

    let state = dir.join("state");
    let config = dir.join("certfleet.toml");
    let plugin_dir = bin.parent().context("the binary has no directory")?;
    let ns = bind
        .nameserver_addresses()
        .into_iter()
        .map(|(host, addr)| format!("\"{host}\" = [\"{addr}\"]"))
        .collect::<Vec<_>>()
        .join(", ");
    fs::write(
        &config,
        format!(
            "[dns01]\nplugin = \"rfc2136\"\nplugin_dirs = [\"{}\"]\n\n\
             [dns01.propagation]\ntimeout_secs = 30\ninterval_millis = 250\n\
             discovery_resolvers = [\"{primary}\"]\nnameserver_addresses = {{ {ns} }}\n\n\
             [plugins.rfc2136]\nserver = \"{primary}\"\nkey_file = \"{}\"\n",
            plugin_dir.display(),
            bind.key_file("acme-key")?.display(),
            primary = bind.primary(),
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    println!("==> configuration {}:", config.display());
    for line in fs::read_to_string(&config)?.lines() {
        println!("    {line}");
    }
    let certfleet = |args: &[&str]| -> Command {
        let mut cmd = Command::new(bin);
        let (k, v) = hsm.env();
        cmd.env(k, v)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .arg("--directory")
            .arg(pebble.directory_url())
            .arg("--ca-root")
            .arg(pebble.tls_root_pem_path())
            .args(args);
        cmd
    };
    let show = |what: &str, mut cmd: Command| -> Result<String> {
        println!("==> {what}\n    $ {}", display(&cmd));
        let out = output(&mut cmd)?;
        for line in out.lines() {
            println!("    {line}");
        }
        Ok(out)
    };

    let pin_source = format!("file:{}", pin_file.display());
    let mut generate = certfleet(&["key", "generate", "--backend", "pkcs11", "--alg", "es256"]);
    generate
        .arg("--module")
        .arg(hsm.module_path())
        .args(["--token", TOKEN, "--label", "acme-account"])
        .args(["--pin-source", &pin_source]);
    let key_ref = show(
        "generating the account key on the token (it never leaves it)",
        generate,
    )?;
    let key_ref = key_ref
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .context("`certfleet key generate` printed no key reference")?;

    show(
        "registering the ACME account",
        certfleet(&[
            "account",
            "register",
            "--key",
            &key_ref,
            "--contact",
            CONTACT,
            "--agree-tos",
        ]),
    )?;

    let out_dir = dir.join("cert");
    let mut issue_args = vec!["issue"];
    for n in NAMES {
        issue_args.extend(["--name", n]);
    }
    issue_args.extend(["--challenge", "dns-01", "--dns-plugin", "rfc2136", "--out"]);
    show(
        "issuing a certificate (dns-01 through the rfc2136 plugin; one name is a wildcard)",
        certfleet(&issue_args).arg_path(&out_dir),
    )?;
    let left = bind.txt(bind.primary(), &format!("_acme-challenge.{ZONE}."))?;
    if !left.is_empty() {
        bail!("challenge TXT records left in {ZONE}: {left:?}");
    }
    println!("    no _acme-challenge TXT record left in {ZONE}");

    println!(
        "==> fetching Pebble's issuing root ({}/roots/0)",
        pebble.management_url()
    );
    let roots = pebble.issuing_roots().await?;
    let root_pem = dir.join("pebble-root.pem");
    fs::write(&root_pem, roots.first().context("Pebble served no root")?)
        .with_context(|| format!("writing {}", root_pem.display()))?;

    let (cert, chain) = (out_dir.join("cert.pem"), out_dir.join("chain.pem"));
    let verify = format!(
        "openssl verify -CAfile {} -untrusted {} {}",
        root_pem.display(),
        chain.display(),
        cert.display()
    );
    println!("==> verifying\n    $ {verify}");
    openssl_verify(&root_pem, &chain, &cert)?;
    println!("    {}: OK", cert.display());

    let report = batch(dir, &certfleet)?;

    println!("\ndemo complete:");
    println!("  account key      {key_ref} (on SoftHSM, not exportable)");
    println!("  state directory  {}", state.display());
    println!("  certificate      {}", cert.display());
    println!("  chain            {}", chain.display());
    println!(
        "  full chain       {}",
        out_dir.join("fullchain.pem").display()
    );
    println!(
        "  private key      {}",
        out_dir.join("privkey.pem").display()
    );
    println!("  metadata         {}", out_dir.join("meta.json").display());
    println!(
        "  batch report     {} ({BATCH_SIZE} certificates)",
        report.display()
    );
    println!("  Pebble's root    {}", root_pem.display());
    println!("  Pebble's logs    {}", pebble.work_dir().display());
    println!("check it yourself (Pebble's root stays valid as a file; Pebble and BIND stop now):");
    println!("  {verify}");
    drop(pebble);
    drop(bind);
    drop(hsm);
    println!("Pebble and BIND stopped; the demo token was removed with them");
    Ok(())
}

/// Plans a batch of [`BATCH_SIZE`] one-name certificates under Let's Encrypt's production
/// limits, then runs it through the same account (on the token) and plugin under the
/// staging limits; the progress bar shows when stderr is a terminal. Returns the report's
/// path.
fn batch(dir: &Path, certfleet: &dyn Fn(&[&str]) -> Command) -> Result<PathBuf> {
    let file = dir.join("batch.txt");
    let names: Vec<String> = (0..BATCH_SIZE).map(|i| format!("b{i:03}.{ZONE}")).collect();
    fs::write(&file, names.join("\n") + "\n")
        .with_context(|| format!("writing {}", file.display()))?;
    let report = dir.join("batch-report.json");
    let file_s = file.to_string_lossy().into_owned();
    let report_s = report.to_string_lossy().into_owned();
    // Under Let's Encrypt's production limits (50 certificates per registered domain per
    // week) this batch would take weeks; the plan says so, and the run uses the staging
    // limits, which the governor still enforces.
    let mut plan = certfleet(&["batch", "plan", &file_s, "--rate-limits", "letsencrypt"]);
    println!(
        "==> planning the batch under Let's Encrypt's production limits\n    $ {}",
        display(&plan)
    );
    for line in output(&mut plan)?.lines() {
        println!("    {line}");
    }
    let mut cmd = certfleet(&[
        "batch",
        "run",
        &file_s,
        "--dns-plugin",
        "rfc2136",
        "--rate-limits",
        "letsencrypt-staging",
        "--report",
        &report_s,
    ]);
    println!(
        "==> a batch of {BATCH_SIZE} certificates (one process, 32 orders in flight, dns-01 records \
         of concurrent orders sent to BIND in one UPDATE per round)\n    $ {}",
        display(&cmd)
    );
    run_cmd(&mut cmd)?;
    let text =
        fs::read_to_string(&report).with_context(|| format!("reading {}", report.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).context("the batch report is not JSON")?;
    let certs = v["certificates"]
        .as_array()
        .context("report without certificates")?;
    let issued = certs.iter().filter(|c| c["state"] == "issued").count();
    println!(
        "    report: {issued} of {} certificates issued",
        certs.len()
    );
    if issued != BATCH_SIZE {
        bail!("the demo batch issued {issued} of {BATCH_SIZE} certificates");
    }
    Ok(report)
}

trait ArgPath {
    fn arg_path(self, p: &Path) -> Self;
}

impl ArgPath for Command {
    fn arg_path(mut self, p: &Path) -> Self {
        self.arg(p);
        self
    }
}
