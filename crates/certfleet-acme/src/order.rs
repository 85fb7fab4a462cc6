//! Orders ([RFC 8555 §7.1.3](https://www.rfc-editor.org/rfc/rfc8555#section-7.1.3),
//! [§7.4](https://www.rfc-editor.org/rfc/rfc8555#section-7.4)): create, fetch, finalize.
//! Servers reuse orders: always read the status, never assume it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use tracing::debug;

use crate::escape::escaped;
use crate::jws::b64;
use crate::{Account, AcmeError, Authorization, Identifier, IdentifierType, Problem, RetryAfter};

/// A newOrder request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewOrder {
    pub identifiers: Vec<Identifier>,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
    /// A profile name from the directory's `meta.profiles`.
    pub profile: Option<String>,
    /// ARI CertID of the certificate this order replaces ([RFC 9773 §5](https://www.rfc-editor.org/rfc/rfc9773#section-5)).
    /// Dropped when the directory has no `renewalInfo`.
    pub replaces: Option<String>,
}

impl NewOrder {
    /// An order for DNS names.
    pub fn dns<I, S>(names: I) -> NewOrder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NewOrder {
            identifiers: names.into_iter().map(Identifier::dns).collect(),
            ..NewOrder::default()
        }
    }
}

/// Order status (§7.1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Ready => "ready",
            OrderStatus::Processing => "processing",
            OrderStatus::Valid => "valid",
            OrderStatus::Invalid => "invalid",
        }
    }

    /// `valid` or `invalid`: the order will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Valid | OrderStatus::Invalid)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The order object as the server last returned it. Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderState {
    pub status: OrderStatus,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<OffsetDateTime>,
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_after: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
    #[serde(default)]
    pub authorizations: Vec<String>,
    pub finalize: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// The account's orders list as read by [`Account::order_list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderList {
    /// Order URLs in the CA's order (Pebble: oldest first).
    pub urls: Vec<String>,
    /// Pages read.
    pub pages: usize,
    /// Every page was read (false when the page bound stopped the walk).
    pub complete: bool,
}

/// An order: its URL, its state, and when the server wants it polled again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub url: String,
    pub state: OrderState,
    pub retry_after: Option<RetryAfter>,
}

impl Order {
    pub fn status(&self) -> OrderStatus {
        self.state.status
    }

    /// Whether the order names `id` (see [`Identifier::same_as`]).
    pub fn names(&self, id: &Identifier) -> bool {
        self.state.identifiers.iter().any(|own| own.same_as(id))
    }

    /// Whether the order names exactly `asked`: each of them and nothing else (order and
    /// repeats aside).
    pub fn names_exactly(&self, asked: &[Identifier]) -> bool {
        asked.iter().all(|a| self.names(a))
            && self
                .state
                .identifiers
                .iter()
                .all(|got| asked.iter().any(|a| a.same_as(got)))
    }

    /// Refuses an order that does not name exactly the `asked` identifiers (§7.4: the
    /// server echoes them; a server may reuse an order, but only one for the same names):
    /// checked on every new order, and by callers that read back an order they stored.
    pub fn check_names(&self, asked: &[Identifier]) -> Result<(), AcmeError> {
        if self.names_exactly(asked) {
            return Ok(());
        }
        let asked: Vec<&str> = asked.iter().map(|i| i.value.as_str()).collect();
        Err(AcmeError::InvalidResponse {
            url: self.url.clone(),
            detail: format!(
                "the order names {}, not the requested {}",
                shown(&self.state.identifiers),
                asked.join(", ")
            ),
        })
    }

    /// Refuses an authorization of this order for an identifier the order does not name:
    /// answering it would publish a DNS record or serve a token for a name nobody asked
    /// for.
    pub fn check_authorization(&self, authz: &Authorization) -> Result<(), AcmeError> {
        let id = authz.state.order_identifier();
        if self.names(&id) {
            return Ok(());
        }
        Err(AcmeError::InvalidResponse {
            url: authz.url.clone(),
            detail: format!(
                "the authorization is for {}, which order {} does not name (it names {}); \
                 nothing was presented for it",
                escaped(&id.value),
                self.url,
                shown(&self.state.identifiers)
            ),
        })
    }
}

/// `identifiers` as a CA sent them, made safe to show.
fn shown(identifiers: &[Identifier]) -> String {
    if identifiers.is_empty() {
        return "nothing".to_owned();
    }
    let values: Vec<String> = identifiers.iter().map(|i| escaped(&i.value)).collect();
    values.join(", ")
}

