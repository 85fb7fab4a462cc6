//! TSIG keys: BIND key files (`key "name" { algorithm …; secret "…"; };`), secrets from the
//! environment, algorithm names, and a secret type that never shows itself.

use std::fmt;

use base64::Engine as _;
use certfleet_plugin_abi::PluginError;
use hickory_client::proto::dnssec::rdata::tsig::TsigAlgorithm;

/// Algorithms the TSIG signer of hickory 0.25 (ring) can sign with. hmac-sha1 and
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

/// Parses the `key` statements of a BIND key file (what `tsig-keygen` writes) and returns
/// the one named `wanted` (or the only one when `wanted` is `None`).
pub fn parse_key_file(
    text: &str,
    origin: &str,
    wanted: Option<&str>,
) -> Result<TsigKey, PluginError> {
    let tokens = tokenize(text);
    let mut keys = Vec::new();
    let mut i = 0;
    let err = |why: String| PluginError::config(format!("{origin}: {why}"));
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
            keys.pop()
                .ok_or_else(|| err("no `key \"NAME\" { … };` statement found".into()))?
        }
    };
    Ok(TsigKey {
        algorithm: algorithm(&alg).map_err(|e| err(e.message))?,
        algorithm_name: alg.trim_end_matches('.').to_ascii_lowercase(),
        secret: decode_secret(&secret, origin)?,
        name,
    })
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
