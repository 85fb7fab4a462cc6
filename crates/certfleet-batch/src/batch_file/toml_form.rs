//! The TOML form, read through `toml`'s spanned document tree so every problem gets its
//! line and all of them are collected in one pass.

use std::path::PathBuf;
use std::str::FromStr;

use certfleet_keys::KeyAlgorithm;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    BatchFile, CertFields, Challenge, Format, KeySource, Located, ParseOptions, Validator, diag,
};
use crate::error::{BatchFileError, Diagnostic};

/// The fields of `[[cert]]` (all but `names` also of `[defaults]`): the options of
/// `certfleet issue` under the same names (`key`, `key_alg`, `challenge`, `dns_plugin`,
/// `profile`, `preferred_chain`, `out`), plus `key_algorithm` and `output_dir`, the names
/// used before.
const CERT_KEYS: &[&str] = &[
    "names",
    "key",
    "key_alg",
    "key_algorithm",
    "challenge",
    "dns_plugin",
    "profile",
    "preferred_chain",
    "out",
    "output_dir",
    "deploy_hook",
];

struct Lines<'t> {
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
    text: &'t str,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Lines<'t> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts, text }
    }

    /// 1-based line and column of a byte offset.
    fn at(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line.saturating_sub(1)];
        let column = self
            .text
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        (line.max(1), column)
    }

    fn diag<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.at(at.span().start);
        diag(line, Some(column), message)
    }
}

pub(super) fn parse(
    text: &str,
    source_name: &str,
    options: &ParseOptions,
) -> Result<BatchFile, BatchFileError> {
    let lines = Lines::new(text);
    let (doc, errors) = DeTable::parse_recoverable(text);
    let mut v = Validator::new(options);
    if !errors.is_empty() {
        for e in errors {
            let (line, column) = e.span().map_or((1, 1), |s| lines.at(s.start));
            v.fatal(diag(
                line,
                Some(column),
                format!("TOML syntax: {}", e.message().trim()),
            ));
        }
        return v.finish(Format::Toml, source_name);
    }
    let doc = doc.into_inner();
    if let Some((key, value)) = doc.iter().find(|(k, _)| k.get_ref() == "defaults") {
        match value.get_ref() {
            DeValue::Table(t) => {
                let mut problems = Vec::new();
                let fields = fields(&lines, t, &mut problems, false);
                for p in problems {
                    v.fatal(p);
                }
                v.set_file_defaults(fields);
            }
            _ => v.fatal(lines.diag(key, "`defaults` must be a table ([defaults])")),
        }
    }
    for (key, value) in doc.iter() {
        match key.get_ref().as_ref() {
            "defaults" => {}
            "cert" => match value.get_ref() {
                DeValue::Array(entries) => {
                    for entry in entries.iter() {
                        cert(&lines, entry, &mut v);
                    }
                }
                _ => v.fatal(lines.diag(key, "`cert` must be an array of tables ([[cert]])")),
            },
            other => v.fatal(lines.diag(
                key,
                format!("unknown key `{other}` (expected [defaults] and [[cert]] entries)"),
            )),
        }
    }
    v.finish(Format::Toml, source_name)
}

fn cert(lines: &Lines<'_>, entry: &Spanned<DeValue<'_>>, v: &mut Validator<'_>) {
    let (line, _) = lines.at(entry.span().start);
    let DeValue::Table(t) = entry.get_ref() else {
        v.fatal(lines.diag(entry, "each `cert` entry must be a table"));
        return;
    };
    let mut problems = Vec::new();
    let fields = fields(lines, t, &mut problems, true);
    let mut names = Vec::new();
    match t.iter().find(|(k, _)| k.get_ref() == "names") {
        None => problems.push(diag(line, None, "the certificate has no `names`")),
        Some((_, value)) => match value.get_ref() {
            DeValue::String(s) => {
                let (l, c) = lines.at(value.span().start);
                names.extend(
                    s.split([' ', ',', '\t'])
                        .filter(|n| !n.is_empty())
                        .map(|n| Located {
                            value: n.to_owned(),
                            line: l,
                            column: Some(c),
                        }),
                );
            }
            DeValue::Array(items) => {
                for item in items.iter() {
                    let (l, c) = lines.at(item.span().start);
                    match item.get_ref().as_str() {
                        Some(s) => names.push(Located {
                            value: s.to_owned(),
                            line: l,
                            column: Some(c),
                        }),
                        None => problems.push(diag(l, Some(c), "each name must be a string")),
                    }
                }
                if items.is_empty() {
                    problems.push(lines.diag(value, "`names` is empty"));
                }
            }
            _ => problems.push(lines.diag(value, "`names` must be an array of strings")),
        },
    }
    if names.is_empty() && problems.is_empty() {
        problems.push(diag(line, None, "the certificate has no names"));
    }
    v.cert(line, names, &fields, &problems);
}

