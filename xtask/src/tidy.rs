//! `cargo xtask tidy`: the invariants of `docs/ARCHITECTURE.md` that a machine can check
//! (modelled on rust-analyzer's `xtask/src/tidy.rs`), run first in `cargo xtask ci`.
//!
//! - **Dependency arrows point down**: from `cargo metadata`, no crate depends on one it
//!   must not ([`FORBIDDEN_DEPS`]); plugins link only the ABI (and [`PLUGIN_LIBS`]).
//! - **Only the CLI reads the environment and prints**: library sources (`crates/*` but the
//!   CLI) never call `std::env::var*` or `print!`/`eprint!` family macros, except where
//!   [`ENV_ALLOWED`] says why.
//! - **No sleeping but where waiting is the job**: `sleep(` only in [`SLEEP_ALLOWED`].
//! - **Only the composition root names concrete backends**: key backends (`FileKey`,
//!   `Pkcs11Backend`, …) and stores (`SqliteStore`, `PgStore`) are named only by their own
//!   crate and the CLI.
//!
//! Test code (files named `tests.rs`, `test_support.rs`, `tests/` directories, anything
//! after a `#[cfg(test)]` line) and comments are not checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, workspace_root};

/// `(crate, dependency it must not have, why)`.
const FORBIDDEN_DEPS: &[(&str, &str, &str)] = &[
    (
        "certfleet-keys",
        "certfleet-",
        "the signer seam is the bottom of the graph",
    ),
    (
        "certfleet-acme",
        "certfleet-dns01",
        "the ACME core knows no DNS",
    ),
    (
        "certfleet-acme",
        "certfleet-http01",
        "the ACME core serves nothing",
    ),
    ("certfleet-acme", "certfleet-issue", "arrows point down"),
    (
        "certfleet-acme",
        "certfleet-keys-",
        "the ACME core signs through the seam only",
    ),
    ("certfleet-acme", "certfleet-batch", "arrows point down"),
    (
        "certfleet-acme",
        "certfleet-store",
        "the ACME core stores nothing",
    ),
    ("certfleet-issue", "certfleet-batch", "arrows point down"),
    (
        "certfleet-issue",
        "certfleet-store",
        "the order flow stores nothing itself",
    ),
    (
        "certfleet-issue",
        "certfleet-keys-",
        "key backends are picked by the CLI",
    ),
    (
        "certfleet-issue",
        "certfleet-dns01-host",
        "plugins are picked by the CLI",
    ),
    (
        "certfleet-batch",
        "certfleet-store-",
        "concrete stores are picked by the CLI",
    ),
    (
        "certfleet-batch",
        "certfleet-keys-",
        "key backends are picked by the CLI",
    ),
    (
        "certfleet-batch",
        "certfleet-dns01-host",
        "plugins are picked by the CLI",
    ),
    (
        "certfleet-store-postgres",
        "certfleet-keys-",
        "a store holds no keys",
    ),
    (
        "certfleet-store-postgres",
        "certfleet-batch",
        "a store backend links the store seam only",
    ),
    (
        "certfleet-store-postgres",
        "certfleet-acme",
        "a store backend links the store seam only",
    ),
    (
        "certfleet-store-sqlite",
        "certfleet-batch",
        "a store backend links the store seam only",
    ),
    (
        "certfleet-store-sqlite",
        "certfleet-acme",
        "a store backend links the store seam only",
    ),
    (
        "certfleet-store",
        "certfleet-acme",
        "the store seam knows no ACME client",
    ),
    (
        "certfleet-store",
        "certfleet-issue",
        "the store seam knows no order flow",
    ),
    ("certfleet-store", "certfleet-batch", "arrows point down"),
    (
        "certfleet-store",
        "certfleet-store-",
        "the seam names no backend",
    ),
    (
        "certfleet-request",
        "certfleet-acme",
        "request types are a leaf beside the keys",
    ),
    (
        "certfleet-request",
        "certfleet-issue",
        "request types are a leaf beside the keys",
    ),
    ("certfleet-dns01", "certfleet-", "the DNS-01 seam is a leaf"),
    (
        "certfleet-dns-zones",
        "certfleet-",
        "the zone routine plugins link is a leaf",
    ),
    (
        "certfleet-plugin-abi",
        "certfleet-",
        "plugins link the ABI alone",
    ),
];

