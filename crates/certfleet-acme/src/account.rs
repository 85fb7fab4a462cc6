//! Accounts ([RFC 8555 §7.3](https://www.rfc-editor.org/rfc/rfc8555#section-7.3)):
//! registration (with EAB), lookup, contact update, deactivation and key rollover, plus
//! the key authorizations challenges are answered with (§8.1).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use certfleet_keys::SigningKey;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{Signer, classify};
use crate::http::Response;
use crate::jws::{self, KeyIdentity, b64};
use crate::{AcmeClient, AcmeError, ExternalAccountBinding, ProblemKind};

/// A newAccount request (§7.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewAccount {
    /// `mailto:` URLs.
    pub contact: Vec<String>,
    pub terms_of_service_agreed: bool,
    /// Look up the account of this key; never create one (§7.3.1).
    pub only_return_existing: bool,
    pub external_account_binding: Option<ExternalAccountBinding>,
}

/// Account status (§7.1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Valid,
    Deactivated,
    Revoked,
}

/// The account object as the server last returned it (§7.1.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountState {
    pub status: AccountStatus,
    #[serde(default)]
    pub contact: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms_of_service_agreed: Option<bool>,
}

/// What newAccount returned.
#[derive(Clone, Debug)]
pub struct NewAccountOutcome {
    pub account: Account,
    /// The account object, if the server sent one.
    pub state: Option<AccountState>,
    /// `true` for 201 Created, `false` when the key already had an account (200).
    pub created: bool,
}

/// An ACME account: a client, the account key and the account URL (`kid`).
///
/// Cheap to clone, `Send + Sync`: orders run in parallel from clones.
#[derive(Clone)]
pub struct Account {
    inner: Arc<AccountInner>,
}

struct AccountInner {
    client: AcmeClient,
    key: Arc<dyn SigningKey>,
    url: String,
    /// Set once this process saw the account deactivated: later `unauthorized` errors are
    /// reported as [`AcmeError::AccountDeactivated`].
    deactivated: AtomicBool,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("url", &self.inner.url)
            .field("key", &self.inner.key.key_ref())
            .finish()
    }
}

impl AcmeClient {
    /// Registers `key` (or finds its existing account): RFC 8555 §7.3. Signed with `jwk`.
    pub async fn new_account(
        &self,
        key: Arc<dyn SigningKey>,
        req: &NewAccount,
    ) -> Result<Account, AcmeError> {
        self.new_account_with_state(key, req)
            .await
            .map(|o| o.account)
    }

    /// [`new_account`](Self::new_account), also returning the account object and whether
    /// it was created.
    pub async fn new_account_with_state(
        &self,
        key: Arc<dyn SigningKey>,
        req: &NewAccount,
    ) -> Result<NewAccountOutcome, AcmeError> {
        let url = &self.directory().new_account;
        let payload = new_account_payload(key.as_ref(), req, url);
        let resp = self
            .post(
                url,
                Signer::Jwk(key.as_ref()),
                payload.to_string().as_bytes(),
                None,
            )
            .await?;
        let account_url = resp.location()?;
        let created = resp.status == StatusCode::CREATED;
        let state = if resp.body.is_empty() {
            None
        } else {
            Some(resp.json::<AccountState>()?)
        };
        Ok(NewAccountOutcome {
            account: self.account_from_parts(key, account_url),
            state,
            created,
        })
    }

    /// An account restored from its persisted key and URL, without a request.
    pub fn account_from_parts(&self, key: Arc<dyn SigningKey>, url: String) -> Account {
        Account {
            inner: Arc::new(AccountInner {
                client: self.clone(),
                key,
                url,
                deactivated: AtomicBool::new(false),
            }),
        }
    }
}

/// The newAccount payload; the EAB inner JWS is MACed over the key's JWK.
pub(crate) fn new_account_payload(key: &dyn SigningKey, req: &NewAccount, url: &str) -> Value {
    let mut payload = json!({ "termsOfServiceAgreed": req.terms_of_service_agreed });
    if !req.contact.is_empty() {
        payload["contact"] = json!(req.contact);
    }
    if req.only_return_existing {
        payload["onlyReturnExisting"] = json!(true);
    }
    if let Some(eab) = &req.external_account_binding {
        payload["externalAccountBinding"] = json!(eab.sign(key.public_jwk(), url));
    }
    payload
}

impl Account {
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn key(&self) -> &Arc<dyn SigningKey> {
        &self.inner.key
    }

    pub fn client(&self) -> &AcmeClient {
        &self.inner.client
    }

