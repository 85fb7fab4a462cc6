//! Batch input: a TOML file with `[defaults]` and `[[cert]]` entries, or a plain list (one
//! certificate per line, names separated by spaces or commas, `#` starts a comment).
//!
//! ```toml
//! [defaults]
//! key = "es256"                  # a new key of this algorithm, or a key reference
//!                                # ("pkcs11:token=fleet;object=web", "file:/keys/k.pem")
//! challenge = "dns-01"           # or "http-01"
//! dns_plugin = "rfc2136"
//! profile = "tlsserver"
//! preferred_chain = "ISRG Root X1"
//! output_dir = "/etc/certfleet/certs"   # each certificate goes to <output_dir>/<first name>
//! deploy_hook = "systemctl reload nginx" # run after this run issued the certificate
//!
//! [[cert]]
//! names = ["example.com", "www.example.com"]
//!
//! [[cert]]
//! names = ["*.example.net"]
//! key = "file:/etc/certfleet/keys/example.net.pem"
//! ```
//!
//! The whole file is validated before anything starts; every problem is reported with its
//! line ([`BatchFileError::Invalid`]). With [`ParseOptions::skip_invalid`], certificates
//! with problems are left out (listed in [`BatchFile::skipped`]) and the rest goes ahead;
//! problems with the file itself (syntax, `[defaults]`) still stop everything. A name
//! requested by two certificates is a warning.

mod toml_form;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use certfleet_acme::normalize_dns_name;
use sha2::{Digest, Sha256};

use crate::error::{BatchFileError, Diagnostic};
use crate::governor::NameSet;
use crate::store::{JobSpec, NewJob};

/// Names in one certificate when nothing else is configured (Let's Encrypt `classic`).
pub const DEFAULT_MAX_NAMES: usize = 100;

/// The two input forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    List,
}

impl Format {
    /// `.toml` files, and files whose first meaningful line is a `[table]` or a
    /// `key = value`, are TOML; anything else is a list.
    pub fn detect(path: Option<&Path>, text: &str) -> Format {
        if path.and_then(Path::extension).is_some_and(|e| e == "toml") {
            return Format::Toml;
        }
        let first = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .find(|l| !l.is_empty());
        match first {
            Some(l) if l.starts_with('[') || l.contains('=') => Format::Toml,
            _ => Format::List,
        }
    }
}

/// How the certificate key is obtained: an existing key, or a new one of an algorithm.
pub use certfleet_issue::KeyChoice as KeySource;

/// How names are proven.
pub use certfleet_issue::ChallengeKind as Challenge;

/// Settings every certificate inherits unless it sets its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertDefaults {
    pub key: Option<KeySource>,
    pub challenge: Option<Challenge>,
    pub dns_plugin: Option<String>,
    pub profile: Option<String>,
    pub preferred_chain: Option<String>,
    /// Parent of the certificate directories (`<output_dir>/<first name>`).
    pub output_dir: Option<PathBuf>,
    /// Shell command run by the caller after it issued the certificate (not part of the
    /// job: changing it neither changes the batch's digest nor re-orders anything).
    pub deploy_hook: Option<String>,
}

/// Parsing options (from the command line).
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// Leave out invalid certificates instead of refusing the file.
    pub skip_invalid: bool,
    /// Defaults under the file's own `[defaults]` (command-line flags, configuration).
    pub defaults: CertDefaults,
    /// Most names in one certificate.
    pub max_names: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            skip_invalid: false,
            defaults: CertDefaults::default(),
            max_names: DEFAULT_MAX_NAMES,
        }
    }
}

/// One certificate of the batch, defaults applied, names normalized (first name first,
/// duplicates removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRequest {
    /// Line of the entry (`[[cert]]` header or list line).
    pub line: usize,
    pub names: Vec<String>,
    pub key: Option<KeySource>,
    pub challenge: Option<Challenge>,
    pub dns_plugin: Option<String>,
    pub profile: Option<String>,
    pub preferred_chain: Option<String>,
    pub output_dir: Option<PathBuf>,
    /// See [`CertDefaults::deploy_hook`]; `deploy_hook = ""` in an entry unsets the default.
    pub deploy_hook: Option<String>,
}

impl CertRequest {
    /// The exact name set.
    pub fn name_set(&self) -> NameSet {
        NameSet::new(&self.names)
    }

    /// Identity of the certificate within its batch: names, key and profile (two
    /// certificates for the same names with different keys are different jobs).
    pub fn job_key(&self) -> String {
        let key = match &self.key {
            Some(KeySource::Existing(r)) => r.to_string(),
            Some(KeySource::Generate(a)) => a.as_str().to_owned(),
            None => String::new(),
        };
        format!(
            "{}|{key}|{}",
            self.name_set().key(),
            self.profile.as_deref().unwrap_or("")
        )
    }

