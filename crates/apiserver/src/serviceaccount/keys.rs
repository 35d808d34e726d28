//! The keys service account tokens are signed and verified with.

use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, RSAKeyParameters, RSAKeyType,
    ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::der::{self, PemBlock};
use super::KeyError;

/// A key that verifies tokens: the public half of a signing key, current or rotated out.
#[derive(Clone)]
pub(crate) struct VerificationKey {
    pub(crate) kid: String,
    pub(crate) algorithm: Algorithm,
    pub(crate) decoding: DecodingKey,
    pub(crate) jwk: Jwk,
}

/// The private key new tokens are signed with.
#[derive(Clone)]
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    /// The PEM it was read from or generated as (`PRIVATE KEY`, `EC PRIVATE KEY`, ...).
    pem: String,
}

/// The keys of the service account token issuer and authenticator, as kube-apiserver's
/// `--service-account-signing-key-file` (one private key, RSA for RS256 or P-256 ECDSA for
/// ES256) and `--service-account-key-file` (any number of further public or private keys whose
/// tokens stay valid: keys rotated out keep verifying the tokens they signed until those
/// expire).
///
/// Every token's header carries its key's `kid`: the RFC 7638 SHA-256 thumbprint of the
/// public key, so a verifier picks the right key without trying each.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct ServiceAccountKeys {
    signing: SigningKey,
    verifying: Vec<VerificationKey>,
}

