//! Settings: defaults ← TOML file (`--config`) ← `CERTFLEET_*` environment ← flags.
//!
//! The global flags (`--directory`, `--state-dir`, `--ca-root`) read their environment
//! variables through clap; everything else comes from the file or `CERTFLEET_<SECTION>__<KEY>`
//! variables through figment. Unknown keys are errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use certfleet_keys::KeyAlgorithm;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::cli::Cli;

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// ACME directory URL.
    pub directory: String,
    /// State directory; `None` = the platform default.
    pub state_dir: Option<PathBuf>,
    /// Extra trusted roots (PEM files) for the CA's HTTPS endpoint.
    pub ca_roots: Vec<PathBuf>,
    /// Trust only `ca_roots` for the CA's endpoint, not the system store (narrower trust for
    /// a private CA, and no system store to load at start-up).
    pub ca_roots_only: bool,
    pub http01: Http01Settings,
    pub issue: IssueSettings,
    pub network: NetworkSettings,
    pub dns01: Dns01Settings,
    pub batch: BatchSettings,
    pub hooks: HookSettings,
    /// `[plugins.NAME]`: each plugin's own settings, handed to it as JSON (it rejects unknown
    /// keys itself); `path` is the host's (where the library is).
    pub plugins: PluginSettings,
    /// `--insecure-http-directory` (a flag only, never read from a file or the environment).
    #[serde(skip)]
    pub insecure_http_directory: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http01Settings {
    /// Listen address of the built-in server.
    pub listen: String,
    /// Serve challenges through this web root instead of the built-in server.
    pub webroot: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssueSettings {
    /// `http-01` or `dns-01`.
    pub challenge: String,
    /// Key type for new certificate keys.
    pub key_alg: KeyAlgorithm,
    pub profile: Option<String>,
    pub preferred_chain: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// Per-request timeout, seconds.
    pub timeout_secs: u64,
    /// Attempts to reach the directory before giving up.
    pub connect_attempts: u32,
    /// Longest wait for an authorization or order to change state, seconds.
    pub poll_timeout_secs: u64,
    /// First pause between polls when the CA sends no Retry-After, milliseconds (doubles
    /// up to `poll_max_interval_secs`). Never below 50: no resource is polled more often.
    pub poll_initial_millis: u64,
    /// Longest pause between two polls when the CA sends no Retry-After, seconds.
    pub poll_max_interval_secs: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns01Settings {
    /// Plugin used for dns-01 when `--dns-plugin` is not given.
    pub plugin: Option<String>,
    /// Directories searched for `libcertfleet_plugin_<name>.so`; default: the directory of
    /// the certfleet binary, `<that>/../lib/certfleet/plugins`, `/usr/lib/certfleet/plugins`.
    pub plugin_dirs: Vec<PathBuf>,
    pub propagation: PropagationSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PropagationSettings {
    /// Wait until every authoritative server serves the records before answering.
    pub check: bool,
    /// Longest wait, seconds.
    pub timeout_secs: u64,
    /// Pause between two rounds of queries, milliseconds.
    pub interval_millis: u64,
    /// Timeout of one query, milliseconds.
    pub query_timeout_millis: u64,
    /// Resolvers (`IP:PORT`) used to follow CNAMEs and find zones and their NS sets;
    /// default: /etc/resolv.conf.
    pub discovery_resolvers: Vec<String>,
    /// Recursive resolvers (`IP:PORT`) that must also serve the records.
    pub recursive_resolvers: Vec<String>,
    /// Port the authoritative servers are asked on.
    pub nameserver_port: u16,
    /// Test/lab override: addresses for NS host names (`"ns1.example.test." = ["127.0.0.1:5301"]`)
    /// instead of their A/AAAA records.
    pub nameserver_addresses: BTreeMap<String, Vec<String>>,
}

/// `[hooks]`: commands run after certificates were written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookSettings {
    /// Deploy hook for certificates whose inventory records none (`--deploy-hook` wins).
    pub deploy: Option<String>,
    /// Longest run of one hook, seconds; it is killed after that.
    pub timeout_secs: u64,
    /// Run once after a `batch run` that issued certificates (`--batch-hook` wins), with
    /// the list of changed certificates.
    pub batch: Option<String>,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            deploy: None,
            timeout_secs: 600,
            batch: None,
        }
    }
}

