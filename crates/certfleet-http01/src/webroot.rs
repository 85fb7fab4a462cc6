use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
        // The mode above passed through the umask (027 makes it 0640): set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(err)?;
        f.write_all(r.key_authorization.as_bytes()).map_err(err)?;
        Ok(())
    }
}

/// Creates the directories from `root` down to `dir` that are missing, each 0755 whatever
/// the umask (a web server running as another user must traverse them); existing ones are
/// left as they are.
fn create_readable_dirs(root: &Path, dir: &Path) -> Result<(), Http01Error> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut path = root.to_path_buf();
    for part in rel.components() {
        path.push(part);
        let err = |source| Http01Error::Webroot {
            path: path.clone(),
            source,
        };
        match std::fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(err)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
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
        let root = self.root.clone();
        let responses = responses.to_vec();
        tokio::task::spawn_blocking(move || {
            create_readable_dirs(&root, &dir)?;
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

#[cfg(test)]
mod umask_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn under_umask_027_challenge_dirs_are_0755_and_files_0644() {
        let root = tempfile::tempdir().expect("tempdir");
        let webroot = Webroot::new(root.path()).expect("webroot");
        let token = "tok-umask_027";
        // SAFETY: umask only changes this process's creation mask; it is restored below.
        let old = unsafe { libc::umask(0o027) };
        let result = webroot
            .present(&[Http01Response {
                token: token.into(),
                key_authorization: "ka".into(),
            }])
            .await;
        unsafe { libc::umask(old) };
        result.expect("present");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let wk = root.path().join(".well-known");
        assert_eq!(mode(&wk), 0o755);
        assert_eq!(mode(&wk.join("acme-challenge")), 0o755);
        assert_eq!(mode(&wk.join("acme-challenge").join(token)), 0o644);
    }
}
