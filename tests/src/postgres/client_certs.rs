//! A cluster that requires client certificates (issue 14): `ssl_ca_file` names a CA of its
//! own and a `hostssl … clientcert=verify-full` line comes first in `pg_hba.conf` for one
//! database (plain connections to it refused), so a session needs a certificate from that
//! CA whose CN is the user name, as well as the password.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use super::{Postgres, is_root, new_ca};

/// The CA the server trusts for client certificates.
pub struct ClientCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
}

impl Postgres {
    /// Requires a client certificate for `database` (after [`Postgres::enable_tls`]);
    /// returns the CA whose certificates the server accepts. Waits (bounded) until the
    /// server has reloaded its configuration.
    pub fn require_client_certs(&self, database: &str) -> Result<ClientCa> {
        let (ca_pem, issuer) = new_ca("certfleet test PostgreSQL client CA")?;
        let data = self.data_dir();
        let ca_file = data.join("client-ca.crt");
        std::fs::write(&ca_file, ca_pem)?;
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).context("reading pg_hba.conf")?;
        std::fs::write(
            &hba,
            format!(
                "hostssl {database} all 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n\
                 hostnossl {database} all 127.0.0.1/32 reject\n{rules}"
            ),
        )?;
        if is_root() {
            let ok = std::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(&ca_file)
                .arg(&hba)
                .status()
                .context("chown")?
                .success();
            if !ok {
                bail!("chown of the client CA and pg_hba.conf failed");
            }
        }
        let setting = ca_file.display().to_string();
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_ca_file = '{setting}'"),
        )?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        // Bounded: the postmaster reloads pg_hba.conf with the settings, within moments.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl_ca_file")? == setting {
                return Ok(ClientCa {
                    issuer,
                    dir: self.dir.path().to_owned(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!(
            "PostgreSQL did not load ssl_ca_file; log:\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        )
    }
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa").field("dir", &self.dir).finish()
    }
}

impl ClientCa {
    /// A client certificate with CN `user` (what `clientcert=verify-full` compares with the
    /// user name) and its key (0600), as PEM files named after `label`: `(cert, key)`.
    pub fn issue(&self, user: &str, label: &str) -> Result<(PathBuf, PathBuf)> {
        client_cert(&self.issuer, &self.dir, user, label)
    }
}

/// A client certificate for `user` from a CA the server does not trust: `(cert, key)`.
pub fn untrusted_client_cert(dir: &std::path::Path, user: &str) -> Result<(PathBuf, PathBuf)> {
    let (_, issuer) = new_ca("some other client CA")?;
    client_cert(&issuer, dir, user, "untrusted")
}

fn client_cert(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: &std::path::Path,
    user: &str,
    label: &str,
) -> Result<(PathBuf, PathBuf)> {
    let key = rcgen::KeyPair::generate().context("client key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    let (cert_path, key_path) = (
        dir.join(format!("{label}-client.crt")),
        dir.join(format!("{label}-client.key")),
    );
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    Ok((cert_path, key_path))
}
