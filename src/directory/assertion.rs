//! Client assertions (`private_key_jwt`, RFC 7523): a short-lived JWT signed with the app's own
//! private key stands in for a client secret, so no long-lived shared secret exists. Used by the
//! Graph certificate credential and the Okta service app.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid. Microsoft asks for at most 5–10 minutes after `nbf`; Okta
/// allows up to an hour. The token request is sent right after signing, so five minutes is
/// plenty even with some clock skew.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

/// Why a key or certificate file cannot be used. Each names the setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CredentialFileError {
    #[error("{setting} names `{path}`, which cannot be read: {reason}")]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{setting} names `{path}`, which holds no usable {what}: {reason}")]
    Invalid {
        setting: &'static str,
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{key_setting} (`{key}`) is not the private key of the certificate in {cert_setting} (`{cert}`): use the key the certificate was made from")]
    Mismatch {
        key_setting: &'static str,
        key: PathBuf,
        cert_setting: &'static str,
        cert: PathBuf,
    },
}

/// An RSA private key read from a PEM file. Never printed; the file's path is.
#[derive(Clone)]
pub struct PrivateKey {
    key: EncodingKey,
    path: PathBuf,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, [redacted])", self.path.display())
    }
}

impl PrivateKey {
    /// Reads a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) RSA key.
    pub fn from_pem_file(setting: &'static str, path: &Path) -> Result<Self, CredentialFileError> {
        let pem = std::fs::read(path).map_err(|e| CredentialFileError::Unreadable {
            setting,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let invalid = |reason: String| CredentialFileError::Invalid {
            setting,
            path: path.to_owned(),
            what: "RSA private key",
            reason,
        };
        if String::from_utf8_lossy(&pem).contains("ENCRYPTED PRIVATE KEY") {
            return Err(invalid(
                "it is encrypted; store it decrypted with restricted file permissions (openssl pkcs8 -topk8 -nocrypt)".into(),
            ));
        }
        let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| {
            invalid(format!(
                "{e} (expected a PEM `PRIVATE KEY` or `RSA PRIVATE KEY`)"
            ))
        })?;
        // The PEM is only unwrapped above; signing once proves it is an RSA key ring accepts.
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &serde_json::json!({}), &key)
            .map_err(|e| {
                invalid(format!(
                    "{e} (expected a PEM `PRIVATE KEY` or `RSA PRIVATE KEY`)"
                ))
            })?;
        Ok(Self {
            key,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An X.509 certificate read from a PEM file: what the assertion header names it by, and its
/// public key to check that the private key belongs to it.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    pub path: PathBuf,
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// The same, as the certificate writes it (`Mar  1 12:00:00 2125 +00:00`).
    pub not_after_text: String,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("path", &self.path)
            .field("subject", &self.subject)
            .field("x5t#S256", &self.thumbprint_s256())
            .finish()
    }
}

impl Certificate {
    pub fn from_pem_file(setting: &'static str, path: &Path) -> Result<Self, CredentialFileError> {
        let pem = std::fs::read(path).map_err(|e| CredentialFileError::Unreadable {
            setting,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_pem(&pem)
            .map_err(|reason| CredentialFileError::Invalid {
                setting,
                path: path.to_owned(),
                what: "certificate",
                reason,
            })
            .map(|mut c| {
                c.path = path.to_owned();
                c
            })
    }

    /// The first `CERTIFICATE` block of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|e| format!("not PEM ({e}); expected `-----BEGIN CERTIFICATE-----`"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "the first PEM block is `{}`, not `CERTIFICATE`",
                block.label
            ));
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        Ok(Self {
            subject: cert.subject().to_string(),
            not_after: cert.validity().not_after.timestamp(),
            not_after_text: cert.validity().not_after.to_string(),
            der: block.contents.clone(),
            path: PathBuf::new(),
        })
    }

    /// `x5t#S256`: base64url (no padding) of the SHA-256 of the certificate's DER encoding.
    pub fn thumbprint_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(&self.der))
    }

    /// The certificate's RSA public key, to verify signatures with.
    pub fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let spki = cert.public_key();
        // rsaEncryption; the BIT STRING holds the PKCS#1 RSAPublicKey.
        if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
            return Err("the certificate's key is not an RSA key".into());
        }
        Ok(jsonwebtoken::DecodingKey::from_rsa_der(
            &spki.subject_public_key.data,
        ))
    }

    /// Time left before the certificate expires (`None` once it has).
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        (self.not_after > now).then(|| Duration::from_secs((self.not_after - now) as u64))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct AssertionClaims {
    pub aud: String,
    pub iss: String,
    pub sub: String,
    pub jti: String,
    pub nbf: u64,
    pub iat: u64,
    pub exp: u64,
}

/// Signs client assertions for one client at one token endpoint.
#[derive(Clone)]
pub struct AssertionSigner {
    key: PrivateKey,
    header: Header,
    client_id: String,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("client_id", &self.client_id)
            .field("alg", &self.header.alg)
            .field("key", &self.key)
            .finish()
    }
}

impl AssertionSigner {
    /// Microsoft's certificate credential: PS256 with `x5t#S256`, as the identity platform's
    /// "certificate credentials" page specifies today (it names PSS padding and the SHA-256
    /// thumbprint; the older RS256 + SHA-1 `x5t` form is the one being retired).
    pub fn for_certificate(key: PrivateKey, cert: &Certificate, client_id: &str) -> Self {
        let mut header = Header::new(Algorithm::PS256);
        header.x5t_s256 = Some(cert.thumbprint_s256());
        Self {
            key,
            header,
            client_id: client_id.to_owned(),
        }
    }