impl HookSettings {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// `[batch]`: how `certfleet batch run` paces itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Rate-limit preset: `auto` (by the directory URL: Let's Encrypt's presets for its
    /// directories, `none` for other CAs), `letsencrypt`, `letsencrypt-staging` or `none`.
    pub rate_limits: String,
    /// Custom limits replacing the preset's (same keys as the preset's limits).
    pub limits: certfleet_batch::Limits,
    /// After SIGINT/SIGTERM, how long the orders in flight may run on to their next
    /// checkpoint before they are aborted (they resume from their last stored step).
    pub stop_grace_secs: u64,
    /// Orders being worked on at once (ordering, finalizing); orders that only wait for
    /// DNS or the CA hold no slot.
    pub concurrency: usize,
    /// Authorizations pending at the CA at once (orders waiting); unset: the rate-limit
    /// preset's `pending_authorizations_per_account` (Let's Encrypt 300), else 1,000.
    pub pending_authorizations: Option<usize>,
    /// Orders of one DNS zone (registered domain) with records presented at once; unset:
    /// no bound of its own.
    pub per_zone: Option<usize>,
    /// dns-01 rounds (one combined change + one propagation check) in flight at once per
    /// plugin (1: the next round gathers while one propagates).
    pub plugin_concurrency: usize,
    /// How long dns-01 records (adds and deletes) of concurrent orders are gathered into one
    /// round at most, ms.
    pub gather_millis: u64,
    /// Attempts before a job is reported failed.
    pub max_attempts: u32,
    /// First retry delay after a failure, seconds (doubles per attempt).
    pub retry_backoff_secs: u64,
    /// The state store: unset = the SQLite file in the state directory;
    /// `postgres://user@host:port/db?sslmode=disable` = a PostgreSQL database shared by
    /// several nodes (`--store`, `CERTFLEET_BATCH_STORE` win).
    pub store: Option<StoreUrl>,
    /// File holding the PostgreSQL password when the URL has none (else `PGPASSWORD`).
    pub store_password_file: Option<PathBuf>,
    /// How long a node's lease on a job lasts before another node may take the job over,
    /// seconds (renewed every third of it while the job runs).
    pub lease_secs: u64,
    /// The fleet's key-encryption key (0600 file, lines of 64 hex characters, the first
    /// seals): generated keys are stored sealed in a PostgreSQL store so every node, and
    /// `batch deploy`, can use them (docs/scale-out.md).
    pub key_encryption_key_file: Option<PathBuf>,
}

/// A store URL; `Debug` hides any password in it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(pub String);

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&certfleet_store_postgres::redact_url(&self.0))
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            rate_limits: "auto".to_owned(),
            stop_grace_secs: 30,
            limits: certfleet_batch::Limits::default(),
            concurrency: certfleet_batch::DEFAULT_CONCURRENCY,
            pending_authorizations: None,
            per_zone: None,
            plugin_concurrency: 1,
            gather_millis: 1000,
            max_attempts: 3,
            retry_backoff_secs: 5,
            store: None,
            store_password_file: None,
            lease_secs: 120,
            key_encryption_key_file: None,
        }
    }
}

/// The `[plugins.*]` tables. `Debug` shows only the plugin names: the tables may hold tokens.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PluginSettings(pub BTreeMap<String, serde_json::Value>);

impl std::fmt::Debug for PluginSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Default for PropagationSettings {
    fn default() -> Self {
        PropagationSettings {
            check: true,
            timeout_secs: 120,
            interval_millis: 2000,
            query_timeout_millis: 3000,
            discovery_resolvers: Vec::new(),
            recursive_resolvers: Vec::new(),
            nameserver_port: 53,
            nameserver_addresses: BTreeMap::new(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            directory: LETS_ENCRYPT.to_owned(),
            state_dir: None,
            ca_roots: Vec::new(),
            ca_roots_only: false,
            http01: Http01Settings::default(),
            issue: IssueSettings::default(),
            network: NetworkSettings::default(),
            dns01: Dns01Settings::default(),
            batch: BatchSettings::default(),
            hooks: HookSettings::default(),
            plugins: PluginSettings::default(),
            insecure_http_directory: false,
        }
    }
}

impl Default for Http01Settings {
    fn default() -> Self {
        Http01Settings {
            listen: "[::]:80".to_owned(),
            webroot: None,
        }
    }
}

impl Default for IssueSettings {
    fn default() -> Self {
        IssueSettings {
            challenge: "http-01".to_owned(),
            key_alg: KeyAlgorithm::EcP256,
            profile: None,
            preferred_chain: None,
        }
    }
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            timeout_secs: 30,
            connect_attempts: 3,
            poll_timeout_secs: 300,
            poll_initial_millis: 50,
            poll_max_interval_secs: 10,
        }
    }
}

