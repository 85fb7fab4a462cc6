//! Finding the one token a URI names, among every slot of a module, the way RFC 7512
//! says: every attribute the URI gives must match; those it leaves out match anything.
//!
//! Discovery survives one bad slot: a slot whose information cannot be read is skipped
//! with a warning naming the slot and the call (a module registered in p11-kit's proxy
//! must not hide the tokens of the others). When nothing matches, the error lists what
//! each slot has for the first attribute that differed.

use std::path::Path;

use cryptoki::error::Error as CkError;
use cryptoki::slot::Slot;

use crate::raw::{LibraryInfo, RawModule, SlotInfo, TokenInfo, trim_field};
use crate::token::Module;
use crate::{Pkcs11Error, Pkcs11Uri};

/// The slot and token information of the token `uri` names (blocking).
pub(crate) fn find_token(
    module: &Module,
    uri: &Pkcs11Uri,
) -> Result<(Slot, TokenInfo), Pkcs11Error> {
    let shown = uri.to_string();
    let asks_library = uri.library_manufacturer.is_some()
        || uri.library_description.is_some()
        || uri.library_version.is_some();
    if asks_library {
        let library = module
            .library()
            .as_ref()
            .map_err(|detail| Pkcs11Error::ModuleLoad {
                uri: shown.clone(),
                module: module.path().to_owned(),
                detail: detail.clone(),
            })?;
        if let Some(detail) = library_mismatch(uri, library) {
            return Err(Pkcs11Error::TokenNotFound {
                uri: shown,
                module: module.path().to_owned(),
                detail,
            });
        }
    }
    let list_err = |source| Pkcs11Error::Pkcs11 {
        uri: shown.clone(),
        operation: "C_GetSlotList",
        source,
    };
    // cryptoki's list names the slots its sessions open; the info instance must agree
    // (p11-kit's proxy numbers the slots of each instance alike).
    let slots = module.pkcs11().get_slots_with_token().map_err(list_err)?;
    let raw_slots = module.raw().slots_with_token().map_err(list_err)?;
    if raw_slots != slots {
        return Err(Pkcs11Error::ModuleLoad {
            uri: shown,
            module: module.path().to_owned(),
            detail: format!(
                "two instances of the module list different slots ({slots:?} and \
                 {raw_slots:?})"
            ),
        });
    }
    select(uri, module.raw(), &slots, module.path())
}

/// Where slot and token information comes from (the module; a stand-in in unit tests).
pub(crate) trait SlotInfoSource {
    fn token_info(&self, slot: Slot) -> Result<TokenInfo, CkError>;
    fn slot_info(&self, slot: Slot) -> Result<SlotInfo, CkError>;
}

impl SlotInfoSource for RawModule {
    fn token_info(&self, slot: Slot) -> Result<TokenInfo, CkError> {
        RawModule::token_info(self, slot)
    }
    fn slot_info(&self, slot: Slot) -> Result<SlotInfo, CkError> {
        RawModule::slot_info(self, slot)
    }
}

/// The one slot of `slots` whose token `uri` names; unreadable slots are skipped.
fn select(
    uri: &Pkcs11Uri,
    source: &dyn SlotInfoSource,
    slots: &[Slot],
    module: &Path,
) -> Result<(Slot, TokenInfo), Pkcs11Error> {
    let shown = uri.to_string();
    let asks_slot = uri.slot_description.is_some() || uri.slot_manufacturer.is_some();
    let mut matching = Vec::new();
    let mut seen = Vec::new();
    for &slot in slots {
        if uri.slot_id.is_some_and(|id| id != slot.id()) {
            seen.push(format!("slot {}: slot-id differs", slot.id()));
            continue;
        }
        let info = match source.token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(
                    module = %module.display(),
                    "skipping PKCS#11 slot {}: C_GetTokenInfo failed: {e}",
                    slot.id()
                );
                seen.push(format!("slot {}: C_GetTokenInfo failed: {e}", slot.id()));
                continue;
            }
        };
        if !info.initialized() {
            seen.push(format!("slot {}: token not initialized", slot.id()));
            continue;
        }
        let slot_info = if asks_slot {
            match source.slot_info(slot) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(
                        module = %module.display(),
                        "skipping PKCS#11 slot {}: C_GetSlotInfo failed: {e}",
                        slot.id()
                    );
                    seen.push(format!("slot {}: C_GetSlotInfo failed: {e}", slot.id()));
                    continue;
                }
            }
        } else {
            None
        };
        match token_mismatch(uri, &info, slot_info.as_ref()) {
            None => matching.push((slot, info)),
            Some(_) if trim_field(&uri.token) != info.label => {
                seen.push(format!("slot {}: token {:?}", slot.id(), info.label));
            }
            Some(why) => seen.push(format!("slot {} token {:?}: {why}", slot.id(), info.label)),
        }
    }
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(Pkcs11Error::TokenNotFound {
            uri: shown,
            module: module.to_owned(),
            detail: if seen.is_empty() {
                "the module has no slot with a token".to_owned()
            } else {
                seen.join("; ")
            },
        }),
        count => Err(Pkcs11Error::AmbiguousToken {
            uri: shown,
            label: uri.token.clone(),
            count,
        }),
    }
}

/// `"model is \"IBM SoftTok\", the URI says \"x\""` for the first text attribute that differs.
fn differs(name: &str, want: Option<&str>, have: &str) -> Option<String> {
    let want = want?;
    (trim_field(want) != trim_field(have)).then(|| {
        format!(
            "{name} is {:?}, the URI says {:?}",
            trim_field(have),
            trim_field(want)
        )
    })
}

