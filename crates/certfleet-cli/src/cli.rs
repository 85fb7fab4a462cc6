//! Command-line grammar. The shape is a contract (docs/cli.md); change both together.
// Doc comments here are the `--help` text users read, not rustdoc: `[::]:80` and
// `<state-dir>` are meant literally.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "certfleet",
    version,
    about = "ACME certificate automation: accounts, issuance, renewal and revocation",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    /// TOML configuration file (settings below override it)
    #[arg(long, global = true, env = "CERTFLEET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where accounts, certificates and the renewal inventory live
    #[arg(long, global = true, env = "CERTFLEET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// ACME directory URL of the CA (default: Let's Encrypt production)
    #[arg(long, global = true, env = "CERTFLEET_DIRECTORY", value_name = "URL")]
    pub directory: Option<String>,

    /// Extra trusted root for the CA's HTTPS endpoint (PEM; repeatable), e.g. a private CA
    /// (env CERTFLEET_CA_ROOTS: paths separated by ':')
    #[arg(long = "ca-root", global = true, value_name = "PEM")]
    pub ca_roots: Vec<PathBuf>,

    /// More output (-v: debug, -vv: trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Accept a plain http:// ACME directory (local test CAs only: every request, signed
    /// account and order data included, travels unencrypted)
    #[arg(long, global = true)]
    pub insecure_http_directory: bool,

    /// Log lines as text (RFC 3339 timestamps to the millisecond) or one JSON object each
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate and inspect keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Register and manage the ACME account
    #[command(subcommand)]
    Account(AccountCommand),
    /// Obtain a certificate
    Issue(IssueArgs),
    /// Renew certificates that are due
    Renew(RenewArgs),
    /// Revoke a certificate
    Revoke(RevokeArgs),
    /// List the certificates in the inventory: names, serial, expiry, renewal time, status
    Certificates(CertificatesArgs),
    /// Delete a certificate: its files and its inventory entry (optionally revoke it first)
    Delete(DeleteArgs),
    /// List and check DNS-01 provider plugins
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Issue many certificates from a batch file: durable, resumable, rate-limit aware
    #[command(subcommand)]
    Batch(BatchCommand),
    /// dns-persist-01: the persistent `_validation-persist` records for this account and CA
    #[command(subcommand)]
    Persist(PersistCommand),
}