impl NetworkSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// Top-level keys (and sections) settable through `CERTFLEET_*` variables.
const ENV_KEYS: [&str; 7] = [
    "batch",
    "ca_roots_only",
    "dns01",
    "http01",
    "issue",
    "network",
    "plugins",
];

/// Keys clap owns (their env vars are read by clap, so figment must not see them too).
const CLAP_OWNED: [&str; 4] = ["config", "directory", "state_dir", "ca_roots"];

fn is_plugin_key(key: &str) -> bool {
    key.to_ascii_lowercase().starts_with("plugins.")
}

impl Settings {
    pub fn load(cli: &Cli) -> Result<Settings> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &cli.config {
            check_readable(path)?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("CERTFLEET_")
            .split("__")
            // Only keys we know, compared case-insensitively (env keys keep their case):
            // clap reads its own variables, and a stray CERTFLEET_FOO in a cron job's
            // environment must not break every run.
            .filter(|k| {
                let key = k.as_str().to_ascii_lowercase();
                !CLAP_OWNED.contains(&key.as_str())
                    && ENV_KEYS
                        .iter()
                        .any(|s| key == *s || key.starts_with(&format!("{s}.")))
            });
        figment = figment.merge(env.clone().filter(|k| !is_plugin_key(k.as_str())));
        // Plugin settings from the environment stay strings: figment would read an
        // all-digit token as a number, and the plugin's type error would then quote it.
        for (key, value) in env.filter(|k| is_plugin_key(k.as_str())).iter() {
            figment = figment.merge(Serialized::default(key.as_str(), value));
        }
        let mut settings: Settings = figment.extract().map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: {e}\n(see configs/certfleet.example.toml for every key)"
            )
        })?;
        if let Some(d) = &cli.directory {
            settings.directory.clone_from(d);
        }
        if let Some(s) = &cli.state_dir {
            settings.state_dir = Some(s.clone());
        }
        settings.insecure_http_directory = cli.insecure_http_directory;
        // Flags win over CERTFLEET_CA_ROOTS, which wins over the file. Only the variable is
        // split on ':' (a flag is one path, whatever characters it holds).
        if !cli.ca_roots.is_empty() {
            settings.ca_roots.clone_from(&cli.ca_roots);
        } else if let Some(v) = std::env::var_os("CERTFLEET_CA_ROOTS").filter(|v| !v.is_empty()) {
            settings.ca_roots = std::env::split_paths(&v).collect();
        }
        if settings.ca_roots_only && settings.ca_roots.is_empty() {
            anyhow::bail!(
                "ca_roots_only = true but no ca_roots are given: nothing would be trusted"
            );
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<()> {
        let url = url::Url::parse(&self.directory).with_context(|| {
            format!(
                "directory {:?} is not a URL (expected https://…/directory)",
                self.directory
            )
        })?;
        if url.scheme() != "https" && url.scheme() != "http" {
            anyhow::bail!("directory {:?}: expected an https:// URL", self.directory);
        }
        if !["http-01", "dns-01"].contains(&self.issue.challenge.as_str()) {
            anyhow::bail!(
                "issue.challenge = {:?}: expected \"http-01\" or \"dns-01\"",
                self.issue.challenge
            );
        }
        let p = &self.dns01.propagation;
        for (what, list) in [
            ("discovery_resolvers", &p.discovery_resolvers),
            ("recursive_resolvers", &p.recursive_resolvers),
        ] {
            for a in list {
                a.parse::<std::net::SocketAddr>().with_context(|| {
                    format!("dns01.propagation.{what}: {a:?}: expected IP:PORT, e.g. 127.0.0.1:53")
                })?;
            }
        }
        for (host, addrs) in &p.nameserver_addresses {
            for a in addrs {
                a.parse::<std::net::SocketAddr>().with_context(|| {
                    format!(
                        "dns01.propagation.nameserver_addresses.{host:?}: {a:?}: expected IP:PORT"
                    )
                })?;
            }
        }
        let limits: certfleet_batch::Preset = if self.batch.rate_limits.eq_ignore_ascii_case("auto")
        {
            certfleet_batch::Preset::None
        } else {
            self.batch
                .rate_limits
                .parse()
                .context("batch.rate_limits")?
        };
        certfleet_batch::Limits::preset(limits)
            .with_overrides(&self.batch.limits)
            .validate()
            .context("batch.limits")?;
        for (name, table) in &self.plugins.0 {
            if !table.is_object() {
                anyhow::bail!("plugins.{name}: expected a table of the plugin's settings");
            }
        }
        self.http01
            .listen
            .parse::<std::net::SocketAddr>()
            .with_context(|| {
                format!(
                    "http01.listen = {:?}: expected ADDRESS:PORT, e.g. [::]:80 or 127.0.0.1:8080",
                    self.http01.listen
                )
            })?;
        Ok(())
    }

    /// The state directory: configured, else `/var/lib/certfleet` for root, else the XDG
    /// state directory.
    pub fn state_dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.state_dir {
            return Ok(d.clone());
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return Ok(PathBuf::from("/var/lib/certfleet"));
        }
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(x).join("certfleet"));
        }
        let home = std::env::var_os("HOME")
            .context("cannot choose a state directory: HOME is not set; pass --state-dir")?;
        Ok(PathBuf::from(home).join(".local/state/certfleet"))
    }
}