/// Reads the settings shared by `[defaults]` and `[[cert]]`.
fn fields(
    lines: &Lines<'_>,
    table: &DeTable<'_>,
    problems: &mut Vec<Diagnostic>,
    is_cert: bool,
) -> CertFields {
    let mut f = CertFields::default();
    let mut key_at = None;
    let mut out_at = None;
    for (key, value) in table.iter() {
        let name = key.get_ref().as_ref();
        if name == "names" && is_cert {
            continue;
        }
        if !CERT_KEYS.contains(&name) || name == "names" {
            let allowed = if is_cert { CERT_KEYS } else { &CERT_KEYS[1..] };
            problems.push(lines.diag(
                key,
                format!(
                    "unknown key `{name}` (expected one of: {})",
                    allowed.join(", ")
                ),
            ));
            continue;
        }
        let Some(s) = value.get_ref().as_str().map(str::trim) else {
            problems.push(lines.diag(value, format!("`{name}` must be a string")));
            continue;
        };
        let mut bad = |msg: String| problems.push(lines.diag(value, msg));
        match name {
            "key" => match KeySource::from_str(s) {
                // The store keeps the reference to log in again on later runs and renewals,
                // and never a PIN.
                Ok(KeySource::Existing(r)) if r.has_pin_value() => bad(
                    "a key reference in a batch file cannot carry its PIN (pin-value=…): the \
                     batch store keeps the reference for later runs and renewals, never a PIN; \
                     use pin-source=file:/path/to/pin or pin-source=env:VARIABLE"
                        .to_owned(),
                ),
                Ok(k) => {
                    if key_at.replace(value.span()).is_some() {
                        bad("set either `key` or `key_alg`, not both".to_owned());
                    }
                    f.set.key = Some(k);
                }
                Err(e) => bad(format!(
                    "invalid key: {e} (expected an algorithm such as es256, or a key reference)"
                )),
            },
            "key_alg" | "key_algorithm" => match KeyAlgorithm::from_str(s) {
                Ok(a) => {
                    if key_at.replace(value.span()).is_some() {
                        bad("set either `key` or `key_alg`, not both".to_owned());
                    }
                    f.set.key = Some(KeySource::Generate(a));
                }
                Err(_) => bad(format!(
                    "unknown key algorithm {s:?} (expected one of: es256, es384, rs256, rs3072, rs4096, eddsa)"
                )),
            },
            "challenge" => match Challenge::from_str(s) {
                Ok(c) => f.set.challenge = Some(c),
                Err(e) => bad(e),
            },
            "dns_plugin" if s.is_empty() => bad("`dns_plugin` is empty".to_owned()),
            "dns_plugin" => {
                f.set.dns_plugin = Some(s.to_owned());
                f.line_of_dns_plugin = Some(lines.at(value.span().start).0);
            }
            "profile" if s.is_empty() => bad("`profile` is empty".to_owned()),
            "profile" => f.set.profile = Some(s.to_owned()),
            "preferred_chain" if s.is_empty() => bad("`preferred_chain` is empty".to_owned()),
            "preferred_chain" => f.set.preferred_chain = Some(s.to_owned()),
            // Empty: no hook for this certificate (unsets the default).
            "deploy_hook" => f.set.deploy_hook = Some(s.to_owned()),
            _ if s.is_empty() => bad(format!("`{name}` is empty")),
            _ => {
                if out_at.replace(value.span()).is_some() {
                    bad("set either `out` or `output_dir`, not both".to_owned());
                }
                f.set.output_dir = Some(PathBuf::from(s));
            }
        }
    }
    f
}
