//! A static file server running as another user (`www-data` by default): Debian's
//! `python3 -m http.server`, started through `setpriv` with that user's uid and gid and
//! no supplementary groups, so it reads only what that user may read — as nginx or Apache
//! do in production. Needs root. Binds 127.0.0.1 on the given port (Pebble's http-01 port,
//! or a free one), ready when it answers a request; killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The Debian interpreter (a pyenv shim under /root is not readable by other users).
const PYTHON: &str = "/usr/bin/python3";
const SETPRIV: &str = "/usr/bin/setpriv";

/// How long the server gets to answer its first request.
const READY_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct UserHttpServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl UserHttpServer {
    /// Serves `root` on `127.0.0.1:port` as `user`; its access log goes to `log`.
    pub fn start(root: &Path, port: u16, user: &str, log: &Path) -> Result<UserHttpServer> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("a server running as {user} needs root to start it");
        }
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the server log {}", log.display()))?;
        let child = Command::new(SETPRIV)
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .arg("--clear-groups")
            .args([PYTHON, "-m", "http.server", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--directory"])
            .arg(root)
            .current_dir("/")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {PYTHON} -m http.server as {user}"))?;
        let mut server = UserHttpServer {
            child,
            port,
            log: log.to_owned(),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let by = Instant::now() + READY_WITHIN;
        // Bounded by READY_WITHIN.
        while Instant::now() < by {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the http.server as another user exited ({status}): {}",
                    self.log_text()
                );
            }
            if self.get("/").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the http.server on 127.0.0.1:{} did not answer within {READY_WITHIN:?}: {}",
            self.port,
            self.log_text()
        )
    }

    /// The status code of `GET path`.
    pub fn get(&self, path: &str) -> Result<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        let text = String::from_utf8_lossy(&head);
        text.get(9..12)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP status line: {text:?}"))
    }

    /// The server's log (one line per request: `… "GET /path HTTP/1.1" 200 -`).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for UserHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