/// What a plugin may link: the ABI, and rlibs linked statically as shared code (never a
/// second interface): the HTTP helper of the API plugins, and the zone routine the rfc2136
/// plugin shares with the host's propagation checker.
const PLUGIN_LIBS: &[&str] = &[
    "certfleet-plugin-abi",
    "certfleet-plugin-http",
    "certfleet-dns-zones",
];

/// Crates nothing in the workspace but the named ones may depend on.
const ONLY_FROM: &[(&str, &[&str])] = &[
    ("certfleet-cli", &[]),
    (
        "certfleet-keys-pkcs11",
        &["certfleet-cli", "certfleet-testenv", "xtask"],
    ),
    ("certfleet-keys-tpm", &["certfleet-cli"]),
    (
        "certfleet-dns01-host",
        &["certfleet-cli", "certfleet-testenv", "xtask"],
    ),
    (
        "certfleet-store-postgres",
        &["certfleet-cli", "certfleet-testenv", "xtask"],
    ),
    (
        "certfleet-store-sqlite",
        &["certfleet-cli", "certfleet-testenv", "xtask"],
    ),
];

/// Library files that read the environment, and why that is theirs to do.
const ENV_ALLOWED: &[(&str, &str)] = &[
    (
        "crates/certfleet-keys-pkcs11/src/pin.rs",
        "a key reference may say `pin-source=env:NAME`",
    ),
    (
        "crates/certfleet-plugin-http/src/creds.rs",
        "plugins read their credentials (`x_env` settings) in the plugin process",
    ),
];

/// Library files that may sleep: where waiting is the job.
const SLEEP_ALLOWED: &[(&str, &str)] = &[
    ("crates/certfleet-issue/src/poll.rs", "the one polling rule"),
    (
        "crates/certfleet-batch/src/orchestrator.rs",
        "waits for deferred jobs to come due",
    ),
    (
        "crates/certfleet-dns01-host/src/propagation.rs",
        "polls authoritative servers",
    ),
    (
        "crates/certfleet-acme/src/client.rs",
        "bounded connect retries of the directory fetch",
    ),
    (
        "crates/certfleet-http01/src/standalone.rs",
        "bounded accept back-off",
    ),
    (
        "crates/certfleet-plugin-http/src/client.rs",
        "bounded API retries",
    ),
    (
        "crates/certfleet-store-postgres/src/lib.rs",
        "bounded connect retries",
    ),
];

/// Concrete backends and the crates that may name them (besides the CLI).
const CONCRETE: &[(&str, &[&str])] = &[
    ("FileKey", &["certfleet-keys"]),
    ("Pkcs11Backend", &["certfleet-keys-pkcs11"]),
    ("Pkcs11Key", &["certfleet-keys-pkcs11"]),
    ("TpmBackend", &["certfleet-keys-tpm"]),
    ("TpmKey", &["certfleet-keys-tpm"]),
    ("SqliteStore", &["certfleet-store-sqlite"]),
    ("PgStore", &["certfleet-store-postgres"]),
];

pub fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("`cargo xtask tidy` takes no arguments (got `{a}`)");
    }
    let root = workspace_root();
    let mut problems = check_deps(&workspace_deps()?);
    for (krate, file) in library_sources(&root)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let rel = file.strip_prefix(&root).unwrap_or(&file);
        problems.extend(check_source(&krate, &rel.to_string_lossy(), &text));
    }
    if problems.is_empty() {
        println!("tidy: the architecture's invariants hold");
        return Ok(());
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    bail!("tidy: {} violation(s)", problems.len())
}

