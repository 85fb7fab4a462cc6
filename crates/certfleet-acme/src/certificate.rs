//! Certificate download ([RFC 8555 §7.4.2](https://www.rfc-editor.org/rfc/rfc8555#section-7.4.2))
//! with alternate chains announced in `Link` headers ([RFC 8288](https://www.rfc-editor.org/rfc/rfc8288)).

use reqwest::header::{HeaderMap, LINK};

use crate::http::resolve;
use crate::{Account, AcmeError, CertificateChain};

/// `Accept` for certificate downloads.
pub(crate) const PEM_CHAIN: &str = "application/pem-certificate-chain";
/// Most alternate chains fetched for one certificate.
pub const MAX_ALTERNATE_CHAINS: usize = 8;

/// A downloaded certificate: the default chain and the URLs of alternate chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateDownload {
    pub chain: CertificateChain,
    /// `Link: <…>;rel="alternate"` URLs, absolute.
    pub alternates: Vec<String>,
    /// `Link: <…>;rel="up"` URLs (issuer certificates), absolute.
    pub up: Vec<String>,
}

/// One link-value of a `Link` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The target as written (possibly relative).
    pub target: String,
    /// Relation types (`rel` may hold several, space-separated), lowercased.
    pub rels: Vec<String>,
}

/// Parses every `Link` header: several headers and comma-separated lists, quoted or bare
/// parameters, commas inside `<…>` and quoted strings.
pub fn parse_link_headers(headers: &HeaderMap) -> Vec<Link> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_link_value)
        .collect()
}

/// Parses one `Link` header value.
pub fn parse_link_value(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.next() != Some('<') {
            break;
        }
        let target: String = chars.by_ref().take_while(|c| *c != '>').collect();
        let mut rels = Vec::new();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() != Some(&';') {
                break;
            }
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c == ';' || c == ',' || c.is_whitespace() {
                    break;
                }
                name.push(c);
                chars.next();
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut param = String::new();
            if chars.peek() == Some(&'=') {
                chars.next();
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek() == Some(&'"') {
                    chars.next();
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => param.extend(chars.next()),
                            c => param.push(c),
                        }
                    }
                } else {
                    while let Some(&c) = chars.peek() {
                        if c == ';' || c == ',' || c.is_whitespace() {
                            break;
                        }
                        param.push(c);
                        chars.next();
                    }
                }
            }
            if name.eq_ignore_ascii_case("rel") && rels.is_empty() {
                rels = param
                    .split_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect();
            }
        }
        links.push(Link { target, rels });
    }
    links
}

/// Targets of links with relation `rel`, resolved against `base`.
pub(crate) fn link_targets(links: &[Link], rel: &str, base: &str) -> Vec<String> {
    links
        .iter()
        .filter(|l| l.rels.iter().any(|r| r == rel))
        .map(|l| resolve(base, &l.target))
        .collect()
}

impl Account {
    /// Downloads a certificate chain (POST-as-GET, `Accept:
    /// application/pem-certificate-chain`) and the alternate chain URLs.
    pub async fn download_certificate(&self, url: &str) -> Result<CertificateDownload, AcmeError> {
        let resp = self.post_as_get(url, Some(PEM_CHAIN)).await?;
        let pem = String::from_utf8(resp.body).map_err(|_| AcmeError::InvalidResponse {
            url: url.to_owned(),
            detail: "certificate chain is not UTF-8 text".to_owned(),
        })?;
        let chain = CertificateChain::from_pem(&pem).map_err(|e| AcmeError::InvalidResponse {
            url: url.to_owned(),
            detail: e.to_string(),
        })?;
        let links = parse_link_headers(&resp.headers);
        Ok(CertificateDownload {
            chain,
            alternates: link_targets(&links, "alternate", url),
            up: link_targets(&links, "up", url),
        })
    }

    /// Downloads the alternate chains of `dl`, in the order announced, at most
    /// [`MAX_ALTERNATE_CHAINS`] of them (each is a signed request; real CAs offer one or
    /// two, a hostile one could announce thousands).
    pub async fn download_alternate_chains(
        &self,
        dl: &CertificateDownload,
    ) -> Result<Vec<CertificateChain>, AcmeError> {
        if dl.alternates.len() > MAX_ALTERNATE_CHAINS {
            tracing::warn!(
                announced = dl.alternates.len(),
                fetched = MAX_ALTERNATE_CHAINS,
                "the CA announced more alternate chains than certfleet fetches; ignoring the rest"
            );
        }
        let mut chains = Vec::with_capacity(dl.alternates.len().min(MAX_ALTERNATE_CHAINS));
        for url in dl.alternates.iter().take(MAX_ALTERNATE_CHAINS) {
            chains.push(self.download_certificate(url).await?.chain);
        }
        Ok(chains)
    }
}

#[cfg(test)]
mod tests;