    /// The job to store.
    pub fn to_job(&self) -> NewJob {
        let (key, key_algorithm) = match &self.key {
            Some(KeySource::Existing(r)) => (Some(r.clone()), None),
            Some(KeySource::Generate(a)) => (None, Some(*a)),
            None => (None, None),
        };
        NewJob {
            key: self.job_key(),
            spec: JobSpec {
                names: self.names.clone(),
                key,
                key_algorithm,
                challenge: self.challenge,
                dns_plugin: self.dns_plugin.clone(),
                profile: self.profile.clone(),
                output_dir: self.output_dir.clone(),
                replaces: None,
                source_line: Some(self.line),
                preferred_chain: self.preferred_chain.clone(),
            },
        }
    }
}

/// A validated batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchFile {
    pub format: Format,
    pub certs: Vec<CertRequest>,
    /// Names requested twice and other things worth a look.
    pub warnings: Vec<Diagnostic>,
    /// Problems of certificates left out ([`ParseOptions::skip_invalid`]).
    pub skipped: Vec<Diagnostic>,
    /// SHA-256 (hex) of the validated certificates: the same input gives the same digest.
    pub digest: String,
}

impl BatchFile {
    /// Reads and validates a batch file (format by [`Format::detect`]).
    pub fn load(path: &Path, options: &ParseOptions) -> Result<BatchFile, BatchFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| BatchFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let format = Format::detect(Some(path), &text);
        BatchFile::parse(&text, format, &path.display().to_string(), options)
    }

    /// Validates `text` in `format`; `source_name` names it in messages.
    pub fn parse(
        text: &str,
        format: Format,
        source_name: &str,
        options: &ParseOptions,
    ) -> Result<BatchFile, BatchFileError> {
        match format {
            Format::Toml => toml_form::parse(text, source_name, options),
            Format::List => BatchFile::parse_list(text, source_name, options),
        }
    }

    /// Validates the plain list form.
    pub fn parse_list(
        text: &str,
        source_name: &str,
        options: &ParseOptions,
    ) -> Result<BatchFile, BatchFileError> {
        let mut v = Validator::new(options);
        for (i, raw_line) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw_line.split('#').next().unwrap_or("");
            let mut names = Vec::new();
            let mut offset = 0;
            for token in content.split([' ', '\t', ',']) {
                if !token.is_empty() {
                    names.push(Located {
                        value: token.to_owned(),
                        line,
                        column: Some(offset + 1),
                    });
                }
                offset += token.len() + 1;
            }
            if names.is_empty() {
                continue;
            }
            v.cert(line, names, &CertFields::default(), &[]);
        }
        v.finish(Format::List, source_name)
    }

    /// The jobs to store, in file order.
    pub fn jobs(&self) -> Vec<NewJob> {
        self.certs.iter().map(CertRequest::to_job).collect()
    }
}

/// A value with where it was written.
#[derive(Clone, Debug)]
pub(crate) struct Located {
    pub value: String,
    pub line: usize,
    pub column: Option<usize>,
}

/// Per-certificate settings as written (already checked one by one).
#[derive(Clone, Debug, Default)]
pub(crate) struct CertFields {
    /// The settings this table sets (`None`: inherited).
    pub set: CertDefaults,
    pub line_of_dns_plugin: Option<usize>,
}

impl CertDefaults {
    /// The settings `over` sets, else these: how `[defaults]` layer over the command line's
    /// and a `[[cert]]` over `[defaults]`.
    fn under(&self, over: &CertDefaults) -> CertDefaults {
        CertDefaults {
            key: over.key.clone().or_else(|| self.key.clone()),
            challenge: over.challenge.or(self.challenge),
            dns_plugin: over.dns_plugin.clone().or_else(|| self.dns_plugin.clone()),
            profile: over.profile.clone().or_else(|| self.profile.clone()),
            preferred_chain: over
                .preferred_chain
                .clone()
                .or_else(|| self.preferred_chain.clone()),
            output_dir: over.output_dir.clone().or_else(|| self.output_dir.clone()),
            deploy_hook: over
                .deploy_hook
                .clone()
                .or_else(|| self.deploy_hook.clone()),
        }
    }
}

/// Collects certificates and problems across the whole file.
pub(crate) struct Validator<'o> {
    options: &'o ParseOptions,
    defaults: CertDefaults,
    certs: Vec<CertRequest>,
    /// File-level problems: always fatal.
    fatal: Vec<Diagnostic>,
    /// Problems of single certificates: fatal unless skipping.
    cert_problems: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    first_use: HashMap<String, usize>,
    job_keys: HashMap<String, usize>,
    dirs: HashMap<PathBuf, usize>,
}

pub(crate) fn diag(line: usize, column: Option<usize>, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        line,
        column,
        message: message.into(),
    }
}

