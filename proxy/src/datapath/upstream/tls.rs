//! Upstream TLS with rustls (ring provider): trust from a CA file, or the
//! system's roots when none is given (as any TLS client does: a managed Kafka
//! with a public certificate needs no flag); optional client certificate,
//! optional server-name override.

use super::UpstreamError;
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Clone)]
pub struct TlsSettings {
    connector: TlsConnector,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error(
        "--upstream-tls without --upstream-ca-file uses the system's trust store, and it holds no \
         usable certificate ({0}); pass --upstream-ca-file with the CA that signed the brokers' certificates"
    )]
    NoSystemRoots(String),
    #[error("--upstream-client-cert and --upstream-client-key go together")]
    HalfClientAuth,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsConfigError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate(shown));
    }
    Ok(certs)
}

/// The platform's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), as
/// OpenSSL-based Kafka clients use by default.
fn system_roots() -> Result<rustls::RootCertStore, TlsConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "no certificates found".to_string(), ToString::to_string);
        return Err(TlsConfigError::NoSystemRoots(why));
    }
    Ok(roots)
}

impl TlsSettings {
    pub fn new(
        ca_file: Option<&Path>,
        server_name: Option<String>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, TlsConfigError> {
        let roots = match ca_file {
            Some(file) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(file)? {
                    roots.add(cert)?;
                }
                roots
            }
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match (client_cert, client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let shown = key.display().to_string();
                let pem = std::fs::read(key).map_err(|source| TlsConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
                let key = rustls_pemfile::private_key(&mut pem.as_slice())
                    .ok()
                    .flatten()
                    .ok_or(TlsConfigError::NoKey(shown))?;
                builder.with_client_auth_cert(chain, key)?
            }
            _ => return Err(TlsConfigError::HalfClientAuth),
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// TLS handshake over a connected socket; the name checked is the
    /// override if given, else the host part of `addr`.
    pub async fn wrap(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let host = match &self.server_name {
            Some(name) => name.clone(),
            None => addr
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(addr)
                .trim_matches(['[', ']'])
                .to_owned(),
        };
        let name =
            ServerName::try_from(host.clone()).map_err(|_| UpstreamError::ServerName(host))?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|source| UpstreamError::Tls {
                addr: addr.to_owned(),
                source,
            })
    }
}
