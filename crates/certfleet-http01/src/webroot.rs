use std::path::PathBuf;

use async_trait::async_trait;
use certfleet_fs::{Beneath, FsError};

use crate::{Http01Error, Http01Response, Http01Solver, validate_token};

/// The directory below the web root that challenge files go into.
const CHALLENGE_DIR: [&str; 2] = [".well-known", "acme-challenge"];

/// Writes `<root>/.well-known/acme-challenge/<token>` for a web server that already serves
/// `<root>`, and removes exactly those files afterwards.
///
/// Below `<root>` nothing is followed: a symbolic link planted at `.well-known`,
/// `acme-challenge` or a token name is refused or replaced, never written through, and
/// token files are created `O_EXCL|O_NOFOLLOW`.
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

    /// The challenge directory, opened without following symlinks below the root. With
    /// `create`, missing directories are made 0755 and challenge files 0644, both with the
    /// web root's group, whatever the umask: the web server usually runs as another user,
    /// often one in the web root's group (certbot's rule; docs/cli.md "Webroot").
    fn challenge_dir(&self, create: bool) -> Result<Beneath, Http01Error> {
        if create {
            Beneath::open_shared(&self.root, &CHALLENGE_DIR, 0o755)
        } else {
            Beneath::open(&self.root, &CHALLENGE_DIR, None)
        }
        .map_err(|e| self.error(e))
    }

    fn error(&self, e: FsError) -> Http01Error {
        let path = match &e {
            FsError::Io { path, .. } | FsError::Symlink { path, .. } => path.clone(),
            _ => self.root.clone(),
        };
        Http01Error::Webroot {
            path,
            source: e.into(),
        }
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
        let this = self.clone();
        let responses = responses.to_vec();
        tokio::task::spawn_blocking(move || {
            let dir = this.challenge_dir(true)?;
            responses.iter().try_for_each(|r| {
                // World-readable on purpose: the web server usually runs as another user.
                dir.create_file(&r.token, r.key_authorization.as_bytes(), 0o644)
                    .map_err(|e| this.error(e))
            })
        })
        .await
        .map_err(|e| Http01Error::Webroot {
            path: self.root.clone(),
            source: std::io::Error::other(e),
        })?
    }

    async fn cleanup(&self, responses: &[Http01Response]) -> Result<(), Http01Error> {
        for r in responses {
            validate_token(&r.token)?;
        }
        let this = self.clone();
        let responses = responses.to_vec();
        tokio::task::spawn_blocking(move || {
            let dir = match this.challenge_dir(false) {
                Ok(dir) => dir,
                // Nothing was ever presented: nothing to remove.
                Err(Http01Error::Webroot { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            responses
                .iter()
                .try_for_each(|r| dir.remove_file(&r.token).map_err(|e| this.error(e)))
        })
        .await
        .map_err(|e| Http01Error::Webroot {
            path: self.root.clone(),
            source: std::io::Error::other(e),
        })?
    }
}

#[cfg(test)]
mod umask_tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    #[tokio::test]
    async fn under_umask_027_challenge_dirs_are_0755_and_files_0644() {
        let root = tempfile::tempdir().expect("tempdir");
        // As root, the web root gets a group of its own, which the new entries must take.
        let is_root = unsafe { libc::geteuid() } == 0;
        let group = 54_321;
        if is_root {
            std::os::unix::fs::chown(root.path(), None, Some(group)).expect("chgrp");
        }
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
        if is_root {
            use std::os::unix::fs::MetadataExt;
            let gid = |p: &Path| std::fs::metadata(p).expect("stat").gid();
            assert_eq!(gid(&wk), group);
            assert_eq!(gid(&wk.join("acme-challenge")), group);
            assert_eq!(gid(&wk.join("acme-challenge").join(token)), group);
        }
    }
}