impl std::fmt::Debug for ServiceAccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKeys")
            .field("signing_kid", &self.signing.kid)
            .field("algorithm", &self.signing.algorithm)
            .field(
                "verifying",
                &self.verifying.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A private key read from one PEM block, with its public half.
struct PrivateKey {
    algorithm: Algorithm,
    encoding: EncodingKey,
    public: VerificationKey,
}

impl ServiceAccountKeys {
    /// A fresh P-256 key (ES256) from the operating system's random source, for a server
    /// configured with no key file; tokens it signs die with it unless
    /// [`signing_key_pem`](Self::signing_key_pem) is kept (see
    /// [`load_or_generate`](Self::load_or_generate)).
    ///
    /// Errors: none in practice ([`KeyError::Malformed`] would mean the random source is
    /// broken).
    pub fn generate() -> Result<Self, KeyError> {
        // A scalar is valid below the curve order; a random 256-bit value fails that with a
        // probability of about 2^-32, so a few attempts always succeed.
        let mut last = None;
        for _ in 0..8 {
            let secret = random_bytes(32);
            let pkcs8 = der::p256_pkcs8(&der::sec1_from_scalar(&secret));
            match private_key(&pkcs8, PrivateFormat::Pkcs8) {
                Ok(key) => {
                    let pem = pem("PRIVATE KEY", &pkcs8);
                    return Ok(Self::from_private(key, pem));
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| KeyError::Malformed("no key generated".into())))
    }

    /// The keys of a signing key in PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or
    /// SEC1 (`EC PRIVATE KEY`, P-256 only), as kube-apiserver's
    /// `--service-account-signing-key-file` takes it. Its public half verifies.
    ///
    /// Errors: [`KeyError`] when the text holds no private key or one that cannot sign.
    pub fn from_signing_key_pem(text: &str) -> Result<Self, KeyError> {
        let blocks = der::pem_blocks(text)?;
        let block = blocks
            .iter()
            .find(|block| block.label.ends_with("PRIVATE KEY"))
            .ok_or(KeyError::NoKey("private"))?;
        let key = private_from_block(block)?;
        Ok(Self::from_private(key, pem(&block.label, &block.der)))
    }

    fn from_private(key: PrivateKey, pem: String) -> Self {
        ServiceAccountKeys {
            signing: SigningKey {
                kid: key.public.kid.clone(),
                algorithm: key.algorithm,
                encoding: key.encoding,
                pem,
            },
            verifying: vec![key.public],
        }
    }

    /// Adds every key of a `--service-account-key-file`: public keys (`PUBLIC KEY`,
    /// `RSA PUBLIC KEY`) and the public halves of private keys, so the tokens they signed
    /// verify. A key already known is not added twice.
    ///
    /// Errors: [`KeyError`] when the text holds no key or an unreadable one.
    pub fn with_verification_keys_pem(mut self, text: &str) -> Result<Self, KeyError> {
        let mut found = false;
        for block in der::pem_blocks(text)? {
            let key = if block.label.ends_with("PRIVATE KEY") {
                private_from_block(&block)?.public
            } else if block.label == "PUBLIC KEY" {
                public_from_spki(&block.der)?
            } else if block.label == "RSA PUBLIC KEY" {
                rsa_public(&block.der)?
            } else {
                continue;
            };
            found = true;
            if !self.verifying.iter().any(|known| known.kid == key.kid) {
                self.verifying.push(key);
            }
        }
        if !found {
            return Err(KeyError::NoKey("public or private"));
        }
        Ok(self)
    }

    /// Reads kube-apiserver's flags: the signing key file, then each verification key file.
    ///
    /// Errors: [`KeyError::Io`] naming an unreadable file, or the file's [`KeyError`].
    pub fn load(signing_key_file: &Path, key_files: &[PathBuf]) -> Result<Self, KeyError> {
        let mut keys = Self::from_signing_key_pem(&read(signing_key_file)?)?;
        for file in key_files {
            keys = keys.with_verification_keys_pem(&read(file)?)?;
        }
        Ok(keys)
    }

    /// The signing key kept at `path` (written with mode 0600 when missing, by
    /// [`generate`](Self::generate)), so that a restarted server keeps verifying the tokens it
    /// issued before.
    ///
    /// Errors: [`KeyError::Io`] when the file cannot be read or written, or the file's
    /// [`KeyError`].
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Self::from_signing_key_pem(&read(path)?);
        }
        let keys = Self::generate()?;
        write_private(path, keys.signing_key_pem())?;
        Ok(keys)
    }

    /// The signing key in PEM, as read or generated (PKCS#8 `PRIVATE KEY` when generated).
    pub fn signing_key_pem(&self) -> &str {
        &self.signing.pem
    }

    /// The signing key's id: the `kid` of the tokens it signs.
    pub fn key_id(&self) -> &str {
        &self.signing.kid
    }

    /// The signing algorithm: `ES256` or `RS256`.
    pub fn algorithm(&self) -> Algorithm {
        self.signing.algorithm
    }

    /// Every verifying key's public JWK (`use: sig`, `kid`, `alg`), as
    /// `/openid/v1/jwks` serves them.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.verifying.iter().map(|key| key.jwk.clone()).collect(),
        }
    }

    pub(crate) fn encoding(&self) -> (&str, Algorithm, &EncodingKey) {
        (
            &self.signing.kid,
            self.signing.algorithm,
            &self.signing.encoding,
        )
    }

    pub(crate) fn verification_keys(&self) -> &[VerificationKey] {
        &self.verifying
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)
}

/// `n` bytes from the operating system's random source (through version 4 UUIDs, whose
/// 122 random bits are read byte by byte, skipping the version and variant bytes).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        out.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != 6 && *index != 8)
                .map(|(_, byte)| *byte),
        );
    }
    out.truncate(n);
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Clone, Copy)]
enum PrivateFormat {
    Pkcs8,
    Pkcs1,
    Sec1,
}

fn private_from_block(block: &PemBlock) -> Result<PrivateKey, KeyError> {
    let format = match block.label.as_str() {
        "PRIVATE KEY" => PrivateFormat::Pkcs8,
        "RSA PRIVATE KEY" => PrivateFormat::Pkcs1,
        "EC PRIVATE KEY" => PrivateFormat::Sec1,
        other => return Err(KeyError::Unsupported(other.to_string())),
    };
    private_key(&block.der, format)
}

