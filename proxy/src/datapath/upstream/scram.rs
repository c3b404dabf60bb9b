//! SCRAM-SHA-256/512 client (RFC 5802 / RFC 7677), pure: messages in, messages
//! out. The sidecar authenticates to the brokers with the gateway's own
//! credential; the app never holds it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("server-first message lacks `{0}`")]
    Missing(&'static str),
    #[error("server nonce does not extend the client nonce")]
    NonceMismatch,
    #[error("server sent an invalid {0}")]
    Invalid(&'static str),
    #[error("server asks for {0} PBKDF2 iterations, more than the {MAX_ITERATIONS} accepted")]
    TooManyIterations(u32),
    #[error("server rejected the credential: {0}")]
    ServerError(String),
    #[error("server signature does not match: the broker did not prove it knows the credential")]
    BadServerSignature,
}

/// The most PBKDF2 iterations a broker may ask for. Kafka's own ceiling is
/// 16384; a broker (or someone in its place) asking for billions would pin a
/// core for minutes on every connection.
pub const MAX_ITERATIONS: u32 = 100_000;

/// One SCRAM exchange in progress. `Debug` never shows the password.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    nonce: String,
    client_first_bare: String,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Escape a SCRAM username (`=` → `=3D`, `,` → `=2C`).
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    pub fn new(hash: ScramHash, username: &str, password: &str, nonce: &str) -> Self {
        Self {
            hash,
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            client_first_bare: format!("n={},r={}", saslname(username), nonce),
        }
    }

    /// A fresh random nonce (printable, no commas).
    pub fn random_nonce() -> String {
        let bytes: [u8; 24] = rand::random();
        B64.encode(bytes)
    }

    /// `client-first-message` (no channel binding, no authzid).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// From the server-first message, the client-final message and the server
    /// signature the server must then prove.
    pub fn client_final(&self, server_first: &str) -> Result<(String, Vec<u8>), ScramError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", v)) => return Err(ScramError::ServerError(v.to_owned())),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::Missing("r"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = B64
            .decode(salt.ok_or(ScramError::Missing("s"))?)
            .map_err(|_| ScramError::Invalid("salt"))?;
        let iterations: u32 = iterations
            .ok_or(ScramError::Missing("i"))?
            .parse()
            .map_err(|_| ScramError::Invalid("iteration count"))?;
        if iterations == 0 {
            return Err(ScramError::Invalid("iteration count"));
        }
        if iterations > MAX_ITERATIONS {
            return Err(ScramError::TooManyIterations(iterations));
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, server_first, without_proof
        );
        let salted = self.salted_password(&salt, iterations);
        let client_key = self.hmac(&salted, b"Client Key");
        let stored_key = self.digest(&client_key);
        let client_signature = self.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = self.hmac(&salted, b"Server Key");
        let server_signature = self.hmac(&server_key, auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)),
            server_signature,
        ))
    }

    /// Check the server-final message against the expected signature.
    pub fn verify_server_final(server_final: &str, expected: &[u8]) -> Result<(), ScramError> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let v = server_final
            .strip_prefix("v=")
            .ok_or(ScramError::Missing("v"))?;
        let v = v.split(',').next().unwrap_or_default();
        let got = B64
            .decode(v)
            .map_err(|_| ScramError::Invalid("server signature"))?;
        if got == expected {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }

    fn salted_password(&self, salt: &[u8], rounds: u32) -> Vec<u8> {
        match self.hash {
            ScramHash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), salt, rounds, &mut out);
                out
            }
            ScramHash::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(self.password.as_bytes(), salt, rounds, &mut out);
                out
            }
        }
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        match self.hash {
            ScramHash::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            ScramHash::Sha512 => match Hmac::<Sha512>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    fn digest(&self, data: &[u8]) -> Vec<u8> {
        match self.hash {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of RFC 7677 section 3.
    #[test]
    fn rfc7677_sha256_example() {
        let c = ScramClient::new(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (client_final, server_sig) = c.client_final(server_first).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        ScramClient::verify_server_final(
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            &server_sig,
        )
        .unwrap();
        assert_eq!(
            ScramClient::verify_server_final("v=AAAA", &server_sig),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let c = ScramClient::new(ScramHash::Sha512, "gw", "pw", "abc");
        assert_eq!(
            c.client_final("r=xyz123,s=AAAA,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            c.client_final("e=unknown-user"),
            Err(ScramError::ServerError("unknown-user".into()))
        );
        assert!(
            !format!("{c:?}").contains("pw"),
            "Debug never shows the password"
        );
    }

    #[test]
    fn an_iteration_count_that_would_pin_a_core_is_refused() {
        let c = ScramClient::new(ScramHash::Sha256, "gw", "pw", "abc");
        assert_eq!(
            c.client_final("r=abcdef,s=AAAA,i=4294967295"),
            Err(ScramError::TooManyIterations(u32::MAX))
        );
        assert!(c.client_final("r=abcdef,s=AAAA,i=4096").is_ok());
    }

    #[test]
    fn usernames_are_escaped() {
        let c = ScramClient::new(ScramHash::Sha512, "a=b,c", "pw", "n1");
        assert_eq!(c.client_first(), "n,,n=a=3Db=2Cc,r=n1");
    }
}
