use anyhow::{Context as _, Result};
use certfleet_keys::SigningKey;
use certfleet_keys::file::FileKey;
use serde_json::json;

use crate::cli::{Backend, KeyCommand};
use crate::context::Context;

pub async fn run(ctx: &Context, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Generate { alg, backend, out } => {
            let key = match backend {
                Backend::File => {
                    // RSA 4096 generation takes seconds: keep it off the async workers.
                    let path = out.clone();
                    tokio::task::spawn_blocking(move || FileKey::generate(alg, &path))
                        .await
                        .context("key generation task failed")??
                }
            };
            tracing::info!(alg = %alg, thumbprint = key.public_jwk().thumbprint(), "key generated");
            println!("{}", key.key_ref());
            Ok(())
        }
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
    }
}