    /// A `kid`-signed POST; errors from a known-deactivated account say so.
    pub(crate) async fn post(
        &self,
        url: &str,
        payload: &[u8],
        accept: Option<&str>,
    ) -> Result<Response, AcmeError> {
        let resp = self.post_raw(url, payload, accept).await?;
        if resp.status.is_success() {
            return Ok(resp);
        }
        match classify(resp.into_error()) {
            AcmeError::Api { url, problem, .. }
                if problem.kind == ProblemKind::Unauthorized
                    && self.inner.deactivated.load(Ordering::Relaxed) =>
            {
                Err(AcmeError::AccountDeactivated { url, problem })
            }
            e @ AcmeError::AccountDeactivated { .. } => {
                self.inner.deactivated.store(true, Ordering::Relaxed);
                Err(e)
            }
            other => Err(other),
        }
    }

    /// A `kid`-signed POST returning any non-`badNonce` response.
    pub(crate) async fn post_raw(
        &self,
        url: &str,
        payload: &[u8],
        accept: Option<&str>,
    ) -> Result<Response, AcmeError> {
        let signer = Signer::Kid(self.inner.key.as_ref(), &self.inner.url);
        self.inner
            .client
            .post_raw(url, signer, payload, accept)
            .await
    }

    /// POST-as-GET (§6.3): empty payload.
    pub(crate) async fn post_as_get(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response, AcmeError> {
        self.post(url, b"", accept).await
    }

    /// The account object: POST-as-GET to the account URL ([§7.3](https://www.rfc-editor.org/rfc/rfc8555#section-7.3),
    /// §6.3). Pebble refuses the older empty update `{}` ("use POST-as-GET"), Boulder
    /// accepts both.
    pub async fn state(&self) -> Result<AccountState, AcmeError> {
        self.post_as_get(self.url(), None).await?.json()
    }

    /// Replaces the contact URLs (§7.3.2).
    pub async fn update_contact(&self, contact: &[String]) -> Result<AccountState, AcmeError> {
        self.update(json!({ "contact": contact })).await
    }

    /// Deactivates the account (§7.3.6). Irreversible.
    pub async fn deactivate(&self) -> Result<AccountState, AcmeError> {
        let state = self.update(json!({ "status": "deactivated" })).await?;
        self.inner.deactivated.store(true, Ordering::Relaxed);
        Ok(state)
    }

    async fn update(&self, payload: Value) -> Result<AccountState, AcmeError> {
        let resp = self
            .post(self.url(), payload.to_string().as_bytes(), None)
            .await?;
        resp.json()
    }

    /// Replaces the account key (§7.3.5): the inner JWS is signed by `new_key` (with
    /// `jwk`, no nonce, payload `{account, oldKey}`), the outer by the current key. Two
    /// signing operations on two keys. Returns the account bound to `new_key`.
    pub async fn rollover(&self, new_key: Arc<dyn SigningKey>) -> Result<Account, AcmeError> {
        let client = self.client();
        let url = key_change_url(client)?;
        let inner = self.rollover_inner_jws(new_key.as_ref(), &url).await?;
        let body = serde_json::to_vec(&inner).map_err(|cause| AcmeError::Json {
            url: url.clone(),
            cause,
        })?;
        let resp = self.post_raw(&url, &body, None).await?;
        if resp.status == StatusCode::CONFLICT {
            // §7.3.5: 409 with Location naming the account that already has the key.
            return Err(AcmeError::KeyInUse {
                existing_account: resp.location().ok(),
                url,
            });
        }
        if !resp.status.is_success() {
            return Err(classify(resp.into_error()));
        }
        Ok(client.account_from_parts(new_key, self.url().to_owned()))
    }

    pub(crate) async fn rollover_inner_jws(
        &self,
        new_key: &dyn SigningKey,
        key_change_url: &str,
    ) -> Result<jws::FlattenedJws, AcmeError> {
        let payload = json!({
            "account": self.url(),
            "oldKey": self.inner.key.public_jwk().as_json(),
        });
        crate::http::Counters::bump(&self.client().transport().counters.signatures);
        Ok(jws::sign(
            new_key,
            KeyIdentity::Jwk,
            None,
            key_change_url,
            payload.to_string().as_bytes(),
        )
        .await?)
    }

    /// The key authorization for a challenge token (§8.1): `token "." thumbprint`.
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.inner.key.public_jwk().thumbprint())
    }

    /// The DNS-01 TXT record value (§8.4): base64url(SHA-256(key authorization)).
    pub fn dns01_txt_value(&self, token: &str) -> String {
        b64(&Sha256::digest(self.key_authorization(token).as_bytes()))
    }
}

fn key_change_url(client: &AcmeClient) -> Result<String, AcmeError> {
    let url = &client.directory().key_change;
    if url.is_empty() {
        return Err(AcmeError::Unsupported {
            feature: "account key rollover",
            field: "keyChange",
        });
    }
    Ok(url.clone())
}

#[cfg(test)]
mod tests;
