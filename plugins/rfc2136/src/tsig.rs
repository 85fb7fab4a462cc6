//! TSIG keys in the forms an admin already has: BIND `key` statements (`tsig-keygen`,
//! `ddns-confgen`), Knot's `key:` YAML (`keymgr -t NAME ALG`, used as-is), or `key_name` +
//! a base64 secret from the environment or a 0600 file; algorithm names; and a secret type
//! that never shows itself.

use std::fmt;

use base64::Engine as _;
use certfleet_plugin_abi::PluginError;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;

/// Algorithms the TSIG signer of hickory 0.26 (ring) can sign with. hmac-sha1 and
/// hmac-sha224 are valid TSIG algorithms that it cannot compute.
pub const SIGNABLE: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// Key bytes; `Debug` prints nothing of them.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A TSIG key ready to sign with.
#[derive(Clone, Debug)]
pub struct TsigKey {
    pub name: String,
    pub algorithm_name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Secret,
}

/// Maps a BIND/RFC 8945 algorithm name (any case, optional trailing dot) to what the signer
/// supports; other names are refused with the list of supported ones.
pub fn algorithm(name: &str) -> Result<TsigAlgorithm, PluginError> {
    let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
    match lower.as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        "hmac-sha1" | "hmac-sha224" => Err(PluginError::config(format!(
            "TSIG algorithm {lower}: valid but not supported by this plugin's TSIG signer \
             (supported: {}); make a new key with `tsig-keygen -a hmac-sha256 NAME`",
            SIGNABLE.join(", ")
        ))),
        "hmac-md5" | "hmac-md5.sig-alg.reg.int" => Err(PluginError::config(format!(
            "TSIG algorithm {lower}: MD5 is obsolete and not supported (supported: {}); make a \
             new key with `tsig-keygen -a hmac-sha256 NAME`",
            SIGNABLE.join(", ")
        ))),
        _ => Err(PluginError::config(format!(
            "unknown TSIG algorithm {name:?} (supported: {})",
            SIGNABLE.join(", ")
        ))),
    }
}

/// Decodes a base64 secret; the error never quotes it.
pub fn decode_secret(b64: &str, origin: &str) -> Result<Secret, PluginError> {
    let cleaned: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| PluginError::config(format!("{origin}: the TSIG secret is not base64")))?;
    if bytes.is_empty() {
        return Err(PluginError::config(format!(
            "{origin}: the TSIG secret is empty"
        )));
    }
    Ok(Secret(bytes))
}

/// The key settings of `[plugins.rfc2136]`.
#[derive(Debug, Default)]
pub struct KeySettings<'a> {
    pub key_file: Option<&'a str>,
    pub key_name: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    pub secret_env: Option<&'a str>,
    pub secret_file: Option<&'a str>,
}

/// Loads the TSIG key the settings name: `key_file` (BIND or Knot format), or `key_name` +
/// `algorithm` (default hmac-sha256) + `secret_env` or `secret_file`.
pub fn load_key(c: &KeySettings<'_>) -> Result<TsigKey, PluginError> {
    let sources = [c.key_file, c.secret_env, c.secret_file]
        .iter()
        .filter(|s| s.is_some())
        .count();
    if sources > 1 {
        return Err(PluginError::config(
            "key_file, secret_env and secret_file: give exactly one",
        ));
    }
    if let Some(path) = c.key_file {
        if c.algorithm.is_some() {
            return Err(PluginError::config(
                "algorithm: comes from the key file; remove it",
            ));
        }
        // Not held to 0600: `tsig-keygen > file` under the usual umask makes 0644, and
        // existing set-ups point here; a bare `secret_file` is new and must be private.
        let text = std::fs::read_to_string(path)
            .map_err(|e| PluginError::config(format!("key_file = {path:?}: {e}")))?;
        return parse_key_file(&text, &format!("key_file {path}"), c.key_name);
    }
    let (b64, origin) = match (c.secret_env, c.secret_file) {
        (Some(var), _) => (
            std::env::var(var).map_err(|_| {
                PluginError::config(format!("secret_env = {var:?}: the variable is not set"))
            })?,
            format!("environment variable {var}"),
        ),
        (None, Some(path)) => (
            read_private(path, "secret_file")?,
            format!("secret_file {path}"),
        ),
        (None, None) => {
            return Err(PluginError::config(
                "no TSIG key: set key_file (a BIND key file or Knot keymgr output), or key_name \
                 with secret_env or secret_file",
            ));
        }
    };
    let name = c.key_name.ok_or_else(|| {
        PluginError::config(
            "key_name: required with secret_env or secret_file (the TSIG key's name)",
        )
    })?;
    let alg = c.algorithm.unwrap_or("hmac-sha256");
    Ok(TsigKey {
        algorithm: algorithm(alg)?,
        algorithm_name: alg.trim_end_matches('.').to_ascii_lowercase(),
        secret: decode_secret(&b64, &origin)?,
        name: name.trim_end_matches('.').to_owned(),
    })
}