pub(crate) fn library_mismatch(uri: &Pkcs11Uri, library: &LibraryInfo) -> Option<String> {
    differs(
        "library-manufacturer",
        uri.library_manufacturer.as_deref(),
        &library.manufacturer,
    )
    .or_else(|| {
        differs(
            "library-description",
            uri.library_description.as_deref(),
            &library.description,
        )
    })
    .or_else(|| {
        let (want, have) = (uri.library_version?, library.version);
        (want != have).then(|| {
            format!(
                "library-version is {}.{}, the URI says {}.{}",
                have.0, have.1, want.0, want.1
            )
        })
    })
}

pub(crate) fn token_mismatch(
    uri: &Pkcs11Uri,
    token: &TokenInfo,
    slot: Option<&SlotInfo>,
) -> Option<String> {
    differs("token", Some(&uri.token), &token.label)
        .or_else(|| differs("serial", uri.serial.as_deref(), &token.serial))
        .or_else(|| {
            differs(
                "manufacturer",
                uri.manufacturer.as_deref(),
                &token.manufacturer,
            )
        })
        .or_else(|| differs("model", uri.model.as_deref(), &token.model))
        .or_else(|| {
            let slot = slot?;
            differs(
                "slot-description",
                uri.slot_description.as_deref(),
                &slot.description,
            )
            .or_else(|| {
                differs(
                    "slot-manufacturer",
                    uri.slot_manufacturer.as_deref(),
                    &slot.manufacturer,
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;
    use cryptoki::error::RvError;

    use super::*;

    /// Slot 1's token cannot be read; slot 2 holds "tpm tok".
    struct OneBadSlot;

    impl SlotInfoSource for OneBadSlot {
        fn token_info(&self, slot: Slot) -> Result<TokenInfo, CkError> {
            match slot.id() {
                1 => Err(CkError::Pkcs11(
                    RvError::DeviceError,
                    Function::GetTokenInfo,
                )),
                _ => Ok(TokenInfo {
                    flags: cryptoki_sys::CKF_TOKEN_INITIALIZED,
                    ..tpm_token()
                }),
            }
        }
        fn slot_info(&self, _: Slot) -> Result<SlotInfo, CkError> {
            Err(CkError::Pkcs11(RvError::DeviceError, Function::GetSlotInfo))
        }
    }

    fn slots() -> Vec<Slot> {
        [1u64, 2]
            .into_iter()
            .map(|id| Slot::try_from(id).expect("slot"))
            .collect()
    }

    #[test]
    fn one_unreadable_slot_does_not_hide_the_others() {
        let uri = Pkcs11Uri::parse("pkcs11:token=tpm%20tok").expect("parse");
        let (slot, info) = select(&uri, &OneBadSlot, &slots(), Path::new("/m.so")).expect("found");
        assert_eq!((slot.id(), info.label.as_str()), (2, "tpm tok"));
        let other = Pkcs11Uri::parse("pkcs11:token=absent").expect("parse");
        let err = select(&other, &OneBadSlot, &slots(), Path::new("/m.so"))
            .expect_err("absent")
            .to_string();
        assert!(err.contains("slot 1: C_GetTokenInfo failed"), "{err}");
        assert!(err.contains(r#"slot 2: token "tpm tok""#), "{err}");
        // A slot attribute needs C_GetSlotInfo: failing there skips the slot, named.
        let by_slot = Pkcs11Uri::parse("pkcs11:token=tpm%20tok;slot-description=x").expect("parse");
        let err = select(&by_slot, &OneBadSlot, &slots(), Path::new("/m.so"))
            .expect_err("unreadable slot info")
            .to_string();
        assert!(err.contains("slot 2: C_GetSlotInfo failed"), "{err}");
    }

    fn tpm_token() -> TokenInfo {
        TokenInfo {
            label: "tpm tok".into(),
            manufacturer: "IBM".into(),
            model: "SW   TPM".into(),
            serial: "0000000000000000".into(),
            ..TokenInfo::default()
        }
    }

    #[test]
    fn nul_padded_model_from_p11tool_matches() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:model=SW%20%20%20TPM%00%00%00%00%00%00%00%00;manufacturer=IBM;token=tpm%20tok",
        )
        .expect("parse");
        assert_eq!(token_mismatch(&uri, &tpm_token(), None), None);
    }

    #[test]
    fn a_mismatch_names_the_attribute_and_what_the_token_has() {
        let uri = Pkcs11Uri::parse("pkcs11:token=tpm%20tok;serial=42").expect("parse");
        let why = token_mismatch(&uri, &tpm_token(), None).expect("differs");
        assert_eq!(why, r#"serial is "0000000000000000", the URI says "42""#);
        let slot = SlotInfo {
            description: "swtpm".into(),
            manufacturer: "IBM".into(),
        };
        let uri = Pkcs11Uri::parse("pkcs11:token=tpm%20tok;slot-manufacturer=Acme").expect("parse");
        let why = token_mismatch(&uri, &tpm_token(), Some(&slot)).expect("differs");
        assert!(why.starts_with("slot-manufacturer is \"IBM\""), "{why}");
        let library = LibraryInfo {
            manufacturer: "tpm2-software.github.io".into(),
            description: "TPM2.0 Cryptoki".into(),
            version: (1, 9),
        };
        let uri = Pkcs11Uri::parse("pkcs11:token=t;library-version=1.8").expect("parse");
        assert_eq!(
            library_mismatch(&uri, &library).as_deref(),
            Some("library-version is 1.9, the URI says 1.8")
        );
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=t;library-description=TPM2.0%20Cryptoki;library-version=1.9",
        )
        .expect("parse");
        assert_eq!(library_mismatch(&uri, &library), None);
    }
}