/// The identifiers of a newOrder request as sent: DNS names validated and normalised.
fn normalized_identifiers(req: &NewOrder) -> Result<Vec<Identifier>, AcmeError> {
    let mut identifiers = Vec::with_capacity(req.identifiers.len());
    for id in &req.identifiers {
        identifiers.push(match id.kind {
            IdentifierType::Dns => Identifier::dns(crate::normalize_dns_name(&id.value)?),
            _ => id.clone(),
        });
    }
    Ok(identifiers)
}

/// The newOrder payload (§7.4) for `identifiers` (see [`normalized_identifiers`]).
pub(crate) fn new_order_payload(
    req: &NewOrder,
    identifiers: &[Identifier],
    ari_supported: bool,
) -> Result<serde_json::Value, AcmeError> {
    let mut payload = json!({ "identifiers": identifiers });
    let rfc3339 = |t: &OffsetDateTime| {
        t.to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| AcmeError::InvalidRequest {
                detail: format!("order time {t} cannot be written as RFC 3339: {e}"),
            })
    };
    if let Some(t) = &req.not_before {
        payload["notBefore"] = json!(rfc3339(t)?);
    }
    if let Some(t) = &req.not_after {
        payload["notAfter"] = json!(rfc3339(t)?);
    }
    if let Some(profile) = &req.profile {
        payload["profile"] = json!(profile);
    }
    match (&req.replaces, ari_supported) {
        (Some(cert_id), true) => payload["replaces"] = json!(cert_id),
        (Some(cert_id), false) => {
            debug!(%cert_id, "directory has no renewalInfo; not sending `replaces`");
        }
        (None, _) => {}
    }
    Ok(payload)
}

impl Account {
    /// Creates an order (§7.4). The server may return an existing one.
    pub async fn new_order(&self, req: &NewOrder) -> Result<Order, AcmeError> {
        let client = self.client();
        let identifiers = normalized_identifiers(req)?;
        let payload = new_order_payload(req, &identifiers, client.directory().supports_ari())?;
        let url = client.directory().new_order.clone();
        let resp = self
            .post(&url, payload.to_string().as_bytes(), None)
            .await?;
        let order = Order {
            url: resp.location()?,
            state: resp.json()?,
            retry_after: resp.retry_after(),
        };
        order.check_names(&identifiers)?;
        Ok(order)
    }

    /// The account's orders list (§7.1.2.1), following `Link: rel="next"` for at most
    /// `max_pages` pages (Pebble pages by 3, oldest first; `PEBBLE_WFE_ORDERS_PER_PAGE`).
    /// `None` when the CA offers no list (Boulder does not).
    pub async fn order_list(&self, max_pages: usize) -> Result<Option<OrderList>, AcmeError> {
        #[derive(Deserialize)]
        struct OrdersPage {
            #[serde(default)]
            orders: Vec<String>,
        }
        let Some(mut url) = self.state().await?.orders else {
            return Ok(None);
        };
        let mut list = OrderList::default();
        for _ in 0..max_pages {
            let resp = self.post_as_get(&url, None).await?;
            let links = crate::certificate::parse_link_headers(&resp.headers);
            let next = crate::certificate::link_targets(&links, "next", &url)
                .into_iter()
                .next();
            let page: OrdersPage = resp.json()?;
            list.urls.extend(page.orders);
            list.pages += 1;
            match next {
                Some(n) => url = n,
                None => {
                    list.complete = true;
                    break;
                }
            }
        }
        Ok(Some(list))
    }

    /// Fetches an order (POST-as-GET).
    pub async fn order(&self, url: &str) -> Result<Order, AcmeError> {
        let resp = self.post_as_get(url, None).await?;
        Ok(Order {
            url: url.to_owned(),
            state: resp.json()?,
            retry_after: resp.retry_after(),
        })
    }

    /// Finalizes a `ready` order with a DER CSR (§7.4). Refused locally for any other
    /// status. The result is often `processing`: poll [`order`](Self::order) after its
    /// `retry_after`.
    pub async fn finalize(&self, order: &Order, csr_der: &[u8]) -> Result<Order, AcmeError> {
        if order.state.status != OrderStatus::Ready {
            return Err(AcmeError::NotReady {
                url: order.url.clone(),
                status: order.state.status,
            });
        }
        let payload = json!({ "csr": b64(csr_der) });
        let resp = self
            .post(&order.state.finalize, payload.to_string().as_bytes(), None)
            .await?;
        Ok(Order {
            url: order.url.clone(),
            state: resp.json()?,
            retry_after: resp.retry_after(),
        })
    }
}

#[cfg(test)]
mod tests;
