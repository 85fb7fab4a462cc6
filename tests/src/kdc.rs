//! A real MIT Kerberos KDC (`krb5kdc -n`) for a private realm on a free loopback port: the
//! KDC of the GSS-TSIG tests. The database, stash, `kdc.conf` and the `krb5.conf` that clients
//! and BIND use live in a temporary directory; principals and keytabs are made with
//! `kadmin.local`, as an admin would. The KDC is polled until it issues a ticket and is
//! killed on drop.

use std::ffi::OsString;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::ports;
use crate::server_process::{READY_INTERVAL, ServerProcess};

const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The tools the KDC needs (Debian packages krb5-kdc, krb5-admin-server, krb5-user).
pub const KDC_TOOLS: [(&str, &str); 4] = [
    ("krb5kdc", "krb5-kdc"),
    ("kdb5_util", "krb5-kdc"),
    ("kadmin.local", "krb5-admin-server"),
    ("kinit", "krb5-user"),
];

/// Whether every KDC tool is installed (a missing one is reported by `require_tool`).
pub fn require_kdc() -> bool {
    KDC_TOOLS
        .iter()
        .all(|(tool, pkg)| crate::require_tool(tool, pkg))
}

/// A running KDC for `realm`; killed on drop.
#[derive(Debug)]
pub struct Kdc {
    realm: String,
    /// Set once started; dropped (killed) before `dir` is removed.
    process: Option<ServerProcess>,
    dir: TempDir,
}

impl Kdc {
    /// Creates the realm database and starts the KDC (TCP and UDP on one free port);
    /// `domains` are mapped to the realm in krb5.conf (`[domain_realm]`).
    pub async fn start(realm: &str, domains: &[&str]) -> Result<Kdc> {
        let dir = tempfile::Builder::new()
            .prefix("certfleet-kdc-")
            .tempdir()
            .context("creating a directory for the KDC")?;
        let port = ports::free_tcp_udp_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.path();
        let mapping: String = domains
            .iter()
            .map(|z| format!("  .{z} = {realm}\n  {z} = {realm}\n"))
            .collect();
        // rdns/dns_canonicalize_hostname off: service names are used as configured (the
        // lab's host names do not resolve on this machine).
        let krb5_conf = format!(
            "[libdefaults]\n  default_realm = {realm}\n  dns_lookup_kdc = false\n  \
             dns_lookup_realm = false\n  rdns = false\n  dns_canonicalize_hostname = false\n  \
             ignore_acceptor_hostname = true\n  default_ccache_name = FILE:{ccache}\n\
             [realms]\n  {realm} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n[domain_realm]\n{mapping}",
            ccache = d.join("ccache").display(),
        );
        fs::write(d.join("krb5.conf"), krb5_conf)?;
        let kdc_conf = format!(
            "[kdcdefaults]\n  kdc_ports = {port}\n  kdc_tcp_ports = {port}\n[realms]\n  {realm} = {{\n    \
             database_name = {db}\n    key_stash_file = {stash}\n    acl_file = {acl}\n  }}\n\
             [logging]\n  kdc = FILE:{log}\n",
            db = d.join("principal").display(),
            stash = d.join("stash").display(),
            acl = d.join("kadm5.acl").display(),
            log = d.join("kdc.log").display(),
        );
        fs::write(d.join("kdc.conf"), kdc_conf)?;
        fs::write(d.join("kadm5.acl"), "")?;
        let log = d.join("krb5kdc.out");
        let mut kdc = Kdc {
            realm: realm.to_owned(),
            process: None,
            dir,
        };
        // The master password only protects the throw-away database of this test.
        kdc.tool("kdb5_util")
            .args(["create", "-s", "-r", realm, "-P", "test-master-password"])
            .output_ok("kdb5_util create")?;
        let mut cmd = kdc.tool("krb5kdc");
        cmd.args(["-n", "-r", realm]);
        let process = kdc
            .process
            .insert(ServerProcess::spawn("krb5kdc", cmd, &log)?);
        process
            .wait_ready(
                &format!("listen on {addr}"),
                READY_DEADLINE,
                || async move { TcpStream::connect_timeout(&addr, READY_INTERVAL).is_ok() },
            )
            .await?;
        Ok(kdc)
    }

    /// A Kerberos tool with this realm's configuration.
    pub fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// KRB5_CONFIG, KRB5_KDC_PROFILE and KRB5CCNAME pointing into this KDC's directory.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        let d = self.dir.path();
        vec![
            ("KRB5_CONFIG".into(), d.join("krb5.conf").into()),
            ("KRB5_KDC_PROFILE".into(), d.join("kdc.conf").into()),
            (
                "KRB5CCNAME".into(),
                format!("FILE:{}", d.join("ccache").display()).into(),
            ),
        ]
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kadmin.local addprinc -randkey NAME` and `ktadd -k FILE NAME`; returns the keytab
    /// (0600, one principal).
    pub fn principal_with_keytab(&self, name: &str, file: &str) -> Result<PathBuf> {
        self.kadmin(&format!("addprinc -randkey {name}"))?;
        let keytab = self.dir.path().join(file);
        self.kadmin(&format!("ktadd -k {} {name}", keytab.display()))?;
        Ok(keytab)
    }

    /// Runs one `kadmin.local -q` query.
    pub fn kadmin(&self, query: &str) -> Result<()> {
        self.tool("kadmin.local")
            .args(["-r", &self.realm, "-q", query])
            .output_ok(&format!("kadmin.local -q {query:?}"))
    }

    /// Issues requests the KDC logged so far (`AS_REQ` / `TGS_REQ` lines).
    pub fn log_lines(&self, what: &str) -> usize {
        fs::read_to_string(self.dir.path().join("kdc.log"))
            .map(|t| t.lines().filter(|l| l.contains(what)).count())
            .unwrap_or(0)
    }
}

trait OutputOk {
    fn output_ok(&mut self, what: &str) -> Result<()>;
}

impl OutputOk for Command {
    fn output_ok(&mut self, what: &str) -> Result<()> {
        crate::run_output(self)
            .map(drop)
            .with_context(|| format!("running {what}"))
    }
}
