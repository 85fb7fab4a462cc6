//! Object templates: the owner-hierarchy storage primary every key is created under, and
//! the unrestricted signing keys certfleet makes.

use certfleet_keys::KeyAlgorithm;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    EccPoint, EccScheme, HashScheme, Public, PublicBuilder, PublicEccParametersBuilder,
    RsaExponent, RsaScheme, SymmetricDefinitionObject,
};
use tss_esapi::utils;

/// The storage primary: ECC P-256, restricted decryption, AES-128-CFB. A primary is derived
/// from the owner seed and this template, so the same template gives the same key on the
/// same TPM every time: key files stay loadable after a reboot.
pub(crate) fn storage_primary() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_decrypt(true)
        .with_restricted(true)
        .with_no_da(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// An unrestricted signing key (`fixedTPM`, `fixedParent`, `sensitiveDataOrigin`: made in,
/// and never leaving, this TPM), or `None` for algorithms the backend does not make.
pub(crate) fn signing_key(algorithm: KeyAlgorithm) -> Option<tss_esapi::Result<Public>> {
    let ecc = |curve, hash| {
        utils::create_unrestricted_signing_ecc_public(
            EccScheme::EcDsa(HashScheme::new(hash)),
            curve,
        )
    };
    Some(match algorithm {
        KeyAlgorithm::EcP256 => ecc(EccCurve::NistP256, HashingAlgorithm::Sha256),
        KeyAlgorithm::EcP384 => ecc(EccCurve::NistP384, HashingAlgorithm::Sha384),
        KeyAlgorithm::Rsa2048 => utils::create_unrestricted_signing_rsa_public(
            RsaScheme::RsaSsa(HashScheme::new(HashingAlgorithm::Sha256)),
            RsaKeyBits::Rsa2048,
            RsaExponent::ZERO_EXPONENT,
        ),
        _ => return None,
    })
}