fn check_readable(path: &Path) -> Result<()> {
    std::fs::metadata(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use clap::Parser;

    use super::*;

    fn load(args: &[&str], toml: Option<&str>) -> Result<Settings> {
        let dir = tempfile::tempdir()?;
        let mut argv = vec!["certfleet".to_owned()];
        if let Some(t) = toml {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, t)?;
            argv.extend(["--config".to_owned(), path.display().to_string()]);
        }
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        argv.extend(["key", "show", "x.pem"].map(str::to_owned));
        let cli = Cli::try_parse_from(argv)?;
        Settings::load(&cli)
    }

    #[test]
    fn defaults_without_file() {
        // Inside a jail: other tests set CERTFLEET_* variables process-wide.
        figment::Jail::expect_with(|_| {
            let s = load(&[], None).expect("defaults");
            assert_eq!(s.directory, LETS_ENCRYPT);
            assert_eq!(s.http01.listen, "[::]:80");
            assert_eq!(s.issue.key_alg, KeyAlgorithm::EcP256);
            Ok(())
        });
    }

    #[test]
    fn flags_override_the_file() {
        // Inside a jail: other tests set CERTFLEET_* variables process-wide.
        figment::Jail::expect_with(|_| {
            let toml = "directory = \"https://file.example/dir\"\n[issue]\nkey_alg = \"es384\"\n";
            let from_file = load(&[], Some(toml)).expect("file");
            assert_eq!(from_file.directory, "https://file.example/dir");
            assert_eq!(from_file.issue.key_alg, KeyAlgorithm::EcP384);
            let flagged =
                load(&["--directory", "https://flag.example/dir"], Some(toml)).expect("flag");
            assert_eq!(flagged.directory, "https://flag.example/dir");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        // Inside a jail: other tests set CERTFLEET_* variables process-wide.
        figment::Jail::expect_with(|_| {
            let err = load(&[], Some("[issue]\nkey_algo = \"es256\"\n")).expect_err("unknown key");
            assert!(err.to_string().contains("key_algo"), "{err}");
            let err = load(&[], Some("colour = 1\n")).expect_err("unknown top-level key");
            assert!(err.to_string().contains("colour"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_named() {
        // Inside a jail: other tests set CERTFLEET_* variables process-wide.
        figment::Jail::expect_with(|_| {
            let err = load(&[], Some("[issue]\nkey_alg = \"dsa\"\n")).expect_err("bad alg");
            assert!(err.to_string().contains("dsa"), "{err}");
            let err = load(&[], Some("[http01]\nlisten = \"port80\"\n")).expect_err("bad listen");
            assert!(err.to_string().contains("port80"), "{err}");
            let err = load(&["--directory", "ftp://x/dir"], None).expect_err("bad scheme");
            assert!(err.to_string().contains("ftp://x/dir"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn environment_sits_between_file_and_flags() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CERTFLEET_ISSUE__KEY_ALG", "rs256");
            jail.set_env("CERTFLEET_CA_ROOTS_ONLY", "true");
            jail.set_env("CERTFLEET_CA_ROOTS", "/a.pem:/b.pem");
            jail.set_env("CERTFLEET_UNRELATED", "ignored");
            let s = load(&[], Some("[issue]\nkey_alg = \"es384\"\n")).expect("env over file");
            assert_eq!(s.issue.key_alg, KeyAlgorithm::Rsa2048);
            assert!(s.ca_roots_only);
            assert_eq!(
                s.ca_roots,
                vec![PathBuf::from("/a.pem"), PathBuf::from("/b.pem")]
            );
            let s = load(&["--ca-root", "/c:d.pem"], None).expect("flag over env");
            assert_eq!(s.ca_roots, vec![PathBuf::from("/c:d.pem")]);
            jail.set_env("CERTFLEET_NETWORK__TIMEOUT_SECS", "soon");
            let err = load(&[], None).expect_err("bad env value");
            assert!(
                format!("{err:#}").to_lowercase().contains("timeout_secs"),
                "{err:#}"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_an_error() {
        // Inside a jail: other tests set CERTFLEET_* variables process-wide.
        figment::Jail::expect_with(|_| {
            let cli = Cli::try_parse_from([
                "certfleet",
                "--config",
                "/nonexistent/c.toml",
                "key",
                "show",
                "k",
            ])
            .expect("parse");
            let err = Settings::load(&cli).expect_err("missing file");
            assert!(
                format!("{err:#}").contains("/nonexistent/c.toml"),
                "{err:#}"
            );
            Ok(())
        });
    }

    #[test]
    fn plugin_settings_from_the_environment_stay_strings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CERTFLEET_PLUGINS__CLOUDFLARE__API_TOKEN", "0123456789");
            jail.set_env("CERTFLEET_PLUGINS__EXEC__ENV__FLAG", "true");
            jail.set_env("CERTFLEET_NETWORK__TIMEOUT_SECS", "7");
            let toml = "[plugins.cloudflare]\nzone = \"example.test\"\n";
            let s = load(&[], Some(toml)).expect("settings");
            let cf = &s.plugins.0["cloudflare"];
            assert_eq!(cf["api_token"], serde_json::json!("0123456789"));
            assert_eq!(
                cf["zone"], "example.test",
                "file values merge with env ones"
            );
            assert_eq!(
                s.plugins.0["exec"]["env"]["flag"],
                serde_json::json!("true")
            );
            // Certfleet's own settings are still typed.
            assert_eq!(s.network.timeout_secs, 7);
            Ok(())
        });
    }

    #[test]
    fn insecure_http_directory_is_a_flag_only() {
        figment::Jail::expect_with(|_| {
            let s = load(&["--insecure-http-directory"], None).expect("flag");
            assert!(s.insecure_http_directory);
            let s = load(&[], Some("insecure_http_directory = true\n"));
            assert!(s.is_err(), "not settable from the file");
            Ok(())
        });
    }

    #[test]
    fn dns01_and_plugin_sections() {
        figment::Jail::expect_with(|jail| {
            let toml = "[dns01]\nplugin = \"rfc2136\"\n[dns01.propagation]\ntimeout_secs = 5\n\
                        nameserver_addresses = { \"ns2.example.test.\" = [\"127.0.0.1:5301\"] }\n\
                        [plugins.rfc2136]\nserver = \"127.0.0.1:53\"\n\
                        [plugins.challtestsrv]\ntoken = \"s3cret-token\"\n";
            let s = load(&[], Some(toml)).expect("dns01 settings");
            assert_eq!(s.dns01.plugin.as_deref(), Some("rfc2136"));
            assert_eq!(s.dns01.propagation.timeout_secs, 5);
            assert!(s.dns01.propagation.check, "checks by default");
            assert_eq!(s.plugins.0["rfc2136"]["server"], "127.0.0.1:53");
            assert!(
                !format!("{s:?}").contains("s3cret-token"),
                "plugin tables are not Debug-printed"
            );
            let err = load(&[], Some("[dns01]\nplugins = \"x\"\n")).expect_err("unknown key");
            assert!(err.to_string().contains("plugins"), "{err}");
            let err = load(
                &[],
                Some("[dns01.propagation]\ndiscovery_resolvers = [\"dns.local\"]\n"),
            )
            .expect_err("bad address");
            assert!(format!("{err:#}").contains("dns.local"), "{err:#}");
            let example = include_str!("../../../configs/certfleet.example.toml");
            load(&[], Some(example)).expect("the example configuration is valid");
            jail.set_env("CERTFLEET_DNS01__PLUGIN", "exec");
            let s = load(&[], Some(toml)).expect("env over file");
            assert_eq!(s.dns01.plugin.as_deref(), Some("exec"));
            Ok(())
        });
    }

    #[test]
    fn batch_settings_from_file_and_env() {
        figment::Jail::expect_with(|jail| {
            let s = load(&[], None).expect("defaults");
            assert_eq!(s.batch.rate_limits, "auto");
            assert_eq!(s.batch.concurrency, certfleet_batch::DEFAULT_CONCURRENCY);
            let toml = "[batch]\nrate_limits = \"none\"\nconcurrency = 8\n\
                        [batch.limits]\nnew_orders_per_account = { capacity = 20, period = \"60s\" }\n";
            let s = load(&[], Some(toml)).expect("batch settings");
            assert_eq!(s.batch.concurrency, 8);
            let limit = s.batch.limits.new_orders_per_account.expect("custom limit");
            assert_eq!((limit.capacity, limit.period.as_secs()), (20, 60));
            let err = load(&[], Some("[batch]\nconcurency = 8\n")).expect_err("unknown key");
            assert!(err.to_string().contains("concurency"), "{err}");
            let err = load(&[], Some("[batch]\nrate_limits = \"lenient\"\n")).expect_err("preset");
            assert!(format!("{err:#}").contains("lenient"), "{err:#}");
            jail.set_env("CERTFLEET_BATCH__CONCURRENCY", "4");
            assert_eq!(load(&[], Some(toml)).expect("env").batch.concurrency, 4);
            let bounds = "[batch]\npending_authorizations = 250\nper_zone = 40\n\
                          [batch.limits]\npending_authorizations_per_account = 200\n";
            let s = load(&[], Some(bounds)).expect("bounds");
            assert_eq!(
                (
                    s.batch.pending_authorizations,
                    s.batch.per_zone,
                    s.batch.limits.pending_authorizations_per_account
                ),
                (Some(250), Some(40), Some(200))
            );
            let d = load(&[], None).expect("defaults");
            assert_eq!(
                (d.batch.pending_authorizations, d.batch.per_zone),
                (None, None)
            );
            Ok(())
        });
    }

    #[test]
    fn batch_store_from_file_and_env_with_the_password_hidden() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(load(&[], None).expect("defaults").batch.store, None);
            let toml = "[batch]\nstore = \"postgres://fleet:pw-in-file@db:5432/certs\"\n\
                        lease_secs = 30\n";
            let s = load(&[], Some(toml)).expect("store");
            let store = s.batch.store.clone().expect("store set");
            assert_eq!(store.0, "postgres://fleet:pw-in-file@db:5432/certs");
            assert_eq!(s.batch.lease_secs, 30);
            let shown = format!("{s:?}");
            assert!(!shown.contains("pw-in-file"), "{shown}");
            assert!(
                shown.contains("postgres://fleet:***@db:5432/certs"),
                "{shown}"
            );
            jail.set_env("CERTFLEET_BATCH__STORE", "postgres://other@db2/x");
            let s = load(&[], Some(toml)).expect("env");
            assert_eq!(
                s.batch.store.expect("env store").0,
                "postgres://other@db2/x"
            );
            Ok(())
        });
    }
}
