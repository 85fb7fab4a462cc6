//! The store URL (`postgres://user[:password]@host[:port]/database?sslmode=…`): parsed into
//! a driver configuration, and shown everywhere with the password replaced by `***`.

use std::path::PathBuf;
use std::time::Duration;

use crate::PgError;
use crate::tls::{TlsMode, TlsSettings};

/// How to reach the database besides the URL. The caller reads the environment
/// (`PGUSER`, `PGPASSWORD`) and passes what it found: this library reads none.
#[derive(Clone, Default)]
pub struct PgOptions {
    /// The user when the URL names none (the CLI passes `PGUSER`; default `postgres`).
    pub default_user: Option<String>,
    /// The password when the URL has none (the CLI passes `PGPASSWORD`); never shown.
    pub default_password: Option<String>,
    /// A file whose first line is the password (used when the URL has none and
    /// `default_password` is unset).
    pub password_file: Option<PathBuf>,
    /// Connections kept open (default 8).
    pub pool_size: Option<usize>,
    /// Connection attempts at open before giving up (default 5, backoff doubling from
    /// 200 ms).
    pub connect_attempts: Option<u32>,
    /// Session timeouts set on every connection ([`SessionTimeouts::default`]).
    pub timeouts: SessionTimeouts,
}

/// PostgreSQL session settings that keep one stuck node from stalling the others: a node
/// paused inside a transaction (holding row locks on a rate bucket) is cut off by the
/// server, a lock wait or a statement that runs too long fails instead of waiting forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// `idle_in_transaction_session_timeout` (default 10 s).
    pub idle_in_transaction: Duration,
    /// `lock_timeout` (default 5 s).
    pub lock: Duration,
    /// `statement_timeout` (default 30 s).
    pub statement: Duration,
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        SessionTimeouts {
            idle_in_transaction: Duration::from_secs(10),
            lock: Duration::from_secs(5),
            statement: Duration::from_secs(30),
        }
    }
}

impl SessionTimeouts {
    /// The `options` startup parameter that sets them.
    pub fn startup_options(&self) -> String {
        format!(
            "-c idle_in_transaction_session_timeout={} -c lock_timeout={} -c statement_timeout={}",
            self.idle_in_transaction.as_millis().max(1),
            self.lock.as_millis().max(1),
            self.statement.as_millis().max(1)
        )
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("default_user", &self.default_user)
            .field(
                "default_password",
                &self.default_password.as_ref().map(|_| "***"),
            )
            .field("password_file", &self.password_file)
            .field("pool_size", &self.pool_size)
            .field("connect_attempts", &self.connect_attempts)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// A parsed store URL.
#[derive(Clone)]
pub(crate) struct StoreUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub sslmode: String,
    pub connect_timeout: Duration,
    pub timeouts: SessionTimeouts,
    pub tls: TlsSettings,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Whether `url` names a PostgreSQL store.
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `url` with any password in its user-info replaced by `***` — safe for logs and errors
/// even when the URL does not parse.
pub fn redact_url(url: &str) -> String {
    // An unparsable URL is not shown at all: where its password ends cannot be known
    // (a `/` or `@` in it moves every boundary).
    if url::Url::parse(url.trim()).is_err() {
        return "(an unparsable URL, not shown: it may contain a password)".to_owned();
    }
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let masked = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        user.to_owned()
    };
    format!(
        "{}{masked}{}",
        &url[..scheme_end + 3],
        &url[scheme_end + 3 + at..]
    )
}

impl StoreUrl {
    pub fn parse(raw: &str, options: &PgOptions) -> Result<StoreUrl, PgError> {
        let invalid = |detail: String| PgError::Url {
            url: redact_url(raw),
            detail,
        };
        let url = url::Url::parse(raw.trim()).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid(format!(
                "scheme {:?} (expected postgres://)",
                url.scheme()
            )));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            _ => return Err(invalid("no host (expected postgres://user@host/db)".into())),
        };
        let user = match url.username() {
            "" => options
                .default_user
                .clone()
                .unwrap_or_else(|| "postgres".to_owned()),
            u => decode(u),
        };
        let database = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            d => decode(d),
        };
        let mut sslmode = "prefer".to_owned();
        let mut connect_timeout = Duration::from_secs(5);
        let mut tls = TlsSettings::default();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => sslmode = v.into_owned(),
                "connect_timeout" => {
                    let secs: u64 = v.parse().map_err(|_| {
                        invalid(format!("connect_timeout={v:?} is not a number of seconds"))
                    })?;
                    connect_timeout = Duration::from_secs(secs.max(1));
                }
                "application_name" => {}
                "sslrootcert" => tls.root = Some(PathBuf::from(v.into_owned())),
                "sslcert" => tls.client_cert = Some(PathBuf::from(v.into_owned())),
                "sslkey" => tls.client_key = Some(PathBuf::from(v.into_owned())),
                other => {
                    return Err(invalid(format!(
                        "unknown parameter {other:?} (known: sslmode, sslrootcert, sslcert, \
                         sslkey, connect_timeout, application_name)"
                    )));
                }
            }
        }
        tls.mode = match sslmode.as_str() {
            "disable" | "prefer" | "allow" => TlsMode::Off,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(invalid(format!(
                    "sslmode={other:?} is not a known mode (disable, allow, prefer, require, \
                     verify-ca, verify-full)"
                )));
            }
        };
        let password = match url.password() {
            Some(p) => Some(decode(p)),
            None => match &options.default_password {
                Some(p) if !p.is_empty() => Some(p.clone()),
                _ => match &options.password_file {
                    Some(path) => Some(read_password_file(path)?),
                    None => None,
                },
            },
        };
        Ok(StoreUrl {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            database,
            sslmode,
            connect_timeout,
            timeouts: options.timeouts,
            tls,
        })
    }

    /// `postgres://user[:***]@host:port/db?sslmode=…`: what `location()` shows.
    pub fn redacted(&self) -> String {
        let pw = if self.password.is_some() { ":***" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}{pw}@{host}:{}/{}?sslmode={}",
            self.user, self.port, self.database, self.sslmode
        )
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn driver_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name("certfleet")
            .connect_timeout(self.connect_timeout)
            .options(self.timeouts.startup_options())
            // `prefer`/`allow` connect in the clear; the TLS modes insist on TLS.
            .ssl_mode(if self.tls.mode == TlsMode::Off {
                tokio_postgres::config::SslMode::Disable
            } else {
                tokio_postgres::config::SslMode::Require
            });
        if let Some(p) = &self.password {
            c.password(p.as_bytes());
        }
        c
    }
}

