use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::{Http01Error, Http01Response, Http01Solver, validate_token};

/// Writes `<root>/.well-known/acme-challenge/<token>` for a web server that already serves
/// `<root>`, and removes exactly those files afterwards.
#[derive(Debug, Clone)]
pub struct Webroot {
    root: PathBuf,
}

impl Webroot {
    /// Fails if `root` is not an existing directory: a typo should not create a tree
    /// nobody serves.
    pub fn new(root: impl Into<PathBuf>) -> Result<Webroot, Http01Error> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(Webroot { root }),
            Ok(_) => Err(Http01Error::Webroot {
                path: root,
                source: std::io::Error::other("not a directory"),
            }),
            Err(source) => Err(Http01Error::Webroot { path: root, source }),
        }
    }

    fn challenge_dir(&self) -> PathBuf {
        self.root.join(".well-known").join("acme-challenge")
    }

    fn write_one(dir: &Path, r: &Http01Response) -> Result<(), Http01Error> {
        let path = dir.join(&r.token);
        let err = |source| Http01Error::Webroot {
            path: path.clone(),
            source,
        };
        // World-readable on purpose: the web server usually runs as another user.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&path)
            .map_err(err)?;
        f.write_all(r.key_authorization.as_bytes()).map_err(err)?;
        Ok(())
    }
}

#[async_trait]
impl Http01Solver for Webroot {
    fn describe(&self) -> String {
        format!("webroot {}", self.root.display())
    }

    async fn present(&self, responses: &[Http01Response]) -> Result<(), Http01Error> {
        for r in responses {
            validate_token(&r.token)?;
        }
        let dir = self.challenge_dir();
        let responses = responses.to_vec();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|source| Http01Error::Webroot {
                path: dir.clone(),
                source,
            })?;
            responses
                .iter()
                .try_for_each(|r| Webroot::write_one(&dir, r))
        })
        .await
        .map_err(|e| Http01Error::Webroot {
            path: self.root.clone(),
            source: std::io::Error::other(e),
        })?
    }

    async fn cleanup(&self, responses: &[Http01Response]) -> Result<(), Http01Error> {
        let dir = self.challenge_dir();
        for r in responses {
            validate_token(&r.token)?;
            let path = dir.join(&r.token);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Http01Error::Webroot { path, source }),
            }
        }
        Ok(())
    }
}