fn private_key(der_bytes: &[u8], format: PrivateFormat) -> Result<PrivateKey, KeyError> {
    let (algorithm, encoding) = match format {
        PrivateFormat::Pkcs1 => (Algorithm::RS256, EncodingKey::from_rsa_der(der_bytes)),
        PrivateFormat::Sec1 => {
            let fields = der::expect(der_bytes, der::SEQUENCE, "EC private key")?;
            // [0] parameters, when present, name the curve.
            if let Some(parameters) = fields.iter().find(|field| field.tag == 0xa0) {
                let (curve, _) = der::read(parameters.content)?;
                if curve.content != der::OID_P256 {
                    return Err(KeyError::Unsupported("EC curve other than P-256".into()));
                }
            }
            (
                Algorithm::ES256,
                EncodingKey::from_ec_der(&der::p256_pkcs8(der_bytes)),
            )
        }
        PrivateFormat::Pkcs8 => {
            let fields = der::expect(der_bytes, der::SEQUENCE, "PKCS#8 private key")?;
            let [_, algorithm, key, ..] = fields.as_slice() else {
                return Err(KeyError::Malformed("PKCS#8 private key".into()));
            };
            let identifiers = der::children(algorithm.content)?;
            let oid = identifiers.first().map(|e| e.content).unwrap_or_default();
            if oid == der::OID_RSA {
                if key.tag != der::OCTET_STRING {
                    return Err(KeyError::Malformed("PKCS#8 RSA key".into()));
                }
                (Algorithm::RS256, EncodingKey::from_rsa_der(key.content))
            } else if oid == der::OID_EC {
                if identifiers.get(1).map(|e| e.content) != Some(der::OID_P256) {
                    return Err(KeyError::Unsupported("EC curve other than P-256".into()));
                }
                (Algorithm::ES256, EncodingKey::from_ec_der(der_bytes))
            } else {
                return Err(KeyError::Unsupported(
                    "private key algorithm other than RSA or ECDSA".into(),
                ));
            }
        }
    };
    let jwk = Jwk::from_encoding_key(&encoding, algorithm)
        .map_err(|e| KeyError::Malformed(format!("private key: {e}")))?;
    let public = verification_key(jwk.algorithm, algorithm)?;
    Ok(PrivateKey {
        algorithm,
        encoding,
        public,
    })
}

/// The verification key of a `SubjectPublicKeyInfo` (PEM `PUBLIC KEY`).
fn public_from_spki(der_bytes: &[u8]) -> Result<VerificationKey, KeyError> {
    let fields = der::expect(der_bytes, der::SEQUENCE, "public key")?;
    let [algorithm, key] = fields.as_slice() else {
        return Err(KeyError::Malformed("public key".into()));
    };
    if key.tag != der::BIT_STRING || key.content.first() != Some(&0) {
        return Err(KeyError::Malformed("public key bits".into()));
    }
    let bits = &key.content[1..];
    let identifiers = der::children(algorithm.content)?;
    let oid = identifiers.first().map(|e| e.content).unwrap_or_default();
    if oid == der::OID_RSA {
        rsa_public(bits)
    } else if oid == der::OID_EC {
        if identifiers.get(1).map(|e| e.content) != Some(der::OID_P256) {
            return Err(KeyError::Unsupported("EC curve other than P-256".into()));
        }
        let [0x04, point @ ..] = bits else {
            return Err(KeyError::Malformed("EC point not uncompressed".into()));
        };
        if point.len() != 64 {
            return Err(KeyError::Malformed("P-256 point".into()));
        }
        let parameters = AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x: b64url(&point[..32]),
            y: b64url(&point[32..]),
        });
        verification_key(parameters, Algorithm::ES256)
    } else {
        Err(KeyError::Unsupported(
            "public key algorithm other than RSA or ECDSA".into(),
        ))
    }
}

/// The verification key of a PKCS#1 `RSAPublicKey`.
fn rsa_public(der_bytes: &[u8]) -> Result<VerificationKey, KeyError> {
    let fields = der::expect(der_bytes, der::SEQUENCE, "RSA public key")?;
    let [modulus, exponent] = fields.as_slice() else {
        return Err(KeyError::Malformed("RSA public key".into()));
    };
    let parameters = AlgorithmParameters::RSA(RSAKeyParameters {
        key_type: RSAKeyType::RSA,
        n: b64url(&der::unsigned(modulus)?),
        e: b64url(&der::unsigned(exponent)?),
    });
    verification_key(parameters, Algorithm::RS256)
}