#[derive(Debug, Subcommand)]
pub enum PersistCommand {
    /// Print the TXT records to publish once (zone-file lines, or JSON with --json)
    Records {
        /// Names to authorize (`*.example.com` gets policy=wildcard)
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        /// Issuer domain name the CA accepts (default: the directory's first caaIdentities)
        #[arg(long, value_name = "DOMAIN")]
        issuer: Option<String>,
        /// Add policy=wildcard: the record also authorizes wildcards and subdomains
        #[arg(long)]
        wildcard: bool,
        /// Add persistUntil=UNIX_SECONDS: the CA ignores the record afterwards
        #[arg(long, value_name = "UNIX_SECONDS")]
        persist_until: Option<u64>,
        /// TTL of the zone-file lines
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
        /// Print JSON: [{domain, name, value}]
        #[arg(long)]
        json: bool,
        /// Ask every authoritative server ([dns01.propagation]) whether each record is served
        #[arg(long, conflicts_with = "json")]
        check: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Run (or resume) a batch: issue every certificate of FILE
    Run(Box<BatchRunArgs>),
    /// Print how many orders and certificates FILE needs and the earliest finish under the
    /// rate limits
    Plan {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Rate-limit preset: auto | letsencrypt | letsencrypt-staging | none (default:
        /// [batch] rate_limits, else auto: by the directory URL)
        #[arg(long, value_name = "PRESET")]
        rate_limits: Option<String>,
    },
    /// Show the batches in the state store and their jobs per state (works while a run is
    /// going)
    Status {
        /// List every job of the newest batch (JSON)
        #[arg(long)]
        jobs: bool,
        /// State store: postgres://… (default: [batch] store, else the SQLite file in the
        /// state directory)
        #[arg(
            long,
            env = "CERTFLEET_BATCH_STORE",
            hide_env_values = true,
            value_name = "URL"
        )]
        store: Option<String>,
    },
    /// Write the certificates of the newest batch from a fleet's store into DIR (one
    /// directory per certificate, written whole, only when changed)
    Deploy {
        /// Directory to deploy into (`DIR/<first name>/`)
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Deploy only the certificates holding NAME (repeatable; default: all)
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// State store: postgres://… (default: [batch] store)
        #[arg(long, env = "CERTFLEET_BATCH_STORE", value_name = "URL")]
        store: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct BatchRunArgs {
    /// Batch file: TOML with [defaults] and [[cert]] entries, or a plain list (one
    /// certificate per line, names separated by spaces or commas)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Start with the valid entries even if some are invalid (they are reported)
    #[arg(long)]
    pub skip_invalid: bool,
    /// Write a JSON report (one entry per certificate) to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Orders being worked on at once; orders waiting for DNS or the CA hold no slot
    /// (default: [batch] concurrency, 32)
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Authorizations pending at the CA at once, i.e. orders waiting for DNS or validation
    /// (default: [batch] pending_authorizations, else the preset's: letsencrypt 300, none
    /// 1000)
    #[arg(long, value_name = "N")]
    pub pending_authorizations: Option<usize>,
    /// Orders of one DNS zone (registered domain) with records presented at once
    /// (default: [batch] per_zone, else no bound of its own)
    #[arg(long, value_name = "N")]
    pub per_zone: Option<usize>,
    /// Rate-limit preset: auto | letsencrypt | letsencrypt-staging | none (default:
    /// [batch] rate_limits, else auto: Let's Encrypt's presets for its directories, none
    /// for other CAs)
    #[arg(long, value_name = "PRESET")]
    pub rate_limits: Option<String>,
    /// Exit (status 75, report written) instead of waiting when nothing is due within
    /// DURATION (e.g. 1m, 2h); deferred jobs are listed with the time they are due
    #[arg(long, value_name = "DURATION")]
    pub max_wait: Option<String>,
    /// Deploy hook of the batch's certificates whose entry sets none (the entry's
    /// deploy_hook wins; default [hooks] deploy); run after the batch for each certificate
    /// this run issued, and recorded for renewals
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    pub deploy_hook: Option<String>,
    /// Run once after the batch if it issued any certificate, with CERTFLEET_CHANGED_DIRS
    /// and CERTFLEET_CHANGED_NAMES (one line per certificate) (default: [hooks] batch)
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    pub batch_hook: Option<String>,
    /// State store shared by several nodes: postgres://user@host:port/db?sslmode=disable
    /// (default: [batch] store, else the SQLite file in the state directory)
    #[arg(
        long,
        env = "CERTFLEET_BATCH_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub store: Option<String>,
    /// Test builds only (feature `test-hooks`): stop this process (SIGSTOP) once, when the
    /// certificate with this first name reaches the fleet's fenced publish
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "NAME", hide = true)]
    pub test_stop_before_fenced_publish: Option<String>,
    /// Test builds only (feature `test-hooks`): stop this process (SIGSTOP) once, when the
    /// key generated for the certificate with this first name, or restored from the store,
    /// is about to be recorded
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "NAME", hide = true)]
    pub test_stop_before_key_recorded: Option<String>,
    /// Test builds only (feature `test-hooks`): stop this process (SIGSTOP) once, when the
    /// certificate with this first name has `ordering` written and its newOrder is next
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "NAME", hide = true)]
    pub test_stop_before_new_order: Option<String>,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Defaults for every certificate of the batch (its [defaults] and [[cert]] entries
    /// override them): the per-certificate options of `issue`
    #[command(flatten)]
    pub cert: CertOptions,
}

