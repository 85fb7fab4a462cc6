//! `certfleet key generate | list | show` (and the hidden `key bench`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use certfleet_keys::file::FileKey;
use certfleet_keys::{KeyAlgorithm, KeyRef, SigningKey};
use certfleet_keys_pkcs11::{PinSource, Pkcs11Uri};
use certfleet_keys_tpm::{TpmKeyLocation, parse_handle};
use serde_json::{Value, json};

use crate::cli::{Backend, DeviceArgs, KeyCommand};
use crate::context::Context;

pub async fn run(ctx: &Context, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Generate {
            alg,
            backend,
            out,
            device,
        } => {
            let key = generate(ctx, alg, backend, out, &device).await?;
            tracing::info!(alg = %alg, thumbprint = key.public_jwk().thumbprint(), "key generated");
            // The reference to pass on; a pin-value is shown as *** (never printed).
            println!("{}", key.key_ref());
            Ok(())
        }
        KeyCommand::List {
            backend,
            dir,
            device,
        } => super::print_json(&Value::Array(list(ctx, backend, dir, &device).await?)),
        KeyCommand::Show { key } => {
            let key = ctx.load_key_str(&key).await?;
            super::print_json(&json!({
                "key_ref": key.key_ref().to_string(),
                "algorithm": key.algorithm().as_str(),
                "jws_alg": key.jws_algorithm().as_str(),
                "jwk": key.public_jwk().as_json(),
                "thumbprint": key.public_jwk().thumbprint(),
            }))
        }
        KeyCommand::Bench {
            key,
            signers,
            millis,
        } => bench(ctx, &key, &signers, Duration::from_millis(millis)).await,
    }
}

async fn generate(
    ctx: &Context,
    alg: KeyAlgorithm,
    backend: Backend,
    out: Option<PathBuf>,
    device: &DeviceArgs,
) -> Result<Arc<dyn SigningKey>> {
    let only = |allowed: &[&str]| unexpected_flags(backend, device, allowed);
    Ok(match backend {
        Backend::File => {
            only(&[])?;
            let path = out.context("--backend file needs --out PATH")?;
            // RSA 4096 generation takes seconds: keep it off the async workers.
            let key = tokio::task::spawn_blocking(move || FileKey::generate(alg, &path))
                .await
                .context("key generation task failed")??;
            Arc::new(key)
        }
        Backend::Pkcs11 => {
            only(&["module", "token", "label", "id", "pin-source"])?;
            if out.is_some() {
                bail!("--out is for file and TPM keys; a PKCS#11 key stays on the token (--label)");
            }
            let mut uri = pkcs11_uri(device)?;
            uri.object = Some(
                device
                    .label
                    .clone()
                    .context("--backend pkcs11 needs --label for the new key")?,
            );
            if let Some(hex) = &device.id {
                uri.id = Some(parse_hex(hex).context("--id")?);
            }
            ctx.pkcs11().generate(&uri, alg).await?
        }
        Backend::Tpm => {
            only(&["tcti", "tpm-handle"])?;
            let location = match (out, &device.tpm_handle) {
                (Some(path), None) => TpmKeyLocation::File(std::path::absolute(&path)?),
                (None, Some(h)) => TpmKeyLocation::Handle(
                    parse_handle(h).map_err(|e| anyhow::anyhow!("--tpm-handle: {e}"))?,
                ),
                (Some(_), Some(_)) => {
                    bail!("give either --out (a key file) or --tpm-handle, not both")
                }
                (None, None) => {
                    bail!("--backend tpm needs --out PATH (key file) or --tpm-handle 0x81……")
                }
            };
            ctx.tpm()
                .generate(alg, location, device.tcti.clone())
                .await?
        }
    })
}

async fn list(
    ctx: &Context,
    backend: Backend,
    dir: Option<PathBuf>,
    device: &DeviceArgs,
) -> Result<Vec<Value>> {
    let only = |allowed: &[&str]| unexpected_flags(backend, device, allowed);
    match backend {
        Backend::File => {
            only(&[])?;
            let dir = dir.context("--backend file needs --dir DIR")?;
            list_files(ctx, &dir).await
        }
        Backend::Pkcs11 => {
            only(&["module", "token", "pin-source"])?;
            let keys = ctx.pkcs11().list(&pkcs11_uri(device)?).await?;
            Ok(keys
                .into_iter()
                .map(|k| {
                    json!({
                        "key_ref": k.key_ref.to_string(),
                        "label": k.label,
                        "id": k.id_hex,
                        "algorithm": k.algorithm.map(KeyAlgorithm::as_str),
                        "description": k.description,
                        "sensitive": k.sensitive,
                        "extractable": k.extractable,
                    })
                })
                .collect())
        }
        Backend::Tpm => {
            only(&["tcti"])?;
            let keys = ctx.tpm().list(device.tcti.clone()).await?;
            Ok(keys
                .into_iter()
                .map(|k| {
                    json!({
                        "key_ref": k.key_ref.to_string(),
                        "handle": format!("{:#010x}", k.handle),
                        "algorithm": k.algorithm.map(KeyAlgorithm::as_str),
                        "description": k.description,
                    })
                })
                .collect())
        }
    }
}

