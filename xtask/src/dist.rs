//! `cargo xtask dist`: the install artifacts. A staged tree laid out as the plugin search
//! path expects (`usr/bin/certfleet`, `usr/lib/certfleet/plugins/`), the systemd units and
//! the cron line, packed as a tarball (unpack at `/`) and a Debian package built with
//! `dpkg-deb` from the same tree. Only the real plugins ship, never the test plugins.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, run_cmd, target_dir, workspace_root};

/// The DNS-01 plugins a release ships.
pub const PLUGINS: &[&str] = &["cloudflare", "exec", "powerdns", "rfc2136", "route53"];

const USAGE: &str =
    "usage: cargo xtask dist [--dev] [--no-build] [--from DIR] [--out DIR] [--no-deb]";

pub fn run(args: &[String]) -> Result<()> {
    let mut release = true;
    let mut build = true;
    let mut deb = true;
    let mut from: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dev" => release = false,
            "--no-build" => build = false,
            "--no-deb" => deb = false,
            "--from" => from = Some(it.next().context("--from needs a directory")?.into()),
            "--out" => out = Some(it.next().context("--out needs a directory")?.into()),
            other => bail!("dist: unknown argument {other:?}\n{USAGE}"),
        }
    }
    let profile = if release { "release" } else { "debug" };
    if build {
        let mut cmd = cargo();
        cmd.arg("build").arg("-p").arg("certfleet-cli");
        for p in PLUGINS {
            cmd.arg("-p").arg(format!("certfleet-plugin-{p}"));
        }
        if release {
            cmd.arg("--release");
        }
        run_cmd(&mut cmd)?;
    }
    let from = from.unwrap_or_else(|| target_dir().join(profile));
    let out = out.unwrap_or_else(|| target_dir().join("dist"));
    let version = env!("CARGO_PKG_VERSION");
    let stage = out.join(format!("certfleet-{version}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    stage_tree(&from, &stage)?;
    let tarball = out.join(format!(
        "certfleet-{version}-linux-{}.tar.gz",
        std::env::consts::ARCH
    ));
    run_cmd(
        Command::new("tar")
            .arg("--owner=0")
            .arg("--group=0")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&stage)
            .arg("usr")
            .arg("lib")
            .arg("etc"),
    )?;
    println!("{}", tarball.display());
    if deb {
        let debian = stage.join("DEBIAN");
        fs::create_dir_all(&debian)?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        fs::write(
            debian.join("control"),
            format!(
                "Package: certfleet\nVersion: {version}\nArchitecture: {arch}\nMaintainer: certfleet maintainers <certfleet@localhost>\nSection: admin\nPriority: optional\nDepends: libc6\nDescription: ACME certificate automation\n certfleet obtains and renews certificates from ACME CAs (RFC 8555),\n with deploy hooks, DNS-01 plugins and hardware keys.\n"
            ),
        )?;
        fs::write(debian.join("conffiles"), "/etc/cron.d/certfleet\n")?;
        let deb_path = out.join(format!("certfleet_{version}_{arch}.deb"));
        run_cmd(
            Command::new("dpkg-deb")
                .arg("--root-owner-group")
                .arg("--build")
                .arg(&stage)
                .arg(&deb_path),
        )?;
        fs::remove_dir_all(&debian)?;
        println!("{}", deb_path.display());
    }
    Ok(())
}

/// Lays the files out under `stage` as they go under `/`.
pub fn stage_tree(from: &Path, stage: &Path) -> Result<()> {
    let root = workspace_root();
    let copy = |src: &Path, rel: &str, mode: u32| -> Result<()> {
        let dst = stage.join(rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(src, &dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let bin = from.join("certfleet");
    if !bin.is_file() {
        bail!("{}: not built (run without --no-build)", bin.display());
    }
    copy(&bin, "usr/bin/certfleet", 0o755)?;
    // Debug information stays out of the package (a dev build is mostly that).
    run_cmd(
        Command::new("strip")
            .arg("--strip-debug")
            .arg(stage.join("usr/bin/certfleet")),
    )?;
    for p in PLUGINS {
        let file = format!("libcertfleet_plugin_{}.so", p.replace('-', "_"));
        copy(
            &from.join(&file),
            &format!("usr/lib/certfleet/plugins/{file}"),
            0o644,
        )?;
    }
    for unit in ["certfleet-renew.service", "certfleet-renew.timer"] {
        copy(
            &root.join("configs/systemd").join(unit),
            &format!("lib/systemd/system/{unit}"),
            0o644,
        )?;
    }
    copy(
        &root.join("configs/certfleet.cron"),
        "usr/share/doc/certfleet/certfleet.cron",
        0o644,
    )?;
    // The cron file is installed disabled (commented out): the timer is the default.
    let cron = fs::read_to_string(root.join("configs/certfleet.cron"))?;
    let disabled: String = cron
        .lines()
        .map(|l| {
            if l.starts_with('#') || l.is_empty() {
                format!("{l}\n")
            } else {
                format!("#{l}\n")
            }
        })
        .collect();
    fs::create_dir_all(stage.join("etc/cron.d"))?;
    fs::write(stage.join("etc/cron.d/certfleet"), disabled)?;
    copy(
        &root.join("README.md"),
        "usr/share/doc/certfleet/README.md",
        0o644,
    )?;
    copy(
        &root.join("configs/certfleet.example.toml"),
        "usr/share/doc/certfleet/certfleet.example.toml",
        0o644,
    )?;
    Ok(())
}
