//! `cargo xtask advisories check|refresh`: RustSec advisories against Cargo.lock, offline.
//!
//! The repository keeps the advisory *data* (not a tool) in `xtask/advisories/db.toml`: the
//! front matter of every RustSec advisory (id, package, title, kind, patched/unaffected
//! ranges), about 1,200 entries, from a pinned commit of github.com/rustsec/advisory-db
//! (CC0-1.0; entries marked CC-BY-4.0 keep their URL as attribution). `check` (run by
//! `cargo xtask ci`) needs no network and no extra binary: it reads Cargo.lock, matches
//! each registry package against the entries with `semver`, and fails on any vulnerability,
//! `unmaintained` or `unsound` advisory not listed with a reason in
//! `xtask/advisories/ignore.toml`. `refresh` rewrites db.toml from an advisory-db checkout
//! (`--from DIR`: a work tree or a bare/mirror git directory), or clones it when online.
//! The trade-off against `cargo deny`: nothing to compile or install in CI and no network,
//! but the data is only as fresh as the last `refresh` (the date is printed by `check`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::util::workspace_root;

#[derive(Debug, Serialize, Deserialize)]
struct Db {
    source: String,
    commit: String,
    date: String,
    #[serde(default, rename = "advisory")]
    advisories: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: String,
    package: String,
    title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    informational: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    withdrawn: bool,
    #[serde(default)]
    patched: Vec<String>,
    #[serde(default)]
    unaffected: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    license: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Ignores {
    #[serde(default)]
    ignore: Vec<Ignore>,
}

#[derive(Debug, Deserialize)]
struct Ignore {
    id: String,
    reason: String,
}

fn data_dir() -> PathBuf {
    workspace_root().join("xtask").join("advisories")
}

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("check") | None => check(),
        Some("refresh") => {
            let from = match args.get(1).map(String::as_str) {
                Some("--from") => Some(PathBuf::from(
                    args.get(2).context("--from needs a directory")?,
                )),
                Some(other) => bail!("advisories refresh: unknown argument {other:?}"),
                None => None,
            };
            refresh(from.as_deref())
        }
        Some(other) => bail!("advisories: unknown subcommand {other:?} (check | refresh)"),
    }
}

/// A registry package of Cargo.lock.
struct Locked {
    name: String,
    version: semver::Version,
}

fn locked_packages(lock: &Path) -> Result<Vec<Locked>> {
    #[derive(Deserialize)]
    struct Lock {
        package: Vec<Pkg>,
    }
    #[derive(Deserialize)]
    struct Pkg {
        name: String,
        version: String,
        source: Option<String>,
    }
    let text =
        std::fs::read_to_string(lock).with_context(|| format!("reading {}", lock.display()))?;
    let parsed: Lock =
        toml::from_str(&text).with_context(|| format!("parsing {}", lock.display()))?;
    parsed
        .package
        .into_iter()
        .filter(|p| {
            p.source
                .as_deref()
                .is_some_and(|s| s.starts_with("registry+"))
        })
        .map(|p| {
            let version = semver::Version::parse(&p.version)
                .with_context(|| format!("{} version {:?}", p.name, p.version))?;
            Ok(Locked {
                name: p.name,
                version,
            })
        })
        .collect()
}

/// Whether `version` is affected: in no patched and no unaffected range.
fn affected(entry: &Entry, version: &semver::Version) -> Result<bool> {
    for range in entry.patched.iter().chain(&entry.unaffected) {
        let req = semver::VersionReq::parse(range)
            .with_context(|| format!("{}: range {range:?}", entry.id))?;
        if req.matches(version) {
            return Ok(false);
        }
    }
    Ok(true)
}

