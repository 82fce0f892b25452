//! The release signature: ECDSA P-256 over the bytes of `SHA256SUMS`, as
//! `cosign sign-blob --key` writes it (base64 of the ASN.1 DER signature, SHA-256).
//!
//! Why `p256` and not `sigstore`: a key-pinned cosign blob signature is one ECDSA
//! verification; `sigstore` adds Rekor/Fulcio machinery, a large dependency tree and an
//! API its authors mark experimental, none of which a pinned key needs. `p256` (RustCrypto,
//! the widely used 0.13 line) does exactly this check and is also what we sign with, so
//! the release tool and the updater cannot drift; a test pins the format against
//! `openssl dgst -sha256 -verify`.

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
};

/// Largest signature file we read: a DER P-256 signature is at most 72 bytes (96 in
/// base64); the cap leaves room for whitespace and nothing else.
pub const MAX_SIGNATURE_FILE: u64 = 1024;

/// What went wrong with a key or a signature.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a PEM `PUBLIC KEY` holding a P-256 point.
    #[error("the public key is not a PEM P-256 public key: {0}")]
    BadPublicKey(String),
    /// The private key is neither PKCS#8 (`PRIVATE KEY`) nor SEC1 (`EC PRIVATE KEY`)
    /// P-256, or it is encrypted.
    #[error("the private key is not an unencrypted PEM P-256 key (PKCS#8 or SEC1): {0}")]
    BadPrivateKey(String),
    /// The signature file is larger than [`MAX_SIGNATURE_FILE`].
    #[error("the signature file is {0} bytes, more than a signature can be")]
    TooLarge(usize),
    /// The signature file is not base64.
    #[error("the signature file is not base64: {0}")]
    NotBase64(String),
    /// The decoded bytes are not a DER ECDSA signature.
    #[error("the signature is not a DER ECDSA signature: {0}")]
    NotDer(String),
    /// A well-formed signature that this key did not make over these bytes.
    #[error("the signature does not match: SHA256SUMS was not signed by banger's release key, or it was altered")]
    Mismatch,
}

/// A release public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parse a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), the format of
    /// `cosign.pub` and of `openssl ec -pubout`.
    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(Self)
            .map_err(|e| SignatureError::BadPublicKey(e.to_string()))
    }

    /// The key as PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> Result<String, SignatureError> {
        self.0
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|e| SignatureError::BadPublicKey(e.to_string()))
    }
}

/// A release signing key (only the release tool and tests hold one).
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// Parse an unencrypted PEM private key: PKCS#8 (`PRIVATE KEY`, `openssl genpkey`)
    /// or SEC1 (`EC PRIVATE KEY`, `openssl ecparam -genkey`).
    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        let pem = pem.trim();
        if pem.contains("ENCRYPTED") {
            return Err(SignatureError::BadPrivateKey(
                "it is encrypted; decrypt it with openssl first (cosign's own encrypted keys can sign with `cosign sign-blob --key` instead)".into(),
            ));
        }
        if let Ok(k) = SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self(k));
        }
        p256::SecretKey::from_sec1_pem(pem)
            .map(|s| Self(SigningKey::from(s)))
            .map_err(|e| SignatureError::BadPrivateKey(e.to_string()))
    }

    /// A key from 32 secret bytes (tests generate keys this way).
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Self, SignatureError> {
        SigningKey::from_bytes(secret.into())
            .map(Self)
            .map_err(|e| SignatureError::BadPrivateKey(e.to_string()))
    }

    /// The key as unencrypted PKCS#8 PEM (`PRIVATE KEY`).
    pub fn to_pem(&self) -> Result<String, SignatureError> {
        self.0
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| SignatureError::BadPrivateKey(e.to_string()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// Sign `data` (SHA-256, deterministic nonce) and return the signature file's
    /// contents: base64 of the DER signature, no newline, as cosign writes it.
    pub fn sign(&self, data: &[u8]) -> String {
        let sig: Signature = self.0.sign(data);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// Check `sig_file` (the contents of `SHA256SUMS.sig`) over `data` with `key`.
pub fn verify(key: &PublicKey, data: &[u8], sig_file: &[u8]) -> Result<(), SignatureError> {
    if sig_file.len() as u64 > MAX_SIGNATURE_FILE {
        return Err(SignatureError::TooLarge(sig_file.len()));
    }
    let text =
        std::str::from_utf8(sig_file).map_err(|_| SignatureError::NotBase64("not text".into()))?;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| SignatureError::NotBase64(e.to_string()))?;
    let sig = Signature::from_der(&der).map_err(|e| SignatureError::NotDer(e.to_string()))?;
    key.0
        .verify(data, &sig)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random_key;

    const DATA: &[u8] = b"0123  banger-1.0.0-x86_64-unknown-linux-gnu.tar.gz\n";

    #[test]
    fn good_signature_verifies() {
        let k = random_key();
        let pub_pem = k.public_key().to_pem().unwrap();
        let key = PublicKey::from_pem(&pub_pem).unwrap();
        let sig = k.sign(DATA);
        verify(&key, DATA, sig.as_bytes()).unwrap();
        let again = PrivateKey::from_pem(&k.to_pem().unwrap()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        // A trailing newline (as `base64` or an editor adds) is fine.
        verify(&key, DATA, format!("{sig}\n").as_bytes()).unwrap();
    }

    #[test]
    fn tampered_data_is_refused() {
        let k = random_key();
        let sig = k.sign(DATA);
        let mut other = DATA.to_vec();
        other[0] ^= 1;
        assert!(matches!(
            verify(&k.public_key(), &other, sig.as_bytes()),
            Err(SignatureError::Mismatch)
        ));
    }

    #[test]
    fn tampered_signature_is_refused() {
        let k = random_key();
        let sig = k.sign(DATA);
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(&sig)
            .unwrap();
        let last = der.len() - 1;
        der[last] ^= 0x55;
        let bad = base64::engine::general_purpose::STANDARD.encode(&der);
        let e = verify(&k.public_key(), DATA, bad.as_bytes()).unwrap_err();
        assert!(
            matches!(e, SignatureError::Mismatch | SignatureError::NotDer(_)),
            "{e}"
        );
    }

    #[test]
    fn another_key_is_refused() {
        let k = random_key();
        let other = random_key();
        let sig = k.sign(DATA);
        assert!(matches!(
            verify(&other.public_key(), DATA, sig.as_bytes()),
            Err(SignatureError::Mismatch)
        ));
    }

    #[test]
    fn garbage_signature_files_are_refused() {
        let k = random_key().public_key();
        assert!(matches!(
            verify(&k, DATA, b"not base64 !!"),
            Err(SignatureError::NotBase64(_))
        ));
        assert!(matches!(
            verify(&k, DATA, b"aGVsbG8="),
            Err(SignatureError::NotDer(_))
        ));
        assert!(matches!(
            verify(&k, DATA, &[b'A'; 2000]),
            Err(SignatureError::TooLarge(2000))
        ));
        assert!(matches!(
            verify(&k, DATA, &[0xff, 0xfe]),
            Err(SignatureError::NotBase64(_))
        ));
    }

    #[test]
    fn keys_parse_and_refuse() {
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        assert!(matches!(
            PrivateKey::from_pem(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----"
            ),
            Err(SignatureError::BadPrivateKey(_))
        ));
    }

    /// The committed key is what gets compiled in, and it parses.
    #[test]
    fn builtin_key_parses() {
        PublicKey::from_pem(crate::trust::BUILTIN_PUBLIC_KEY_PEM).unwrap();
    }
}