impl<'o> Validator<'o> {
    pub(crate) fn new(options: &'o ParseOptions) -> Validator<'o> {
        Validator {
            options,
            defaults: options.defaults.clone(),
            certs: Vec::new(),
            fatal: Vec::new(),
            cert_problems: Vec::new(),
            warnings: Vec::new(),
            first_use: HashMap::new(),
            job_keys: HashMap::new(),
            dirs: HashMap::new(),
        }
    }

    /// The file's `[defaults]`, layered over the options' defaults.
    pub(crate) fn set_file_defaults(&mut self, fields: CertFields) {
        self.defaults = self.defaults.under(&fields.set);
    }

    pub(crate) fn fatal(&mut self, d: Diagnostic) {
        self.fatal.push(d);
    }

    /// Validates one certificate; `problems` are those already found in its fields.
    pub(crate) fn cert(
        &mut self,
        line: usize,
        names: Vec<Located>,
        fields: &CertFields,
        problems: &[Diagnostic],
    ) {
        let mut errs: Vec<Diagnostic> = problems.to_vec();
        let mut normalized: Vec<String> = Vec::new();
        for n in &names {
            match normalize_dns_name(&n.value) {
                Ok(name) if normalized.contains(&name) => self.warnings.push(diag(
                    n.line,
                    n.column,
                    format!("name {name} is listed twice in this certificate; using it once"),
                )),
                Ok(name) => normalized.push(name),
                Err(e) => errs.push(diag(n.line, n.column, e.to_string())),
            }
        }
        if names.is_empty() && problems.is_empty() {
            errs.push(diag(line, None, "the certificate has no names"));
        }
        if normalized.len() > self.options.max_names {
            errs.push(diag(
                line,
                None,
                format!(
                    "the certificate has {} names; at most {} are allowed in one certificate",
                    normalized.len(),
                    self.options.max_names
                ),
            ));
        }
        let s = self.defaults.under(&fields.set);
        let cert = CertRequest {
            line,
            key: s.key,
            challenge: s.challenge,
            dns_plugin: s.dns_plugin,
            profile: s.profile,
            preferred_chain: s.preferred_chain,
            output_dir: s.output_dir,
            deploy_hook: s.deploy_hook.filter(|h| !h.trim().is_empty()),
            names: normalized,
        };
        if cert.challenge == Some(Challenge::Http01) {
            if let Some(w) = cert.names.iter().find(|n| n.starts_with("*.")) {
                errs.push(diag(
                    line,
                    None,
                    format!("wildcard name {w} needs the dns-01 challenge, but http-01 is set"),
                ));
            }
            if cert.dns_plugin.is_some() && fields.set.dns_plugin.is_some() {
                errs.push(diag(
                    fields.line_of_dns_plugin.unwrap_or(line),
                    None,
                    "dns_plugin is set but the challenge is http-01",
                ));
            }
        }
        if errs.is_empty() {
            self.check_against_earlier(&cert, &mut errs);
        }
        if errs.is_empty() {
            for name in &cert.names {
                match self.first_use.get(name) {
                    Some(first) => self.warnings.push(diag(
                        line,
                        None,
                        format!("name {name} is also requested by the certificate on line {first}"),
                    )),
                    None => {
                        self.first_use.insert(name.clone(), line);
                    }
                }
            }
            self.certs.push(cert);
        } else {
            self.cert_problems.extend(errs);
        }
    }

    fn check_against_earlier(&mut self, cert: &CertRequest, errs: &mut Vec<Diagnostic>) {
        let key = cert.job_key();
        if let Some(first) = self.job_keys.get(&key) {
            errs.push(diag(
                cert.line,
                None,
                format!("the same certificate (names, key and profile) is already requested on line {first}"),
            ));
            return;
        }
        if let Some(first_name) = cert.names.first() {
            let dir = cert
                .output_dir
                .clone()
                .unwrap_or_default()
                .join(first_name.replace('*', "_"));
            if let Some(first) = self.dirs.get(&dir) {
                errs.push(diag(
                    cert.line,
                    None,
                    format!(
                        "certificate directory {} is already used by the certificate on line \
                         {first}; set a different output_dir",
                        dir.display()
                    ),
                ));
                return;
            }
            self.dirs.insert(dir, cert.line);
        }
        self.job_keys.insert(key, cert.line);
    }

    pub(crate) fn finish(
        mut self,
        format: Format,
        source_name: &str,
    ) -> Result<BatchFile, BatchFileError> {
        let mut problems = std::mem::take(&mut self.fatal);
        let skipping = self.options.skip_invalid && problems.is_empty();
        let mut skipped = Vec::new();
        if skipping {
            skipped = std::mem::take(&mut self.cert_problems);
        } else {
            problems.append(&mut self.cert_problems);
        }
        if !problems.is_empty() {
            problems.sort_by_key(|d| (d.line, d.column));
            return Err(BatchFileError::Invalid {
                source_name: source_name.to_owned(),
                problems,
            });
        }
        if self.certs.is_empty() && skipped.is_empty() {
            return Err(BatchFileError::Invalid {
                source_name: source_name.to_owned(),
                problems: vec![diag(1, None, "the batch requests no certificates")],
            });
        }
        skipped.sort_by_key(|d| (d.line, d.column));
        let mut hasher = Sha256::new();
        for job in self.certs.iter().map(CertRequest::to_job) {
            hasher.update(job.key.as_bytes());
            hasher.update(serde_json::to_vec(&job.spec).unwrap_or_default());
            hasher.update(b"\n");
        }
        let digest = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(BatchFile {
            format,
            certs: self.certs,
            warnings: self.warnings,
            skipped,
            digest,
        })
    }
}

#[cfg(test)]
mod tests;
