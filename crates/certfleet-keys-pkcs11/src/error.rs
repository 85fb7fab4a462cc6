use std::path::PathBuf;

use certfleet_keys::KeyError;

/// Everything that can go wrong with a PKCS#11 key.
///
/// `uri` fields hold the key or token reference as shown to people: a `pin-value` is always
/// `***`. No message ever contains a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    #[error("invalid PKCS#11 URI {uri:?}: {detail}")]
    InvalidUri { uri: String, detail: String },
    #[error(
        "{uri}: no module-path: name the PKCS#11 module, e.g. \
         ?module-path=/usr/lib/softhsm/libsofthsm2.so"
    )]
    MissingModule { uri: String },
    #[error("{uri}: cannot load PKCS#11 module {module}: {detail}")]
    ModuleLoad {
        uri: String,
        module: PathBuf,
        detail: String,
    },
    #[error("{uri}: no token in {module} matches the URI ({detail})")]
    TokenNotFound {
        uri: String,
        module: PathBuf,
        /// Per slot, the first attribute that differed and what the token has.
        detail: String,
    },
    #[error("{uri}: {count} tokens are labelled {label:?}; add serial=… to the URI")]
    AmbiguousToken {
        uri: String,
        label: String,
        count: usize,
    },
    #[error(
        "{uri}: the token needs a PIN and the URI names none: add \
         pin-source=file:/path/to/pin or pin-source=env:VARIABLE"
    )]
    PinMissing { uri: String },
    #[error("{uri}: cannot read the PIN from {source_name}: {detail}")]
    PinSource {
        uri: String,
        source_name: String,
        detail: String,
    },
    #[error(
        "{uri}: {} (tokens lock after a few wrong PINs): fix the PIN source; certfleet \
         offers the PIN again once the source changes",
        if *remembered {
            "the token rejected this PIN in an earlier run, so certfleet does not offer it again"
        } else {
            "the token rejected the PIN (CKR_PIN_INCORRECT); certfleet tried it once and \
             will not retry it"
        }
    )]
    PinIncorrect {
        uri: String,
        /// Rejected in an earlier run (remembered in the state directory).
        remembered: bool,
    },
    #[error("{uri}: cannot use the rejected-PIN memory in {dir}: {detail}")]
    PinMemory {
        uri: String,
        dir: PathBuf,
        detail: String,
    },
    #[error(
        "{uri}: the PIN differs from the one this process already logged in to the token \
         with; use one PIN source per token"
    )]
    PinMismatch { uri: String },
    #[error(
        "{uri}: {}",
        if *tpm {
            "the TPM refuses the PIN: it is in dictionary-attack lockout after too many wrong \
             PINs; fix the PIN source, then wait for the lockout to expire or clear it with \
             the lockout authorization (tpm2_dictionarylockout --clear-lockout)"
        } else {
            "the token's user PIN is locked; unlock it with the security officer PIN \
             (e.g. pkcs11-tool --init-pin --login --login-type so)"
        }
    )]
    PinLocked {
        uri: String,
        /// The token is a TPM (tpm2-pkcs11): a dictionary-attack lockout, no SO unlock.
        tpm: bool,
    },
    #[error(
        "{uri}: the token reports that one PIN attempt is left; certfleet will not risk \
         locking it: check the PIN with the token's own tool first"
    )]
    PinFinalTry { uri: String },
    #[error("{uri}: no private key matches on token {token:?} (keys there: {available})")]
    ObjectNotFound {
        uri: String,
        token: String,
        available: String,
    },
    #[error("{uri}: {count} private keys match; add id=… to the URI")]
    AmbiguousObject { uri: String, count: usize },
    #[error("{uri}: wrong key type: the object is {found}, {expected} was asked for")]
    WrongKeyType {
        uri: String,
        found: String,
        expected: String,
    },
    #[error("{uri}: an object labelled {label:?} already exists on the token ({found})")]
    AlreadyExists {
        uri: String,
        label: String,
        found: String,
    },
    #[error("{uri}: the token does not offer {mechanism}, needed for {purpose}")]
    MechanismMissing {
        uri: String,
        mechanism: &'static str,
        purpose: String,
    },
    #[error("{uri}: the token returned an unusable {what}: {detail}")]
    BadAttribute {
        uri: String,
        what: &'static str,
        detail: String,
    },
    #[error("{uri}: {operation} failed: {source}")]
    Pkcs11 {
        uri: String,
        operation: &'static str,
        #[source]
        source: cryptoki::error::Error,
    },
    #[error("{uri}: the blocking PKCS#11 task failed: {detail}")]
    Task { uri: String, detail: String },
}

impl Pkcs11Error {
    /// The raw PKCS#11 return value behind this error, if it came from the module.
    pub fn rv(&self) -> Option<cryptoki::error::RvError> {
        match self {
            Pkcs11Error::Pkcs11 {
                source: cryptoki::error::Error::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            _ => None,
        }
    }

    /// The reference (PIN redacted) this error is about.
    pub fn uri(&self) -> &str {
        match self {
            Pkcs11Error::InvalidUri { uri, .. }
            | Pkcs11Error::MissingModule { uri }
            | Pkcs11Error::ModuleLoad { uri, .. }
            | Pkcs11Error::TokenNotFound { uri, .. }
            | Pkcs11Error::AmbiguousToken { uri, .. }
            | Pkcs11Error::PinMissing { uri }
            | Pkcs11Error::PinSource { uri, .. }
            | Pkcs11Error::PinIncorrect { uri, .. }
            | Pkcs11Error::PinMemory { uri, .. }
            | Pkcs11Error::PinMismatch { uri }
            | Pkcs11Error::PinLocked { uri, .. }
            | Pkcs11Error::PinFinalTry { uri }
            | Pkcs11Error::ObjectNotFound { uri, .. }
            | Pkcs11Error::AmbiguousObject { uri, .. }
            | Pkcs11Error::WrongKeyType { uri, .. }
            | Pkcs11Error::AlreadyExists { uri, .. }
            | Pkcs11Error::MechanismMissing { uri, .. }
            | Pkcs11Error::BadAttribute { uri, .. }
            | Pkcs11Error::Pkcs11 { uri, .. }
            | Pkcs11Error::Task { uri, .. } => uri,
        }
    }
}

impl From<Pkcs11Error> for KeyError {
    fn from(e: Pkcs11Error) -> KeyError {
        KeyError::Device {
            key_ref: e.uri().to_owned(),
            source: Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_messages_fit_the_token_kind() {
        let tpm = Pkcs11Error::PinLocked {
            uri: "pkcs11:token=t".into(),
            tpm: true,
        }
        .to_string();
        assert!(tpm.contains("dictionary-attack lockout"), "{tpm}");
        assert!(!tpm.contains("security officer"), "{tpm}");
        let token = Pkcs11Error::PinLocked {
            uri: "pkcs11:token=t".into(),
            tpm: false,
        }
        .to_string();
        assert!(token.contains("security officer PIN"), "{token}");
        let again = Pkcs11Error::PinIncorrect {
            uri: "pkcs11:token=t".into(),
            remembered: true,
        }
        .to_string();
        assert!(again.contains("in an earlier run"), "{again}");
        assert!(again.contains("once the source changes"), "{again}");
    }
}
