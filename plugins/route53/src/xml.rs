//! Route 53's XML: the change batch we send and the few answers we read (zones, RRsets,
//! change status, errors). Elements are matched by local name, so the namespace the API
//! (or an emulator) uses does not matter.

use certfleet_plugin_http::zone::{normalize, txt_unquote};
use roxmltree::{Document, Node};

/// A hosted zone: id without the `/hostedzone/` prefix, name as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedZone {
    pub id: String,
    pub name: String,
    pub private: bool,
}

/// A TXT RRset as stored: owner, TTL, values exactly as the API returned them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtSet {
    pub name: String,
    pub ttl: u32,
    pub values: Vec<String>,
}

impl TxtSet {
    /// The values unquoted (what the challenge compares against).
    pub fn plain(&self) -> Vec<String> {
        self.values.iter().map(|v| txt_unquote(v)).collect()
    }
}

/// One change of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub action: &'static str,
    pub set: TxtSet,
}

fn child<'a>(n: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text<'a>(n: Node<'a, 'a>, name: &str) -> Option<&'a str> {
    child(n, name).and_then(|c| c.text())
}

fn parse(body: &str) -> Result<Document<'_>, String> {
    Document::parse(body).map_err(|e| format!("not XML: {e}"))
}

/// `ListHostedZonesResponse`: zones, and the next marker when truncated.
pub fn hosted_zones(body: &str) -> Result<(Vec<HostedZone>, Option<String>), String> {
    let doc = parse(body)?;
    let root = doc.root_element();
    if root.tag_name().name() != "ListHostedZonesResponse" {
        return Err(format!(
            "expected ListHostedZonesResponse, got {}",
            root.tag_name().name()
        ));
    }
    let list = child(root, "HostedZones").ok_or("no HostedZones element")?;
    let mut zones = Vec::new();
    for z in list
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "HostedZone")
    {
        let id = text(z, "Id").ok_or("a HostedZone without Id")?;
        let name = text(z, "Name").ok_or("a HostedZone without Name")?;
        let private = child(z, "Config")
            .and_then(|c| text(c, "PrivateZone"))
            .is_some_and(|p| p.trim() == "true");
        zones.push(HostedZone {
            id: id.trim().trim_start_matches("/hostedzone/").to_owned(),
            name: name.trim().to_owned(),
            private,
        });
    }
    let truncated = text(root, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = if truncated {
        Some(
            text(root, "NextMarker")
                .ok_or("IsTruncated without NextMarker")?
                .trim()
                .to_owned(),
        )
    } else {
        None
    };
    Ok((zones, next))
}

/// Where the next page of a listing starts: `NextRecordName`, `NextRecordType`.
pub type NextRecord = (String, String);

/// `ListResourceRecordSetsResponse`: the TXT sets, and where the next page starts
/// (`NextRecordName`, `NextRecordType`) when truncated.
pub fn txt_sets(body: &str) -> Result<(Vec<TxtSet>, Option<NextRecord>), String> {
    let doc = parse(body)?;
    let root = doc.root_element();
    if root.tag_name().name() != "ListResourceRecordSetsResponse" {
        return Err(format!(
            "expected ListResourceRecordSetsResponse, got {}",
            root.tag_name().name()
        ));
    }
    let list = child(root, "ResourceRecordSets").ok_or("no ResourceRecordSets element")?;
    let mut sets = Vec::new();
    for s in list
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "ResourceRecordSet")
    {
        if text(s, "Type").map(str::trim) != Some("TXT") {
            continue;
        }
        let name = text(s, "Name").ok_or("a ResourceRecordSet without Name")?;
        let ttl = text(s, "TTL")
            .map(|t| {
                t.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("bad TTL {t:?}"))
            })
            .transpose()?
            .unwrap_or(300);
        let values = child(s, "ResourceRecords")
            .map(|rr| {
                rr.children()
                    .filter(|c| c.is_element() && c.tag_name().name() == "ResourceRecord")
                    .filter_map(|r| text(r, "Value").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        sets.push(TxtSet {
            name: unescape_name(name.trim()),
            ttl,
            values,
        });
    }
    let truncated = text(root, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = if truncated {
        let n = text(root, "NextRecordName").ok_or("IsTruncated without NextRecordName")?;
        let t = text(root, "NextRecordType").unwrap_or("TXT");
        Some((n.trim().to_owned(), t.trim().to_owned()))
    } else {
        None
    };
    Ok((sets, next))
}

/// Route 53 lists `*` as `\052` and other special characters octal-escaped.
fn unescape_name(name: &str) -> String {
    let mut out = String::new();
    let mut rest = name;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let esc = &rest[i + 1..];
        match esc.get(..3).and_then(|o| u8::from_str_radix(o, 8).ok()) {
            Some(b) => {
                out.push(b as char);
                rest = &esc[3..];
            }
            None => {
                out.push('\\');
                rest = esc;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `ChangeInfo` of `ChangeResourceRecordSetsResponse` or `GetChangeResponse`: id (without
/// `/change/`) and status (`PENDING`, `INSYNC`).
pub fn change_info(body: &str) -> Result<(String, String), String> {
    let doc = parse(body)?;
    let info = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "ChangeInfo")
        .ok_or("no ChangeInfo element")?;
    let id = text(info, "Id").ok_or("ChangeInfo without Id")?;
    let status = text(info, "Status").ok_or("ChangeInfo without Status")?;
    Ok((
        id.trim().trim_start_matches("/change/").to_owned(),
        status.trim().to_owned(),
    ))
}

/// `Code` and `Message` of an error answer (`ErrorResponse/Error`), if it is one.
pub fn error(body: &str) -> Option<(String, String)> {
    let doc = Document::parse(body).ok()?;
    let find = |name: &str| {
        doc.descendants()
            .find(|n| n.is_element() && n.tag_name().name() == name)
            .and_then(|n| n.text())
            .map(|t| t.trim().to_owned())
    };
    let code = find("Code")?;
    Some((code, find("Message").unwrap_or_default()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `ChangeResourceRecordSetsRequest` document for `changes`.
pub fn change_batch(changes: &[Change]) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest \
         xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch>\
         <Comment>certfleet dns-01</Comment><Changes>",
    );
    for c in changes {
        x.push_str(&format!(
            "<Change><Action>{}</Action><ResourceRecordSet><Name>{}</Name><Type>TXT</Type>\
             <TTL>{}</TTL><ResourceRecords>",
            c.action,
            escape(&c.set.name),
            c.set.ttl
        ));
        for v in &c.set.values {
            x.push_str(&format!(
                "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                escape(v)
            ));
        }
        x.push_str("</ResourceRecords></ResourceRecordSet></Change>");
    }
    x.push_str("</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>");
    x
}

/// Whether two owner names are the same (case and trailing dot aside).
pub fn same_name(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}
