//! Connections from the sidecar to the real brokers: TCP, optional TLS
//! (rustls, ring provider), optional SASL PLAIN / SCRAM with the gateway's own
//! credential. The proxy's own requests here run before any client frame is
//! forwarded on the connection, with their own correlation ids.

pub mod credentials;
pub mod scram;
pub mod tls;

use crate::kafka::codec::{
    FrameCodec, FrameError, RequestMeta, decode_body, encode_request, length_prefix, split_response,
};
use bytes::Bytes;
use futures::StreamExt;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use scram::{ScramClient, ScramHash};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

pub use credentials::Credentials;

/// Anything a broker connection can be (plain TCP or TLS over TCP).
pub trait BrokerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> BrokerIo for T {}

/// A connected, authenticated broker connection.
pub type BrokerStream = Box<dyn BrokerIo>;

/// SASL mechanism the gateway uses towards the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// How to reach and authenticate to the brokers.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Bootstrap servers (`host:port`), tried in order.
    pub bootstrap: Vec<String>,
    pub tls: Option<tls::TlsSettings>,
    pub sasl: Option<(SaslMechanism, Arc<Credentials>)>,
    pub connect_timeout: Duration,
    pub max_frame: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {0}: timed out")]
    Timeout(String),
    #[error("TLS to {addr}: {source}")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("broker closed the connection during {0}")]
    Closed(&'static str),
    #[error("SASL {mechanism} refused by the broker: {message}")]
    SaslRefused {
        mechanism: &'static str,
        message: String,
    },
    #[error("SCRAM: {0}")]
    Scram(#[from] scram::ScramError),
    #[error("none of the upstream bootstrap servers answered: {0}")]
    NoBootstrap(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl UpstreamConfig {
    /// Connect to any bootstrap server, trying each in order.
    pub async fn connect_bootstrap(&self) -> Result<BrokerStream, UpstreamError> {
        let mut last = String::from("no bootstrap servers configured");
        for addr in &self.bootstrap {
            match self.connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap server unavailable");
                    last = e.to_string();
                }
            }
        }
        Err(UpstreamError::NoBootstrap(last))
    }

    /// Connect to one broker (`host:port`), then TLS and SASL as configured.
    pub async fn connect(&self, addr: &str) -> Result<BrokerStream, UpstreamError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::Timeout(addr.to_owned()))?
            .map_err(|source| UpstreamError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        // Kafka frames are latency-sensitive request/response pairs.
        let _ = tcp.set_nodelay(true);
        let mut stream: BrokerStream = match &self.tls {
            None => Box::new(tcp),
            Some(settings) => Box::new(settings.wrap(addr, tcp).await?),
        };
        if let Some((mechanism, credentials)) = &self.sasl {
            authenticate(&mut stream, *mechanism, credentials, self.max_frame).await?;
        }
        Ok(stream)
    }
}

/// One request/response exchange of the proxy's own on a fresh connection.
pub async fn exchange<Req: Encodable, Resp: Decodable>(
    stream: &mut BrokerStream,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &Req,
    max_frame: usize,
) -> Result<Resp, UpstreamError> {
    let meta = RequestMeta {
        api_key,
        api_version: version,
        correlation_id,
    };
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("streamgate-proxy")));
    let frame = encode_request(&header, meta.request_header_version(), request, version)?;
    let mut wire = Vec::with_capacity(frame.len() + 4);
    wire.extend_from_slice(&length_prefix(frame.len())?);
    wire.extend_from_slice(&frame);
    stream.write_all(&wire).await.map_err(FrameError::Io)?;
    stream.flush().await.map_err(FrameError::Io)?;
    let mut reader = FramedRead::new(&mut *stream, FrameCodec::new(max_frame));
    let response: Bytes = reader
        .next()
        .await
        .ok_or(UpstreamError::Closed(api_key_name(api_key)))??;
    if !reader.read_buffer().is_empty() {
        // The broker only answers what we asked; anything more is a protocol error.
        return Err(UpstreamError::Closed(
            "an exchange (unexpected extra bytes)",
        ));
    }
    let (_, body) = split_response(&response, meta.response_header_version())?;
    Ok(decode_body(body, version, "proxy exchange response")?)
}

fn api_key_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::Metadata => "Metadata",
        _ => "a proxy request",
    }
}

async fn authenticate(
    stream: &mut BrokerStream,
    mechanism: SaslMechanism,
    credentials: &Credentials,
    max_frame: usize,
) -> Result<(), UpstreamError> {
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.name()));
    let answer: SaslHandshakeResponse =
        exchange(stream, ApiKey::SaslHandshake, 1, 1, &handshake, max_frame).await?;
    if answer.error_code != 0 {
        let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(UpstreamError::SaslRefused {
            mechanism: mechanism.name(),
            message: format!(
                "handshake error {} (broker offers {offered:?})",
                answer.error_code
            ),
        });
    }
    match mechanism {
        SaslMechanism::Plain => {
            sasl_step(stream, mechanism, 2, credentials.plain_message(), max_frame).await?;
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let hash = if mechanism == SaslMechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let client = ScramClient::new(
                hash,
                &credentials.username,
                credentials.password(),
                &ScramClient::random_nonce(),
            );
            let server_first = sasl_step(
                stream,
                mechanism,
                2,
                client.client_first().into_bytes(),
                max_frame,
            )
            .await?;
            let server_first = String::from_utf8_lossy(&server_first).into_owned();
            let (client_final, expected) = client.client_final(&server_first)?;
            let server_final =
                sasl_step(stream, mechanism, 3, client_final.into_bytes(), max_frame).await?;
            ScramClient::verify_server_final(&String::from_utf8_lossy(&server_final), &expected)?;
        }
    }
    tracing::debug!(mechanism = mechanism.name(), "authenticated to the broker");
    Ok(())
}

async fn sasl_step(
    stream: &mut BrokerStream,
    mechanism: SaslMechanism,
    correlation_id: i32,
    bytes: Vec<u8>,
    max_frame: usize,
) -> Result<Bytes, UpstreamError> {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
    let r: SaslAuthenticateResponse = exchange(
        stream,
        ApiKey::SaslAuthenticate,
        1,
        correlation_id,
        &request,
        max_frame,
    )
    .await?;
    if r.error_code != 0 {
        return Err(UpstreamError::SaslRefused {
            mechanism: mechanism.name(),
            message: r
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_else(|| format!("error {}", r.error_code)),
        });
    }
    Ok(r.auth_bytes)
}