fn verification_key(
    parameters: AlgorithmParameters,
    algorithm: Algorithm,
) -> Result<VerificationKey, KeyError> {
    let mut jwk = Jwk {
        common: CommonParameters::default(),
        algorithm: parameters,
    };
    let kid = jwk.thumbprint(ThumbprintHash::SHA256);
    jwk.common = CommonParameters {
        public_key_use: Some(PublicKeyUse::Signature),
        key_algorithm: Some(match algorithm {
            Algorithm::RS256 => KeyAlgorithm::RS256,
            _ => KeyAlgorithm::ES256,
        }),
        key_id: Some(kid.clone()),
        ..CommonParameters::default()
    };
    let decoding =
        DecodingKey::from_jwk(&jwk).map_err(|e| KeyError::Malformed(format!("public key: {e}")))?;
    Ok(VerificationKey {
        kid,
        algorithm,
        decoding,
        jwk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_from_its_pem_with_the_same_id() {
        let keys = ServiceAccountKeys::generate().unwrap();
        assert_eq!(keys.algorithm(), Algorithm::ES256);
        let again = ServiceAccountKeys::from_signing_key_pem(keys.signing_key_pem()).unwrap();
        assert_eq!(again.key_id(), keys.key_id());
        assert_ne!(
            ServiceAccountKeys::generate().unwrap().key_id(),
            keys.key_id()
        );
    }

    #[test]
    fn an_ec_private_key_in_sec1_form_is_accepted() {
        let keys = ServiceAccountKeys::generate().unwrap();
        let pkcs8 = der::pem_blocks(keys.signing_key_pem())
            .unwrap()
            .remove(0)
            .der;
        let fields = der::expect(&pkcs8, der::SEQUENCE, "pkcs8").unwrap();
        let sec1 = pem("EC PRIVATE KEY", fields[2].content);
        let again = ServiceAccountKeys::from_signing_key_pem(&sec1).unwrap();
        assert_eq!(again.key_id(), keys.key_id());
    }

    #[test]
    fn verification_keys_come_from_private_keys_and_are_not_duplicated() {
        let current = ServiceAccountKeys::generate().unwrap();
        let old = ServiceAccountKeys::generate().unwrap();
        let keys = current
            .clone()
            .with_verification_keys_pem(&format!(
                "{}{}",
                old.signing_key_pem(),
                current.signing_key_pem()
            ))
            .unwrap();
        let kids: Vec<_> = keys
            .jwks()
            .keys
            .iter()
            .map(|k| k.common.key_id.clone())
            .collect();
        assert_eq!(
            kids,
            [
                Some(current.key_id().to_string()),
                Some(old.key_id().to_string())
            ]
        );
        assert!(current.with_verification_keys_pem("no keys here").is_err());
    }

    #[test]
    fn a_public_key_in_spki_form_verifies_under_the_same_id() {
        let keys = ServiceAccountKeys::generate().unwrap();
        let jwk = &keys.jwks().keys[0];
        let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
            panic!("not EC: {jwk:?}")
        };
        let decode = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        let point = [vec![4u8], decode(&ec.x), decode(&ec.y)].concat();
        let algorithm = [
            der::encode(der::OID, der::OID_EC),
            der::encode(der::OID, der::OID_P256),
        ]
        .concat();
        let spki = der::encode(
            der::SEQUENCE,
            &[
                der::encode(der::SEQUENCE, &algorithm),
                der::encode(der::BIT_STRING, &[vec![0u8], point].concat()),
            ]
            .concat(),
        );
        let public = public_from_spki(&spki).unwrap();
        assert_eq!(public.kid, keys.key_id());
    }

    #[test]
    fn unreadable_key_text_is_refused() {
        assert!(matches!(
            ServiceAccountKeys::from_signing_key_pem("nothing"),
            Err(KeyError::NoKey(_))
        ));
        assert!(ServiceAccountKeys::from_signing_key_pem(
            "-----BEGIN PRIVATE KEY-----\nAQID\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }

    #[test]
    fn load_or_generate_keeps_the_key_it_wrote() {
        let dir = std::env::temp_dir().join(format!("sa-keys-{}", uuid::Uuid::new_v4()));
        let path = dir.join("sa.key");
        let first = ServiceAccountKeys::load_or_generate(&path).unwrap();
        let second = ServiceAccountKeys::load_or_generate(&path).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