/// The per-certificate options shared by `issue` and `batch run` (same names, same
/// meaning; in a batch file they are fields of [defaults] and [[cert]]).
#[derive(Debug, Args, Clone, Default)]
pub struct CertOptions {
    /// Certificate key: a key reference (it stays where it is), or an algorithm name
    /// (es256, es384, rs256, rs3072, rs4096, eddsa) for a new file key as privkey.pem
    #[arg(long, value_name = "KEYREF|ALG", conflicts_with = "key_alg")]
    pub key: Option<certfleet_issue::KeyChoice>,
    /// Generate a new file key of this type as privkey.pem (default es256)
    #[arg(long, value_name = "ALG")]
    pub key_alg: Option<certfleet_keys::KeyAlgorithm>,
    /// How to prove control of the names
    #[arg(long, value_enum)]
    pub challenge: Option<ChallengeArg>,
    /// Certificate profile to ask for (CA-specific, see the directory's meta.profiles)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Prefer the chain whose root (or any issuer) has this common name
    #[arg(long, value_name = "CN")]
    pub preferred_chain: Option<String>,
    /// Output directory (`issue`: the certificate's directory, default
    /// <state-dir>/certs/<first name>; `batch run`: the parent of every certificate's
    /// directory, <DIR>/<first name>)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl CertOptions {
    /// `--key` or `--key-alg`, whichever was given.
    pub fn key_choice(&self) -> Option<certfleet_issue::KeyChoice> {
        self.key
            .clone()
            .or(self.key_alg.map(certfleet_issue::KeyChoice::Generate))
    }
}