/// Reads a file holding a secret, refusing one that group or others may read.
fn read_private(path: &str, setting: &str) -> Result<String, PluginError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .map_err(|e| PluginError::config(format!("{setting} = {path:?}: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PluginError::config(format!(
            "{setting} = {path:?}: the file holds a TSIG secret but is readable by group or \
             others (mode {mode:o}); chmod 600 it"
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| PluginError::config(format!("{setting} = {path:?}: {e}")))
}

/// Parses a key file: BIND `key` statements (what `tsig-keygen` and `ddns-confgen` write)
/// or Knot's `key:` YAML (what `keymgr -t` prints), and returns the key named `wanted` (or
/// the only one when `wanted` is `None`).
pub fn parse_key_file(
    text: &str,
    origin: &str,
    wanted: Option<&str>,
) -> Result<TsigKey, PluginError> {
    let err = |why: String| PluginError::config(format!("{origin}: {why}"));
    let keys = if is_knot_yaml(text) {
        parse_knot_yaml(text).map_err(err)?
    } else {
        parse_bind_keys(text).map_err(err)?
    };
    pick(keys, origin, wanted)
}

type RawKey = (String, String, String);

fn pick(mut keys: Vec<RawKey>, origin: &str, wanted: Option<&str>) -> Result<TsigKey, PluginError> {
    let err = |why: String| PluginError::config(format!("{origin}: {why}"));
    let (name, alg, secret) = match wanted {
        Some(w) => {
            let w = w.trim_end_matches('.');
            keys.into_iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(w))
                .ok_or_else(|| err(format!("no key named {w:?} in the file")))?
        }
        None => {
            if keys.len() > 1 {
                return Err(err(format!(
                    "{} keys in the file; say which with key_name",
                    keys.len()
                )));
            }
            keys.pop().ok_or_else(|| {
                err(
                    "no key found: expected a BIND `key \"NAME\" { … };` statement or a Knot \
                     `key:` list (keymgr -t)"
                        .into(),
                )
            })?
        }
    };
    Ok(TsigKey {
        algorithm: algorithm(&alg).map_err(|e| err(e.message))?,
        algorithm_name: alg.trim_end_matches('.').to_ascii_lowercase(),
        secret: decode_secret(&secret, origin)?,
        name,
    })
}

/// Knot's format: a top-level `key:` line (YAML, as in knot.conf and `keymgr -t` output).
fn is_knot_yaml(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim_end() == "key:" && !l.starts_with([' ', '\t']))
}

/// The small YAML subset Knot uses for keys: under `key:`, list items `- id: NAME` followed
/// by `algorithm: ALG` and `secret: B64` (any order, optional quotes, `#` comments).
fn parse_knot_yaml(text: &str) -> Result<Vec<RawKey>, String> {
    let mut keys: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
    let mut in_keys = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("").trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t', '-']) {
            in_keys = line == "key:";
            continue;
        }
        if !in_keys {
            continue;
        }
        let mut item = line.trim_start();
        if let Some(rest) = item.strip_prefix('-') {
            keys.push((None, None, None));
            item = rest.trim_start();
        }
        let Some((k, v)) = item.split_once(':') else {
            return Err(format!(
                "line {}: expected `field: value` under key:",
                i + 1
            ));
        };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
        let Some(cur) = keys.last_mut() else {
            return Err(format!("line {}: a field before the first `- id:`", i + 1));
        };
        match k.trim() {
            "id" => cur.0 = Some(v.trim_end_matches('.').to_owned()),
            "algorithm" => cur.1 = Some(v),
            "secret" => cur.2 = Some(v),
            _ => {}
        }
    }
    keys.into_iter()
        .map(|(id, alg, secret)| {
            let id = id.ok_or("a key: item without id")?;
            let alg = alg.ok_or_else(|| format!("key {id:?} has no algorithm"))?;
            let secret = secret.ok_or_else(|| format!("key {id:?} has no secret"))?;
            Ok((id, alg, secret))
        })
        .collect()
}