/// The PEM private keys in `dir` (files that do not load are skipped with a note).
async fn list_files(ctx: &Context, dir: &Path) -> Result<Vec<Value>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pem" || e == "key"))
        .collect();
    paths.sort();
    let mut keys = Vec::new();
    for path in paths {
        match ctx.load_key(&KeyRef::file(&path)?).await {
            Ok(key) => keys.push(json!({
                "key_ref": key.key_ref().to_string(),
                "algorithm": key.algorithm().as_str(),
                "thumbprint": key.public_jwk().thumbprint(),
            })),
            Err(e) => tracing::debug!("{}: not a private key: {e:#}", path.display()),
        }
    }
    Ok(keys)
}

/// Fails on device flags the backend does not use, so a typo is not silently ignored.
fn unexpected_flags(backend: Backend, d: &DeviceArgs, allowed: &[&str]) -> Result<()> {
    let given = [
        ("module", d.module.is_some()),
        ("token", d.token.is_some()),
        ("label", d.label.is_some()),
        ("id", d.id.is_some()),
        ("pin-source", d.pin_source.is_some()),
        ("tcti", d.tcti.is_some()),
        ("tpm-handle", d.tpm_handle.is_some()),
    ];
    for (flag, set) in given {
        if set && !allowed.contains(&flag) {
            bail!(
                "--{flag} does not apply to --backend {backend:?}",
                backend = backend_name(backend)
            );
        }
    }
    Ok(())
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::File => "file",
        Backend::Pkcs11 => "pkcs11",
        Backend::Tpm => "tpm",
    }
}

/// The token URI the PKCS#11 flags describe (no object yet).
fn pkcs11_uri(d: &DeviceArgs) -> Result<Pkcs11Uri> {
    let token = d
        .token
        .clone()
        .context("--backend pkcs11 needs --token LABEL")?;
    let module = d
        .module
        .clone()
        .context("--backend pkcs11 needs --module /path/to/pkcs11-module.so")?;
    let mut uri = Pkcs11Uri::for_token(&token);
    uri.module_path = Some(std::path::absolute(&module)?);
    if let Some(source) = &d.pin_source {
        uri.pin = Some(PinSource::parse(source).map_err(|e| anyhow::anyhow!("--pin-source: {e}"))?);
    }
    Ok(uri)
}

fn parse_hex(text: &str) -> Result<Vec<u8>> {
    let text = text.trim_start_matches("0x");
    if text.is_empty()
        || !text.len().is_multiple_of(2)
        || !text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        bail!("{text:?} is not an even number of hex digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("hex"))
        .collect()
}

/// Signs as fast as it can with 1, 2, 4… concurrent signers (one task each), printing one
/// JSON line per level: signatures per second, and the session pool's counters for
/// PKCS#11 keys.
async fn bench(ctx: &Context, key: &str, signers: &[usize], duration: Duration) -> Result<()> {
    let key_ref = ctx.parse_key_ref(key)?;
    let (key, pkcs11) = if key_ref.scheme() == "pkcs11" {
        let k = ctx
            .pkcs11()
            .load_uri(&Pkcs11Uri::parse(key_ref.as_str())?)
            .await?;
        (Arc::clone(&k) as Arc<dyn SigningKey>, Some(k))
    } else {
        (ctx.load_key(&key_ref).await?, None)
    };
    key.sign(b"warm-up").await?;
    for &n in signers.iter().filter(|n| **n > 0) {
        let before = pkcs11.as_ref().map(|k| k.pool_stats());
        let started = Instant::now();
        let deadline = started + duration;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let key = Arc::clone(&key);
                tokio::spawn(async move {
                    let message = format!("certfleet bench signer {i}").into_bytes();
                    let mut count = 0u64;
                    // Bounded by the deadline.
                    while Instant::now() < deadline {
                        key.sign(&message).await?;
                        count += 1;
                    }
                    Ok::<u64, certfleet_keys::KeyError>(count)
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.context("signer task")??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut line = json!({
            "key_ref": key.key_ref().to_string(),
            "algorithm": key.algorithm().as_str(),
            "signers": n,
            "signatures": total,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "per_second": (total as f64 / seconds).round(),
        });
        if let (Some(k), Some(before)) = (&pkcs11, before) {
            let after = k.pool_stats();
            line["pool"] = json!({
                "size": after.size,
                "sessions_opened": after.sessions_opened,
                "peak_in_use": after.peak_in_use,
                "peak_busy": after.peak_busy,
                "waited": after.waited - before.waited,
            });
        }
        println!("{line}");
    }
    Ok(())
}