pub fn check() -> Result<()> {
    let dir = data_dir();
    let db: Db = toml::from_str(
        &std::fs::read_to_string(dir.join("db.toml"))
            .context("reading xtask/advisories/db.toml (run `cargo xtask advisories refresh`)")?,
    )
    .context("parsing xtask/advisories/db.toml")?;
    let ignores: Ignores = toml::from_str(
        &std::fs::read_to_string(dir.join("ignore.toml"))
            .context("reading xtask/advisories/ignore.toml")?,
    )
    .context("parsing xtask/advisories/ignore.toml")?;
    for i in &ignores.ignore {
        if i.reason.trim().len() < 20 {
            bail!("ignore.toml: {} needs a real reason", i.id);
        }
    }
    let packages = locked_packages(&workspace_root().join("Cargo.lock"))?;
    let mut by_package: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in db.advisories.iter().filter(|e| !e.withdrawn) {
        by_package.entry(e.package.as_str()).or_default().push(e);
    }
    println!(
        "advisories: {} RustSec entries (advisory-db {} of {}), {} registry packages in Cargo.lock",
        db.advisories.len(),
        &db.commit[..db.commit.len().min(12)],
        db.date,
        packages.len()
    );
    let mut failures = Vec::new();
    let mut used_ignores = Vec::new();
    for p in &packages {
        for e in by_package.get(p.name.as_str()).into_iter().flatten() {
            if !affected(e, &p.version)? {
                continue;
            }
            let kind = e.informational.as_deref().unwrap_or("vulnerability");
            let line = format!("{} {} {}: {kind}: {}", e.id, p.name, p.version, e.title);
            if let Some(i) = ignores.ignore.iter().find(|i| i.id == e.id) {
                println!("  ignored  {line}\n           reason: {}", i.reason.trim());
                used_ignores.push(i.id.clone());
            } else if kind == "notice" {
                println!("  notice   {line}");
            } else {
                println!("  FAIL     {line}");
                failures.push(line);
            }
        }
    }
    for i in &ignores.ignore {
        if !used_ignores.contains(&i.id) {
            println!(
                "  warning: ignore.toml lists {} but nothing in Cargo.lock is affected any more; remove it",
                i.id
            );
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} advisory(ies) affect Cargo.lock: upgrade, or add a reasoned entry to xtask/advisories/ignore.toml",
            failures.len()
        );
    }
    println!("advisories: ok");
    Ok(())
}

/// Advisory files (path, text) at HEAD of an advisory-db git checkout, with its commit
/// and date.
struct Snapshot {
    files: Vec<(String, String)>,
    commit: String,
    date: String,
}

fn advisory_files(from: &Path) -> Result<Snapshot> {
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(git_dir(from))
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "git {args:?} in {}: {}",
                from.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let head = git(&["log", "-1", "--format=%H %cI"])?;
    let (commit, date) = head.trim().split_once(' ').unwrap_or((head.trim(), ""));
    let names = git(&["ls-tree", "-r", "--name-only", "HEAD", "crates"])?;
    let mut files = Vec::new();
    for name in names.lines().filter(|n| n.ends_with(".md")) {
        files.push((name.to_owned(), git(&["show", &format!("HEAD:{name}")])?));
    }
    Ok(Snapshot {
        files,
        commit: commit.to_owned(),
        date: date.to_owned(),
    })
}

fn git_dir(from: &Path) -> PathBuf {
    if from.join(".git").exists() {
        from.join(".git")
    } else {
        from.to_owned()
    }
}

