//! `-vv` (trace): each signed request's protected header and payload, so an interop problem
//! can be diagnosed from the client side alone. Signatures (the request's, an EAB MAC, a
//! keyChange inner JWS's) are left out; nothing else in a request is secret (public JWKs,
//! nonces, URLs, CSRs).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::jws::FlattenedJws;

const OMITTED: &str = "<omitted>";

/// Logs `jws` (sent to `url`) at trace level.
pub(crate) fn log_request(url: &str, jws: &FlattenedJws) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    let header = jws.protected_header().unwrap_or(Value::Null);
    tracing::trace!(
        url,
        protected = %header,
        payload = %readable_payload(&jws.payload),
        "signed request (signature omitted)"
    );
}

/// The payload as JSON with every `signature` member replaced, or a note for non-JSON.
fn readable_payload(b64: &str) -> String {
    if b64.is_empty() {
        return "\"\" (POST-as-GET)".to_owned();
    }
    let Ok(raw) = URL_SAFE_NO_PAD.decode(b64) else {
        return format!("<not base64url: {} characters>", b64.len());
    };
    match serde_json::from_slice::<Value>(&raw) {
        Ok(mut v) => {
            redact(&mut v);
            v.to_string()
        }
        Err(_) => format!("<{} bytes, not JSON>", raw.len()),
    }
}

/// Replaces signatures (also of nested JWS: EAB, keyChange) and decodes nested payloads.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "signature" {
                    *val = Value::String(OMITTED.to_owned());
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn eab_mac_and_inner_signatures_are_left_out() {
        let mac = "c2VjcmV0LW1hYy12YWx1ZQ";
        let payload = serde_json::json!({
            "termsOfServiceAgreed": true,
            "externalAccountBinding": {"protected": "eyJ", "payload": "eyK", "signature": mac},
        });
        let shown = readable_payload(&b64(&payload));
        assert!(!shown.contains(mac), "{shown}");
        assert!(shown.contains("termsOfServiceAgreed"), "{shown}");
        assert!(shown.contains(OMITTED), "{shown}");
    }

    #[test]
    fn post_as_get_and_garbage_are_described() {
        assert!(readable_payload("").contains("POST-as-GET"));
        assert!(readable_payload("!!!").contains("not base64url"));
        assert!(readable_payload(&URL_SAFE_NO_PAD.encode("abc")).contains("not JSON"));
    }
}