/// The `key` statements of BIND configuration text.
fn parse_bind_keys(text: &str) -> Result<Vec<RawKey>, String> {
    let tokens = tokenize(text);
    let mut keys = Vec::new();
    let mut i = 0;
    let err = |why: String| why;
    while i < tokens.len() {
        if tokens[i] != "key" {
            i += 1;
            continue;
        }
        let name = tokens
            .get(i + 1)
            .ok_or_else(|| err("`key` without a name".into()))?
            .trim_end_matches('.')
            .to_owned();
        if tokens.get(i + 2).map(String::as_str) != Some("{") {
            return Err(err(format!("key {name:?}: expected `{{`")));
        }
        i += 3;
        let (mut alg, mut secret) = (None, None);
        while i < tokens.len() && tokens[i] != "}" {
            let stmt = tokens[i].as_str();
            let value = tokens.get(i + 1).cloned();
            match stmt {
                "algorithm" => alg = value,
                "secret" => secret = value,
                ";" => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            // Skip to the end of the statement.
            while i < tokens.len() && tokens[i] != ";" && tokens[i] != "}" {
                i += 1;
            }
            if i < tokens.len() && tokens[i] == ";" {
                i += 1;
            }
        }
        i += 1;
        let alg = alg.ok_or_else(|| err(format!("key {name:?} has no algorithm")))?;
        let secret = secret.ok_or_else(|| err(format!("key {name:?} has no secret")))?;
        keys.push((name, alg, secret));
    }
    Ok(keys)
}

/// Splits BIND configuration text into words, quoted strings (unquoted), `{`, `}` and `;`,
/// dropping `#`, `//` and `/* */` comments.
fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '{' | '}' | ';' => out.push(c.to_string()),
            '"' => {
                let mut s = String::new();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    s.push(c);
                }
                out.push(s);
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            _ => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "{};\"".contains(n) {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
// made by tsig-keygen
key "acme-key" {
	algorithm hmac-sha256;
	secret "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
};
key other. { algorithm hmac-sha512; secret "b3RoZXI="; }; # another
"#;

    #[test]
    fn parses_tsig_keygen_output_and_picks_by_name() {
        let k = parse_key_file(FILE, "f", Some("acme-key")).expect("key");
        assert_eq!(k.name, "acme-key");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(k.secret.bytes(), b"secret-secret-secret");
        let k = parse_key_file(FILE, "f", Some("other")).expect("other");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha512);
        let e = parse_key_file(FILE, "f", None).expect_err("two keys");
        assert!(e.message.contains("key_name"), "{e}");
    }

    /// `keymgr -t acme-key hmac-sha256` (Knot 3.2), verbatim.
    const KNOT: &str = "# hmac-sha256:acme-key:zv6p1ugZqne/wL+M21j5ixFIKQnTEZNNiwYHXThRrwM=
key:
  - id: acme-key
    algorithm: hmac-sha256
    secret: zv6p1ugZqne/wL+M21j5ixFIKQnTEZNNiwYHXThRrwM=
";

    /// `ddns-confgen -a hmac-sha256 -k ddnskey -z corp.test` (BIND 9.18), verbatim.
    const DDNS_CONFGEN: &str = "# To activate this key, place the following in named.conf, and
# in a separate keyfile on the system or systems from which nsupdate
# will be run:
key \"ddnskey\" {
\talgorithm hmac-sha256;
\tsecret \"oEfQO933tid+/2nNUxqxaUCiQyijHs0+gnEJ5GcIAmI=\";
};

# Then, in the \"zone\" definition statement for \"corp.test\",
# place an \"update-policy\" statement like this one, adjusted as 
# needed for your preferred permissions:
update-policy {
\t  grant ddnskey zonesub ANY;
};

# After the keyfile has been placed, the following command will
# execute nsupdate using this key:
nsupdate -k <keyfile>
";

    #[test]
    fn knot_keymgr_output_and_ddns_confgen_output_are_read_as_is() {
        let k = parse_key_file(KNOT, "f", None).expect("knot key");
        assert_eq!(k.name, "acme-key");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(k.secret.bytes().len(), 32);
        let two =
            format!("{KNOT}  - id: second\n    secret: b3RoZXI=\n    algorithm: hmac-sha512\n");
        let k = parse_key_file(&two, "f", Some("second")).expect("second");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha512);
        let k = parse_key_file(DDNS_CONFGEN, "f", None).expect("ddns-confgen key");
        assert_eq!(k.name, "ddnskey");
        let e = parse_key_file("key:\n  - id: x\n    algorithm: hmac-sha256\n", "f", None)
            .expect_err("no secret");
        assert!(e.message.contains("key \"x\" has no secret"), "{e}");
        let e = parse_key_file("nothing here", "f", None).expect_err("none");
        assert!(e.message.contains("keymgr -t"), "{e}");
    }

    #[test]
    fn secret_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("rfc2136-tsig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("secret");
        std::fs::write(&path, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n").expect("write");
        let p = path.to_str().expect("utf-8");
        let settings = KeySettings {
            key_name: Some("acme-key"),
            secret_file: Some(p),
            ..KeySettings::default()
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_key(&settings).expect_err("world-readable");
        assert!(e.message.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let k = load_key(&settings).expect("0600 file");
        assert_eq!(k.secret.bytes(), b"secret-secret-secret");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
        let e = load_key(&KeySettings {
            secret_env: Some("X"),
            ..settings
        })
        .expect_err("two sources");
        assert!(e.message.contains("exactly one"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn algorithms_and_secrets_are_checked_without_quoting_the_secret() {
        let e = algorithm("hmac-sha999").expect_err("unknown");
        assert!(e.message.contains("unknown TSIG algorithm"), "{e}");
        assert!(
            algorithm("hmac-sha1")
                .expect_err("sha1")
                .message
                .contains("not supported")
        );
        assert!(algorithm("HMAC-SHA384.").is_ok());
        let e = decode_secret("not*base64!", "f").expect_err("bad");
        assert!(!e.message.contains("not*base64!"), "{e}");
        assert_eq!(
            format!("{:?}", decode_secret("c2VjcmV0", "f").expect("ok")),
            "Secret([redacted])"
        );
    }
}