fn parse_advisory(path: &str, text: &str) -> Result<Entry> {
    #[derive(Deserialize)]
    struct Front {
        advisory: Adv,
        #[serde(default)]
        versions: Versions,
    }
    #[derive(Deserialize)]
    struct Adv {
        id: String,
        package: String,
        #[serde(default)]
        informational: Option<String>,
        #[serde(default)]
        withdrawn: Option<toml::Value>,
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        license: Option<String>,
    }
    #[derive(Deserialize, Default)]
    struct Versions {
        #[serde(default)]
        patched: Vec<String>,
        #[serde(default)]
        unaffected: Vec<String>,
    }
    let body = text
        .strip_prefix("```toml")
        .with_context(|| format!("{path}: no TOML front matter"))?;
    let (front, rest) = body
        .split_once("\n```")
        .with_context(|| format!("{path}: unterminated front matter"))?;
    let f: Front = toml::from_str(front).with_context(|| format!("{path}: front matter"))?;
    let title = rest
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or("")
        .trim()
        .to_owned();
    Ok(Entry {
        id: f.advisory.id,
        package: f.advisory.package,
        title,
        informational: f.advisory.informational,
        withdrawn: f.advisory.withdrawn.is_some(),
        patched: f.versions.patched,
        unaffected: f.versions.unaffected,
        url: f.advisory.url,
        license: f.advisory.license,
    })
}

fn refresh(from: Option<&Path>) -> Result<()> {
    let cloned;
    let from = match from {
        Some(p) => p.to_owned(),
        None => {
            cloned = tempfile::tempdir()?;
            let dest = cloned.path().join("advisory-db");
            let status = Command::new("git")
                .args([
                    "clone",
                    "--depth",
                    "1",
                    "https://github.com/rustsec/advisory-db",
                ])
                .arg(&dest)
                .status()?;
            if !status.success() {
                bail!("cannot clone advisory-db (offline?): pass --from DIR with a local copy");
            }
            dest
        }
    };
    let Snapshot {
        files,
        commit,
        date,
    } = advisory_files(&from)?;
    let mut advisories = files
        .iter()
        .map(|(path, text)| parse_advisory(path, text))
        .collect::<Result<Vec<_>>>()?;
    advisories.sort_by(|a, b| (&a.package, &a.id).cmp(&(&b.package, &b.id)));
    let db = Db {
        source: "https://github.com/rustsec/advisory-db".to_owned(),
        commit,
        date,
        advisories,
    };
    let text = format!(
        "# RustSec advisory front matter, written by `cargo xtask advisories refresh`; read by\n\
         # `cargo xtask advisories check`. Data: CC0-1.0 (entries with license = CC-BY-4.0:\n\
         # attribution at their url).\n{}",
        toml::to_string(&db)?
    );
    let path = data_dir().join("db.toml");
    std::fs::write(&path, text)?;
    println!(
        "wrote {} ({} advisories, advisory-db {})",
        path.display(),
        db.advisories.len(),
        db.commit
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(patched: &[&str], unaffected: &[&str]) -> Entry {
        Entry {
            id: "RUSTSEC-0000-0001".into(),
            package: "p".into(),
            title: "t".into(),
            informational: None,
            withdrawn: false,
            patched: patched.iter().map(|s| (*s).to_owned()).collect(),
            unaffected: unaffected.iter().map(|s| (*s).to_owned()).collect(),
            url: None,
            license: None,
        }
    }

    #[test]
    fn ranges_decide_who_is_affected() {
        let v = |s: &str| semver::Version::parse(s).expect("version");
        let e = entry(&[">= 0.26.1"], &["< 0.3.1"]);
        assert!(affected(&e, &v("0.25.2")).expect("ok"));
        assert!(!affected(&e, &v("0.26.1")).expect("ok"));
        assert!(!affected(&e, &v("0.2.0")).expect("ok"));
        assert!(affected(&entry(&[], &[]), &v("0.9.8")).expect("ok"));
    }

    #[test]
    fn front_matter_is_read() {
        let text = "```toml\n[advisory]\nid = \"RUSTSEC-2025-0119\"\npackage = \"number_prefix\"\n\
                    informational = \"unmaintained\"\n\n[versions]\npatched = []\n```\n\n# number_prefix crate is unmaintained\n";
        let e = parse_advisory("x.md", text).expect("parse");
        assert_eq!(e.package, "number_prefix");
        assert_eq!(e.informational.as_deref(), Some("unmaintained"));
        assert_eq!(e.title, "number_prefix crate is unmaintained");
    }
}