fn read_password_file(path: &std::path::Path) -> Result<String, PgError> {
    let text = std::fs::read_to_string(path).map_err(|source| PgError::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let raw = "postgres://fleet:s3cr%40t@db.example:6543/certs?sslmode=disable";
        assert_eq!(
            redact_url(raw),
            "postgres://fleet:***@db.example:6543/certs?sslmode=disable"
        );
        let u = StoreUrl::parse(raw, &PgOptions::default()).expect("parse");
        assert_eq!(u.password.as_deref(), Some("s3cr@t"));
        assert_eq!(
            u.redacted(),
            "postgres://fleet:***@db.example:6543/certs?sslmode=disable"
        );
        assert!(!format!("{u:?}").contains("s3cr"));
        // Unparsable URLs are not shown at all: with a `/` in the password, the
        // authority's end (and so the password's) cannot be found.
        for bad in [
            "postgres://fleet:hunter2@:x/db",
            "postgres://fleet:hun/ter2@db/x",
        ] {
            let err = StoreUrl::parse(bad, &PgOptions::default()).expect_err("unparsable");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!err.to_string().contains("ter2"), "{err}");
            assert!(
                err.to_string().contains("unparsable URL, not shown"),
                "{err}"
            );
        }
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn tls_modes_parse_and_unknown_parameters_are_refused_clearly() {
        let u = StoreUrl::parse(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/r.pem&sslcert=/c.pem&sslkey=/k.pem",
            &PgOptions::default(),
        )
        .expect("verify-full");
        assert_eq!(u.tls.mode, TlsMode::VerifyFull);
        assert_eq!(u.tls.root.as_deref(), Some(std::path::Path::new("/r.pem")));
        assert_eq!(
            u.tls.client_key.as_deref(),
            Some(std::path::Path::new("/k.pem"))
        );
        let err = StoreUrl::parse("postgres://u@h/db?sslmode=verify", &PgOptions::default())
            .expect_err("unknown mode");
        assert!(err.to_string().contains("sslmode=\"verify\""), "{err}");
        let err = StoreUrl::parse("postgres://u@h/db?sslmod=disable", &PgOptions::default())
            .expect_err("typo");
        assert!(err.to_string().contains("\"sslmod\""), "{err}");
        let err = StoreUrl::parse("mysql://u@h/db", &PgOptions::default()).expect_err("scheme");
        assert!(err.to_string().contains("mysql"), "{err}");
    }

    #[test]
    fn password_file_is_read_when_the_url_has_none() {
        let dir = std::env::temp_dir().join(format!("certfleet-pgpw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        let options = PgOptions {
            password_file: Some(file),
            ..PgOptions::default()
        };
        let u = StoreUrl::parse("postgres://u@h/db", &options).expect("parse");
        assert_eq!(u.password.as_deref(), Some("from-file"));
        let from_env = PgOptions {
            default_password: Some("from-env".to_owned()),
            ..options.clone()
        };
        let u = StoreUrl::parse("postgres://u@h/db", &from_env).expect("parse");
        assert_eq!(
            u.password.as_deref(),
            Some("from-env"),
            "the caller's PGPASSWORD wins"
        );
        assert!(!format!("{from_env:?}").contains("from-env"), "never shown");
        assert_eq!(u.redacted(), "postgres://u:***@h:5432/db?sslmode=prefer");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