    /// Okta's `private_key_jwt`: RS256 (Okta does not list PS256), `kid` when the service app
    /// holds more than one key.
    pub fn for_key(key: PrivateKey, kid: Option<String>, client_id: &str) -> Self {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid;
        Self {
            key,
            header,
            client_id: client_id.to_owned(),
        }
    }

    /// A fresh assertion for `audience` (the token endpoint's URL), valid from now for
    /// [`ASSERTION_LIFETIME`], with a unique `jti` so it cannot be replayed.
    pub fn sign(&self, audience: &str, now: SystemTime) -> Result<String, String> {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = AssertionClaims {
            aud: audience.to_owned(),
            iss: self.client_id.clone(),
            sub: self.client_id.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: secs,
            iat: secs,
            exp: secs + ASSERTION_LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key.key).map_err(|e| {
            format!(
                "cannot sign the client assertion with {}: {e}",
                self.key.path.display()
            )
        })
    }

    /// Proves that the key belongs to `cert` by signing and verifying a probe, so a wrong pair
    /// is an error at start-up rather than a refusal at the first repair.
    pub fn check_pair(
        &self,
        cert: &Certificate,
        key_setting: &'static str,
        cert_setting: &'static str,
    ) -> Result<(), CredentialFileError> {
        let mismatch = || CredentialFileError::Mismatch {
            key_setting,
            key: self.key.path.clone(),
            cert_setting,
            cert: cert.path.clone(),
        };
        let probe = self
            .sign("urn:o365-fixbot:probe", SystemTime::now())
            .map_err(|_| mismatch())?;
        let decoding = cert
            .decoding_key()
            .map_err(|reason| CredentialFileError::Invalid {
                setting: cert_setting,
                path: cert.path.clone(),
                what: "RSA certificate",
                reason,
            })?;
        let mut validation = jsonwebtoken::Validation::new(self.header.alg);
        validation.set_audience(&["urn:o365-fixbot:probe"]);
        jsonwebtoken::decode::<AssertionClaims>(&probe, &decoding, &validation)
            .map(|_| ())
            .map_err(|_| mismatch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/credentials")
            .join(name)
    }

    #[test]
    fn a_certificate_assertion_carries_the_claims_and_header_microsoft_asks_for() {
        let cert = Certificate::from_pem_file("c", &fixture("graph-cert.pem")).unwrap();
        let key = PrivateKey::from_pem_file("k", &fixture("graph-key.pem")).unwrap();
        let signer = AssertionSigner::for_certificate(key, &cert, "app-id");
        signer.check_pair(&cert, "k", "c").unwrap();
        let aud = "https://login.example/t/oauth2/v2.0/token";
        let jwt = signer.sign(aud, SystemTime::now()).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::PS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        // The SHA-256 of the DER, computed independently of `thumbprint_s256`.
        let der =
            x509_parser::pem::parse_x509_pem(&std::fs::read(fixture("graph-cert.pem")).unwrap())
                .unwrap()
                .1
                .contents;
        assert_eq!(
            header.x5t_s256.as_deref(),
            Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)).as_str())
        );
        let mut v = jsonwebtoken::Validation::new(Algorithm::PS256);
        v.set_audience(&[aud]);
        let claims =
            jsonwebtoken::decode::<AssertionClaims>(&jwt, &cert.decoding_key().unwrap(), &v)
                .unwrap()
                .claims;
        assert_eq!(
            (claims.iss.as_str(), claims.sub.as_str()),
            ("app-id", "app-id")
        );
        assert!(claims.exp > claims.nbf && claims.exp - claims.nbf <= 600);
        assert_eq!(claims.iat, claims.nbf);
        let again = signer.sign(aud, SystemTime::now()).unwrap();
        let jti = |t: &str| {
            jsonwebtoken::decode::<AssertionClaims>(t, &cert.decoding_key().unwrap(), &v)
                .unwrap()
                .claims
                .jti
        };
        assert_ne!(jti(&jwt), jti(&again), "each assertion has its own jti");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_naming_both_settings() {
        let cert = Certificate::from_pem_file("graph.certificate_file", &fixture("graph-cert.pem"))
            .unwrap();
        let key =
            PrivateKey::from_pem_file("graph.private_key_file", &fixture("other-key.pem")).unwrap();
        let signer = AssertionSigner::for_certificate(key, &cert, "app-id");
        let err = signer
            .check_pair(&cert, "graph.private_key_file", "graph.certificate_file")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("graph.private_key_file") && err.contains("graph.certificate_file"),
            "{err}"
        );
    }

    #[test]
    fn unusable_files_name_the_setting_and_never_print_the_key() {
        let err = PrivateKey::from_pem_file("okta.private_key_file", &fixture("graph-cert.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("okta.private_key_file") && err.contains("RSA private key"),
            "{err}"
        );
        let err = Certificate::from_pem_file("graph.certificate_file", &fixture("graph-key.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("graph.certificate_file") && err.contains("CERTIFICATE"),
            "{err}"
        );
        let err = PrivateKey::from_pem_file("k", Path::new("/nonexistent/key.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be read"), "{err}");
        let key = PrivateKey::from_pem_file("k", &fixture("okta-key.pem")).unwrap();
        let printed = format!("{:?}", AssertionSigner::for_key(key, None, "c"));
        assert!(
            printed.contains("[redacted]") && !printed.contains("MII"),
            "{printed}"
        );
    }

    #[test]
    fn remaining_validity_is_none_once_expired() {
        let cert = Certificate::from_pem_file("c", &fixture("graph-cert.pem")).unwrap();
        assert!(cert.remaining(SystemTime::now()).is_some());
        let after = UNIX_EPOCH + Duration::from_secs(cert.not_after as u64 + 1);
        assert!(cert.remaining(after).is_none());
    }
}
