//! `cargo xtask demo [--dir DIR]`: the whole flow against a local Pebble, step by step.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use certfleet_testenv::{Pebble, PebbleOptions, openssl_verify};

use crate::util::{cargo, display, ensure_packages, output, run_cmd, runtime, step, target_dir};

const NAMES: [&str; 2] = ["demo.certfleet.test", "www.demo.certfleet.test"];
const CONTACT: &str = "mailto:admin@demo.certfleet.test";

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
    step("cargo build -p certfleet-cli", || {
        run_cmd(cargo().args(["build", "-p", "certfleet-cli"]))
    })?;
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
    for sub in ["state", "cert", "pebble"] {
        let p = dir.join(sub);
        if p.exists() {
            fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for file in ["account.pem", "pebble-root.pem"] {
        let p = dir.join(file);
        if p.exists() {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

async fn demo(bin: &Path, dir: &Path) -> Result<()> {
    println!(
        "==> starting Pebble + pebble-challtestsrv (files in {})",
        dir.join("pebble").display()
    );
    let pebble = Pebble::start(PebbleOptions::default().work_dir(dir.join("pebble")))
        .await
        .context("starting Pebble")?;
    println!("    directory:    {}", pebble.directory_url());
    println!("    TLS root:     {}", pebble.tls_root_pem_path().display());
    println!("    http-01 port: {}", pebble.http01_port());

    let state = dir.join("state");
    let certfleet = |args: &[&str]| -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--state-dir")
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

    let account_key = dir.join("account.pem");
    let key_ref = show(
        "generating the account key",
        certfleet(&["key", "generate", "--alg", "es256", "--out"]).arg_path(&account_key),
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
    let listen = format!("127.0.0.1:{}", pebble.http01_port());
    let mut issue_args = vec!["issue"];
    for n in NAMES {
        issue_args.extend(["--name", n]);
    }
    issue_args.extend(["--challenge", "http-01", "--http-listen", &listen, "--out"]);
    show(
        "issuing a certificate (http-01, built-in server)",
        certfleet(&issue_args).arg_path(&out_dir),
    )?;

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

    println!("\ndemo complete:");
    println!("  account key      {}", account_key.display());
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
    println!("  Pebble's root    {}", root_pem.display());
    println!("  Pebble's logs    {}", pebble.work_dir().display());
    println!("check it yourself (Pebble's root stays valid as a file; Pebble itself stops now):");
    println!("  {verify}");
    drop(pebble);
    println!("Pebble stopped");
    Ok(())
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
