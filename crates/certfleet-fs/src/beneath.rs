//! A directory below a root, reached without following symbolic links.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::FsError;

/// An open directory `root/a/b/…` whose components below `root` were each opened with
/// `O_NOFOLLOW`: a symlink planted at `root/a` cannot send writes elsewhere. `root` itself
/// may be a symlink (the administrator chose it).
#[derive(Debug)]
pub struct Beneath {
    dir: OwnedFd,
    path: PathBuf,
    /// Group given to what is created here (see [`Beneath::open_shared`]).
    group: Option<libc::gid_t>,
}

impl Beneath {
    /// Opens `root/components…`, creating missing components with `mode` when `create`.
    pub fn open(root: &Path, components: &[&str], create: Option<u32>) -> Result<Beneath, FsError> {
        Beneath::open_with(root, components, create, false)
    }

    /// Like [`Beneath::open`] creating missing components with `mode`, for files another
    /// user serves (certbot's rule for webroots): every directory created here, and every
    /// file later created through [`Beneath::create_file`], gets `root`'s group as well as
    /// exactly its mode, whatever the umask. Existing directories are left as they are.
    /// Changing the group needs root or membership in it; without either the entry keeps
    /// the process's group (its mode still decides who reads it).
    pub fn open_shared(root: &Path, components: &[&str], mode: u32) -> Result<Beneath, FsError> {
        Beneath::open_with(root, components, Some(mode), true)
    }

    fn open_with(
        root: &Path,
        components: &[&str],
        create: Option<u32>,
        shared: bool,
    ) -> Result<Beneath, FsError> {
        let root_dir = File::open(root).map_err(FsError::io(root))?;
        let group = if shared {
            use std::os::unix::fs::MetadataExt;
            Some(root_dir.metadata().map_err(FsError::io(root))?.gid())
        } else {
            None
        };
        let mut dir = OwnedFd::from(root_dir);
        let mut path = root.to_owned();
        for comp in components {
            path.push(comp);
            let name = c_name(comp, &path)?;
            dir = match open_dir_at(&dir, &name) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create.is_some() => {
                    let mode = create.unwrap_or(0o755);
                    // SAFETY: a valid directory descriptor and NUL-terminated name.
                    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) };
                    if rc != 0 {
                        let e = std::io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(FsError::io(&path)(e));
                        }
                    }
                    // Exactly `mode` whatever the umask: the web server reads this.
                    open_dir_at(&dir, &name).and_then(|d| {
                        // SAFETY: a descriptor we own.
                        if unsafe { libc::fchmod(d.as_raw_fd(), mode) } != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        give_group(&d, group)?;
                        Ok(d)
                    })
                }
                other => other,
            }
            .map_err(|e| nofollow_error(&path, e))?;
        }
        Ok(Beneath { dir, path, group })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `name` in the directory with `bytes` and exactly `mode`, `O_EXCL|O_NOFOLLOW`:
    /// an existing entry of that name (a leftover, or a planted symlink) is unlinked first —
    /// the link itself, never its target.
    pub fn create_file(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), FsError> {
        let path = self.path.join(name);
        let c = c_name(name, &path)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let mut file = match open_at(&self.dir, &c, flags, mode) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove_file(name)?;
                open_at(&self.dir, &c, flags, mode)
            }
            other => other,
        }
        .map_err(|e| nofollow_error(&path, e))?;
        // Exactly `mode`, whatever the umask (the web server usually runs as another user).
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(FsError::io(&path))?;
        give_group(&file, self.group).map_err(FsError::io(&path))?;
        file.write_all(bytes).map_err(FsError::io(&path))
    }

    /// Removes `name` from the directory; a name already gone is not an error.
    pub fn remove_file(&self, name: &str) -> Result<(), FsError> {
        let path = self.path.join(name);
        let c = c_name(name, &path)?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        let rc = unsafe { libc::unlinkat(self.dir.as_raw_fd(), c.as_ptr(), 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(FsError::io(&path)(e));
            }
        }
        Ok(())
    }
}

fn c_name(name: &str, path: &Path) -> Result<CString, FsError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(FsError::WrongType {
            path: path.to_owned(),
            expected: "single path component",
        });
    }
    CString::new(std::ffi::OsStr::new(name).as_bytes()).map_err(|_| FsError::WrongType {
        path: path.to_owned(),
        expected: "name without NUL bytes",
    })
}

fn nofollow_error(path: &Path, e: std::io::Error) -> FsError {
    // ELOOP: the component is a symlink; ENOTDIR with O_DIRECTORY|O_NOFOLLOW as well.
    if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            return FsError::Symlink {
                path: path.to_owned(),
                hint: "a symbolic link below the web root could send challenge files anywhere; replace it with a directory",
            };
        }
    }
    FsError::io(path)(e)
}

fn open_dir_at(dir: &OwnedFd, name: &CString) -> std::io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    open_at(dir, name, flags, 0).map(OwnedFd::from)
}

fn open_at(dir: &OwnedFd, name: &CString, flags: i32, mode: u32) -> std::io::Result<File> {
    // SAFETY: a valid directory descriptor and NUL-terminated name; the mode is passed as
    // the variadic argument open expects.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Gives `fd` the group `group` (the owner stays). EPERM (neither root nor a member of the
/// group) is not an error: the entry keeps the process's group and its mode decides.
fn give_group(fd: &impl AsRawFd, group: Option<libc::gid_t>) -> std::io::Result<()> {
    let Some(gid) = group else {
        return Ok(());
    };
    // SAFETY: a descriptor the caller owns; uid -1 leaves the owner unchanged.
    if unsafe { libc::fchown(fd.as_raw_fd(), libc::uid_t::MAX, gid) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    Ok(())
}