impl From<ChallengeArg> for certfleet_issue::ChallengeKind {
    fn from(c: ChallengeArg) -> Self {
        match c {
            ChallengeArg::Http01 => certfleet_issue::ChallengeKind::Http01,
            ChallengeArg::Dns01 => certfleet_issue::ChallengeKind::Dns01,
            ChallengeArg::DnsPersist01 => certfleet_issue::ChallengeKind::DnsPersist01,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List the plugins found (JSON: name, path, version, or why it cannot be loaded)
    List,
    /// Load a plugin, validate its [plugins.NAME] settings and test its credentials
    Check {
        /// Plugin name (or a path to the library)
        #[arg(value_name = "NAME")]
        name: String,
        /// A name to be issued for (repeatable): the plugin checks every zone it needs
        /// (its `_acme-challenge` CNAME followed), e.g. `--name www.example.com`
        #[arg(long = "name", value_name = "DOMAIN")]
        names: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// A PEM file (--out)
    File,
    /// A PKCS#11 token: an HSM, SoftHSM2 (--module, --token, --label, --pin-source)
    Pkcs11,
    /// A TPM 2.0 (--out key file or --tpm-handle; --tcti)
    Tpm,
}

/// Where a hardware key lives and how to reach it (`key generate` and `key list`).
#[derive(Debug, Args, Clone, Default)]
pub struct DeviceArgs {
    /// PKCS#11 module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// PKCS#11 token label (tokens are found by label, never by slot number)
    #[arg(long, value_name = "LABEL")]
    pub token: Option<String>,
    /// Label of the new key on the token (CKA_LABEL)
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// CKA_ID of the new key, hex (default: a fresh random-looking id)
    #[arg(long, value_name = "HEX")]
    pub id: Option<String>,
    /// Where the token PIN is read from: file:/path (first line) or env:VARIABLE; recorded
    /// in the key reference, the PIN itself never is
    #[arg(long, value_name = "SOURCE")]
    pub pin_source: Option<String>,
    /// How to reach the TPM, e.g. device:/dev/tpmrm0 (default) or
    /// swtpm:host=127.0.0.1,port=2321
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// Make the TPM key persistent at this handle (0x81000000-0x817fffff) instead of --out
    #[arg(long, value_name = "HANDLE")]
    pub tpm_handle: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a key and print its reference (hardware keys are made on the device)
    Generate {
        /// es256 | es384 | rs256 | rs3072 | rs4096 | eddsa
        #[arg(long, default_value = "es256")]
        alg: certfleet_keys::KeyAlgorithm,
        #[arg(long, value_enum, default_value = "file")]
        backend: Backend,
        /// Where to write the key (file backend) or the TPM key file (tpm); must not exist
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// List the keys of a backend (JSON): a token's private keys, a TPM's persistent keys,
    /// or the PEM keys in a directory
    List {
        #[arg(long, value_enum)]
        backend: Backend,
        /// Directory to look for PEM keys in (file backend)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Print a key's public JWK and RFC 7638 thumbprint
    Show {
        #[arg(value_name = "KEYREF")]
        key: String,
    },
    /// Signatures per second of a key at several concurrency levels (benchmark)
    #[command(hide = true)]
    Bench {
        #[arg(value_name = "KEYREF")]
        key: String,
        /// Concurrent signers, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        signers: Vec<usize>,
        /// Milliseconds to sign for at each level
        #[arg(long, default_value = "2000")]
        millis: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create (or find) the account for a key at the CA
    Register {
        /// Account key reference (file:/path.pem or a path, pkcs11:…, tpm:…)
        #[arg(long, value_name = "KEYREF")]
        key: String,
        /// Contact URL, e.g. mailto:ops@example.com (repeatable)
        #[arg(long, value_name = "URL")]
        contact: Vec<String>,
        /// Agree to the CA's terms of service
        #[arg(long)]
        agree_tos: bool,
        #[command(flatten)]
        eab: EabArgs,
    },
    /// Show the account as the CA sees it
    Show,
    /// Look up the account of a key without creating one (onlyReturnExisting)
    Find {
        #[arg(long, value_name = "KEYREF")]
        key: String,
    },
    /// Replace the account's contact URLs
    Update {
        #[arg(long, value_name = "URL", required = true)]
        contact: Vec<String>,
    },
    /// Move the account to a new key; the old key stops working
    Rollover {
        #[arg(long, value_name = "KEYREF")]
        new_key: String,
    },
    /// Deactivate the account for good (irreversible)
    Deactivate {
        /// Confirm: deactivation cannot be undone
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct EabArgs {
    /// External account binding key id given by the CA
    #[arg(
        long,
        value_name = "KID",
        requires = "eab_hmac_key",
        allow_hyphen_values = true
    )]
    pub eab_kid: Option<String>,
    /// External account binding MAC key (base64url) given by the CA
    #[arg(
        long,
        value_name = "B64URL",
        requires = "eab_kid",
        allow_hyphen_values = true,
        env = "CERTFLEET_EAB_HMAC_KEY",
        hide_env_values = true
    )]
    pub eab_hmac_key: Option<String>,
    /// MAC algorithm for the binding
    #[arg(long, value_name = "ALG", default_value = "HS256")]
    pub eab_alg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChallengeArg {
    #[value(name = "http-01")]
    Http01,
    #[value(name = "dns-01")]
    Dns01,
    #[value(name = "dns-persist-01")]
    DnsPersist01,
}

#[derive(Debug, Args, Clone, Default)]
pub struct SolverArgs {
    /// Address for the built-in http-01 server (default [::]:80)
    #[arg(long, value_name = "ADDR", conflicts_with = "webroot")]
    pub http_listen: Option<SocketAddr>,
    /// Serve http-01 through files in this web server root instead
    #[arg(long, value_name = "DIR")]
    pub webroot: Option<PathBuf>,
    /// DNS provider plugin for dns-01 (settings in [plugins.NAME] of the config file)
    #[arg(long, value_name = "NAME")]
    pub dns_plugin: Option<String>,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Name to include (repeatable; the first names the output directory)
    // Hyphen values allowed so `--name -a.com` reaches name validation and gets a clear
    // message instead of clap's "unexpected argument".
    #[arg(
        long = "name",
        value_name = "NAME",
        required = true,
        allow_hyphen_values = true
    )]
    pub names: Vec<String>,
    #[command(flatten)]
    pub cert: CertOptions,
    #[command(flatten)]
    pub solver: SolverArgs,
    #[command(flatten)]
    pub hooks: HookArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct HookArgs {
    /// Shell command run after the certificate was written (recorded for renewals), with
    /// RENEWED_LINEAGE, RENEWED_DOMAINS and CERTFLEET_* variables; '' removes a recorded one
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    pub deploy_hook: Option<String>,
    /// Keep the certificate key on renewal (recorded; default: a new key every renewal;
    /// never after a keyCompromise revocation)
    #[arg(long)]
    pub reuse_key: bool,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Renew the certificate whose first name is NAME
    #[arg(
        long = "name",
        value_name = "NAME",
        conflicts_with = "all",
        required_unless_present = "all"
    )]
    pub name: Option<String>,
    /// Renew every certificate in the inventory that is due
    #[arg(long)]
    pub all: bool,
    /// Renew even if not due
    #[arg(long)]
    pub force: bool,
    /// Override the challenge settings recorded at issuance
    #[command(flatten)]
    pub solver: SolverArgs,
    #[command(flatten)]
    pub hooks: HookArgs,
}

#[derive(Debug, Args)]
pub struct CertificatesArgs {
    /// One JSON object per certificate, as a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// First name of the certificate to delete (as `certfleet certificates` shows it)
    #[arg(long = "name", value_name = "NAME")]
    pub name: String,
    /// Revoke the certificate at its CA first (reason cessationOfOperation)
    #[arg(long)]
    pub revoke: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReasonArg {
    #[value(name = "unspecified")]
    Unspecified,
    #[value(name = "keyCompromise")]
    KeyCompromise,
    #[value(name = "superseded")]
    Superseded,
    #[value(name = "cessationOfOperation")]
    CessationOfOperation,
    #[value(name = "affiliationChanged")]
    AffiliationChanged,
    #[value(name = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Certificate to revoke (PEM; the first certificate in the file)
    #[arg(long, value_name = "PEM")]
    pub cert: PathBuf,
    #[arg(long, value_enum)]
    pub reason: Option<ReasonArg>,
    /// Sign with the certificate's key instead of the account key
    #[arg(long, value_name = "KEYREF")]
    pub cert_key: Option<String>,
}

#[cfg(test)]
mod docs_examples {
    use clap::Parser;

    use super::Cli;

    /// Splits a documented command line like a shell would for these examples: spaces
    /// separate words, single quotes group them.
    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        let mut quoted = false;
        let mut any = false;
        for c in line.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    any = true;
                }
                ' ' if !quoted => {
                    if any {
                        out.push(std::mem::take(&mut word));
                        any = false;
                    }
                }
                c => {
                    word.push(c);
                    any = true;
                }
            }
        }
        if any {
            out.push(word);
        }
        out
    }

    /// Every `certfleet …` example in docs/cli.md parses with the real grammar.
    #[test]
    fn every_example_in_the_docs_parses() {
        let doc = include_str!("../../../docs/cli.md");
        let mut in_sh = false;
        let mut parsed = 0;
        for line in doc.lines() {
            if line.starts_with("```") {
                in_sh = line == "```sh";
                continue;
            }
            if !in_sh || !line.starts_with("certfleet ") {
                continue;
            }
            let args = words(line);
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("docs/cli.md example does not parse: {line}\n{e}");
            }
            parsed += 1;
        }
        assert!(parsed >= 10, "only {parsed} examples found in docs/cli.md");
    }

    #[test]
    fn a_wrong_example_would_fail() {
        assert!(Cli::try_parse_from(words("certfleet batch run f --no-such-flag")).is_err());
        assert_eq!(words("a 'b c' d"), ["a", "b c", "d"]);
    }
}