/// Workspace crates and the names of their (normal and dev) dependencies on other
/// workspace crates, from `cargo metadata`.
fn workspace_deps() -> Result<BTreeMap<String, Vec<String>>> {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let mut deps = BTreeMap::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let mine: Vec<String> = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            // Dev-dependencies are test code (a conformance suite, a harness).
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("certfleet-"))
            .map(str::to_owned)
            .collect();
        deps.insert(name, mine);
    }
    Ok(deps)
}

fn check_deps(deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (krate, mine) in deps {
        for dep in mine {
            for (who, prefix, why) in FORBIDDEN_DEPS {
                if krate == who && dep.starts_with(prefix) {
                    problems.push(format!("{krate} depends on {dep}: {why}"));
                }
            }
            for (target, allowed) in ONLY_FROM {
                if dep == target && !allowed.contains(&krate.as_str()) {
                    problems.push(if allowed.is_empty() {
                        format!("{krate} depends on {dep}: nothing may depend on it")
                    } else {
                        format!("{krate} depends on {dep}: only {} may", allowed.join(", "))
                    });
                }
            }
            if krate.starts_with("certfleet-plugin-")
                && !PLUGIN_LIBS.contains(&krate.as_str())
                && !PLUGIN_LIBS.contains(&dep.as_str())
            {
                problems.push(format!(
                    "plugin {krate} depends on {dep}: plugins link only the ABI"
                ));
            }
        }
    }
    problems
}

