//! A CA that reorders what RFC 8555 leaves unordered ([`super::CaProxyOptions::reorder`]):
//! the identifiers and the authorizations of an order (two lists with no correspondence
//! by position, §7.1.3), the challenges of an authorization (§7.1.4), the orders of a list
//! page (§7.1.2.1), the members of every JSON object and the `Link` headers of a response.
//! Each response draws its own permutation from the seeded dice; what changed is counted
//! in [`super::ProxyStats::reordered`], so a test can tell that it was exercised.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use http_body_util::{BodyExt, Full};
use hyper::Response;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use serde_json::Value;

use super::rules::Dice;
use super::{Resp, Shared};

/// Members holding lists whose order carries no meaning.
const UNORDERED: [&str; 4] = ["identifiers", "authorizations", "challenges", "orders"];

/// `resp` with everything unordered permuted (unchanged when the option is off).
pub(super) async fn response(shared: &Shared, resp: Resp) -> Resp {
    if shared.state().options.reorder.is_none() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let parsed = is_json
        .then(|| serde_json::from_slice::<Value>(&bytes).ok())
        .flatten();
    let mut st = shared.state();
    let super::State { reorder, stats, .. } = &mut *st;
    let Some(dice) = reorder.as_mut() else {
        return Response::from_parts(parts, Full::new(bytes));
    };
    let mut changed = BTreeSet::<&'static str>::new();
    let mut links: Vec<HeaderValue> = parts
        .headers
        .get_all(header::LINK)
        .iter()
        .cloned()
        .collect();
    if permute(dice, &mut links) {
        changed.insert("link");
    }
    parts.headers.remove(header::LINK);
    for link in links {
        parts.headers.append(header::LINK, link);
    }
    let body = match parsed {
        Some(mut v) => {
            if let Some(object) = v.as_object_mut() {
                for key in UNORDERED {
                    if let Some(list) = object.get_mut(key).and_then(Value::as_array_mut)
                        && permute(dice, list)
                    {
                        changed.insert(key);
                    }
                }
            }
            let mut out = String::with_capacity(bytes.len());
            if write_shuffled(dice, &v, &mut out) {
                changed.insert("members");
            }
            parts.headers.remove(header::CONTENT_LENGTH);
            Bytes::from(out)
        }
        None => bytes,
    };
    for key in changed {
        *stats.reordered.entry(key.to_owned()).or_default() += 1;
    }
    Response::from_parts(parts, Full::new(body))
}

/// Fisher–Yates shuffle of `items`; whether their order changed.
fn permute<T>(dice: &mut Dice, items: &mut [T]) -> bool {
    let mut positions: Vec<usize> = (0..items.len()).collect();
    for i in (1..items.len()).rev() {
        let j = dice.below(i as u64 + 1) as usize;
        items.swap(i, j);
        positions.swap(i, j);
    }
    positions.iter().enumerate().any(|(i, &p)| i != p)
}

/// `v` as JSON with the members of every object in a drawn order; whether any object's
/// order differs from the sorted one serde_json would write.
fn write_shuffled(dice: &mut Dice, v: &Value, out: &mut String) -> bool {
    match v {
        Value::Object(members) => {
            let mut entries: Vec<(&String, &Value)> = members.iter().collect();
            let mut changed = permute(dice, &mut entries);
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // A key is a string: its JSON form cannot fail to encode.
                let _ = write!(out, "{}:", Value::String(key.clone()));
                changed |= write_shuffled(dice, value, out);
            }
            out.push('}');
            changed
        }
        Value::Array(items) => {
            let mut changed = false;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                changed |= write_shuffled(dice, item, out);
            }
            out.push(']');
            changed
        }
        scalar => {
            let _ = write!(out, "{scalar}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_in_any_order_parse_back_to_the_same_value() {
        let v = json!({
            "status": "pending",
            "identifiers": [{"type": "dns", "value": "a.test"}, {"type": "dns", "value": "*.a.test"}],
            "authorizations": ["https://ca/authz/1", "https://ca/authz/2"],
            "finalize": "https://ca/finalize/1",
            "note": "quote \" and \u{1b} escape",
            "n": 3
        });
        let mut dice = Dice::new(7);
        let mut reordered = 0;
        for _ in 0..20 {
            let mut out = String::new();
            if write_shuffled(&mut dice, &v, &mut out) {
                reordered += 1;
            }
            let back: Value = serde_json::from_str(&out).expect("valid JSON");
            assert_eq!(back, v, "{out}");
        }
        assert!(
            reordered > 10,
            "members were reordered in {reordered} of 20"
        );
    }

    #[test]
    fn permute_keeps_the_items_and_reports_a_change() {
        let mut dice = Dice::new(3);
        let mut changes = 0;
        for _ in 0..20 {
            let mut items = vec![1, 2, 3, 4];
            if permute(&mut dice, &mut items) {
                changes += 1;
                assert_ne!(items, vec![1, 2, 3, 4]);
            } else {
                assert_eq!(items, vec![1, 2, 3, 4]);
            }
            items.sort_unstable();
            assert_eq!(items, vec![1, 2, 3, 4]);
        }
        assert!(
            changes > 10,
            "{changes} of 20 permutations changed the order"
        );
        let mut one = vec!["x"];
        assert!(!permute(&mut dice, &mut one), "a single item cannot move");
    }
}