/// `(crate, file)` for every library source file (not the CLI's, not tests).
fn library_sources(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for dir in ["crates", "plugins"] {
        for entry in std::fs::read_dir(root.join(dir)).with_context(|| format!("listing {dir}"))? {
            let krate_dir = entry?.path();
            let Some(name) = krate_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
            else {
                continue;
            };
            if name == "certfleet-cli" {
                continue;
            }
            let krate = if dir == "plugins" {
                format!("certfleet-plugin-{name}")
            } else {
                name
            };
            let mut stack = vec![krate_dir.join("src")];
            while let Some(d) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries {
                    let p = e?.path();
                    let file = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    if p.is_dir() {
                        if file.as_deref() != Some("tests") {
                            stack.push(p);
                        }
                    } else if p.extension().is_some_and(|x| x == "rs")
                        && !matches!(file.as_deref(), Some("tests.rs" | "test_support.rs"))
                    {
                        out.push((krate.clone(), p));
                    }
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The violations in one library source file (`rel`: its path from the workspace root).
fn check_source(krate: &str, rel: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let allowed = |list: &[(&str, &str)]| list.iter().any(|(f, _)| *f == rel);
    let is_plugin = krate.starts_with("certfleet-plugin-") && !PLUGIN_LIBS.contains(&krate);
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let at = format!("{rel}:{}", i + 1);
        // Plugins run in their own world (own settings, own credentials): they may read
        // their environment, and they wait for their providers.
        if !is_plugin
            && !allowed(ENV_ALLOWED)
            && (code.contains("env::var") || code.contains("env::vars"))
        {
            problems.push(format!(
                "{at}: a library reads the environment (only the CLI does)"
            ));
        }
        if ["println!", "eprintln!", "print!(", "eprint!("]
            .iter()
            .any(|m| code.contains(m))
        {
            problems.push(format!(
                "{at}: a library prints (only the CLI does; use tracing)"
            ));
        }
        if !is_plugin && !allowed(SLEEP_ALLOWED) && code.contains("sleep(") {
            problems.push(format!(
                "{at}: sleeps outside the places allowed to wait (xtask/src/tidy.rs SLEEP_ALLOWED)"
            ));
        }
        for (name, owners) in CONCRETE {
            if !owners.contains(&krate) && contains_word(code, name) {
                problems.push(format!(
                    "{at}: names the concrete backend {name} (only the CLI picks backends)"
                ));
            }
        }
    }
    problems
}

fn contains_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, d)| ((*k).to_owned(), d.iter().map(|s| (*s).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn the_workspace_as_it_is_passes() {
        let root = workspace_root();
        let mut problems = check_deps(&workspace_deps().expect("cargo metadata"));
        for (krate, file) in library_sources(&root).expect("sources") {
            let text = std::fs::read_to_string(&file).expect("readable");
            let rel = file
                .strip_prefix(&root)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            problems.extend(check_source(&krate, &rel, &text));
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_dependency_against_the_arrows_fails() {
        let p = check_deps(&deps(&[(
            "certfleet-acme",
            &["certfleet-keys", "certfleet-issue"],
        )]));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("certfleet-acme depends on certfleet-issue"),
            "{p:?}"
        );
        let p = check_deps(&deps(&[("certfleet-batch", &["certfleet-store-postgres"])]));
        assert!(p.iter().any(|m| m.contains("concrete stores")), "{p:?}");
        let p = check_deps(&deps(&[("certfleet-store-postgres", &["certfleet-batch"])]));
        assert!(
            p.iter().any(|m| m.contains("links the store seam only")),
            "{p:?}"
        );
        let p = check_deps(&deps(&[("certfleet-issue", &["certfleet-cli"])]));
        assert!(
            p.iter().any(|m| m.contains("nothing may depend on it")),
            "{p:?}"
        );
        let p = check_deps(&deps(&[("certfleet-plugin-route53", &["certfleet-keys"])]));
        assert!(
            p.iter().any(|m| m.contains("plugins link only the ABI")),
            "{p:?}"
        );
        assert!(check_deps(&deps(&[("certfleet-issue", &["certfleet-acme"])])).is_empty());
    }

    #[test]
    fn a_library_reading_the_environment_fails() {
        let src = "fn host() -> String {\n    std::env::var(\"HOSTNAME\").unwrap_or_default()\n}\n";
        let p = check_source(
            "certfleet-batch",
            "crates/certfleet-batch/src/store.rs",
            src,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("store.rs:2: a library reads the environment"),
            "{p:?}"
        );
        assert!(
            check_source(
                "certfleet-keys-pkcs11",
                "crates/certfleet-keys-pkcs11/src/pin.rs",
                src
            )
            .is_empty(),
            "pin-source=env is allowed"
        );
    }

    #[test]
    fn a_library_printing_fails_but_comments_and_tests_do_not() {
        let src = "//! println!(\"in a doc\");\nfn f() { eprintln!(\"x\"); }\n#[cfg(test)]\nmod t { fn g() { println!(\"y\"); } }\n";
        let p = check_source("certfleet-issue", "crates/certfleet-issue/src/x.rs", src);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("x.rs:2: a library prints"), "{p:?}");
    }

    #[test]
    fn sleeping_outside_the_allowed_places_fails() {
        let src = "async fn f() { tokio::time::sleep(d).await; }\n";
        let p = check_source(
            "certfleet-batch",
            "crates/certfleet-batch/src/job_driver.rs",
            src,
        );
        assert!(p.iter().any(|m| m.contains("sleeps outside")), "{p:?}");
        assert!(
            check_source("certfleet-issue", "crates/certfleet-issue/src/poll.rs", src).is_empty()
        );
    }

    #[test]
    fn naming_a_concrete_key_backend_or_store_fails() {
        let src = "let k = FileKey::generate(alg, &path)?;\nlet s = SqliteStore::open(dir)?;\n";
        let p = check_source(
            "certfleet-batch",
            "crates/certfleet-batch/src/job_driver/finalize.rs",
            src,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("concrete backend FileKey"), "{p:?}");
        assert!(p[1].contains("concrete backend SqliteStore"), "{p:?}");
        assert!(
            check_source(
                "certfleet-store-sqlite",
                "crates/certfleet-store-sqlite/src/lib.rs",
                "pub struct SqliteStore;"
            )
            .is_empty(),
            "a backend names itself"
        );
        let p = check_source("certfleet-issue", "crates/certfleet-issue/src/x.rs", src);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            check_source(
                "certfleet-issue",
                "crates/certfleet-issue/src/x.rs",
                "MyFileKeyMaker"
            )
            .is_empty(),
            "whole words only"
        );
    }
}
