//! Kafka framing on `Bytes`: a 4-byte big-endian length prefix, then the
//! message. Frames are handed around as `Bytes` so that forwarding a frame the
//! gate does not need to look at costs no copy. Only the request header is
//! peeked (api key, version, correlation id, client id); message bodies are
//! decoded by `apis::*` when, and only when, the gate must rewrite or inspect
//! them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio_util::codec::Decoder;

/// Default cap on one frame: 100 MiB (Kafka's own `socket.request.max.bytes` is 100 MiB).
pub const DEFAULT_MAX_FRAME: usize = 100 * 1024 * 1024;

/// Why a frame could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the {cap}-byte frame cap")]
    TooLarge { size: usize, cap: usize },
    #[error("frame has a negative length ({0})")]
    NegativeLength(i32),
    #[error("frame of {0} bytes is too short for a request header")]
    ShortHeader(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: anyhow::Error,
    },
    /// A stage refused to let the frame reach the client (failureMode Closed
    /// with no durable record of a response it could not take apart): the
    /// connection closes instead.
    #[error("response withheld: {0}")]
    Withheld(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A `tokio_util` decoder yielding whole frames (without the length prefix).
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// Change the cap (tighter before authentication, the full one after).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

/// Buffer space reserved ahead of the bytes that arrived: a length prefix
/// alone must not make the proxy reserve the whole frame it announces.
const RESERVE_AHEAD: usize = 64 * 1024;

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let size = usize::try_from(len).map_err(|_| FrameError::NegativeLength(len))?;
        if size > self.max_frame {
            return Err(FrameError::TooLarge {
                size,
                cap: self.max_frame,
            });
        }
        if src.len() < 4 + size {
            // Grow with what arrives (amortized doubling by BytesMut), never
            // by what the prefix only claims.
            src.reserve((4 + size - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        src.advance(4);
        Ok(Some(src.split_to(size).freeze()))
    }
}

/// The 4-byte length prefix for a frame body of `len` bytes.
pub fn length_prefix(len: usize) -> Result<[u8; 4], FrameError> {
    let n = i32::try_from(len).map_err(|_| FrameError::TooLarge {
        size: len,
        cap: i32::MAX as usize,
    })?;
    Ok(n.to_be_bytes())
}

/// What the proxy needs from every request header, read without decoding the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestMeta {
    /// Peek the fixed part of a request header (api key, version, correlation id).
    pub fn peek(frame: &[u8]) -> Result<Self, FrameError> {
        if frame.len() < 8 {
            return Err(FrameError::ShortHeader(frame.len()));
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
        Ok(Self {
            api_key,
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }

    /// The request header version this api key/version uses (v2 for flexible versions).
    pub fn request_header_version(&self) -> i16 {
        self.api_key.request_header_version(self.api_version)
    }

    /// The response header version (v1 for flexible versions; ApiVersions is always v0).
    pub fn response_header_version(&self) -> i16 {
        self.api_key.response_header_version(self.api_version)
    }
}

/// The client id of a request header v1/v2 (a nullable int16-length string after
/// the correlation id). `None` when absent, null or not UTF-8.
pub fn peek_client_id(frame: &[u8]) -> Option<&str> {
    let len = i16::from_be_bytes([*frame.get(8)?, *frame.get(9)?]);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(frame.get(10..10 + len)?).ok()
}

/// Split a request frame into (header, body): the body starts after the header,
/// whose length depends on the header version.
pub fn split_request(
    frame: &Bytes,
    meta: &RequestMeta,
) -> Result<(kafka_protocol::messages::RequestHeader, Bytes), FrameError> {
    let mut buf = frame.clone();
    let header = super::guard::decode(&mut buf, meta.request_header_version(), "request header")?;
    Ok((header, buf))
}

/// Split a response frame into (header, body) for the given response header version.
pub fn split_response(
    frame: &Bytes,
    header_version: i16,
) -> Result<(ResponseHeader, Bytes), FrameError> {
    let mut buf = frame.clone();
    let header = super::guard::decode(&mut buf, header_version, "response header")?;
    Ok((header, buf))
}

/// Encode a response frame body (header + message, no length prefix).
pub fn encode_response<M: Encodable>(
    correlation_id: i32,
    header_version: i16,
    message: &M,
    version: i16,
) -> Result<Bytes, FrameError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut out = BytesMut::new();
    header
        .encode(&mut out, header_version)
        .map_err(|source| FrameError::Malformed {
            what: "response header (encode)",
            source,
        })?;
    message
        .encode(&mut out, version)
        .map_err(|source| FrameError::Malformed {
            what: "response body (encode)",
            source,
        })?;
    Ok(out.freeze())
}

/// Encode an answer the sidecar makes itself to the request `meta` (at its
/// version, with its correlation id).
pub fn encode_local_response(
    meta: &RequestMeta,
    body: &kafka_protocol::messages::ResponseKind,
) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(meta.correlation_id)
        .encode(&mut out, meta.response_header_version())
        .map_err(|source| FrameError::Malformed {
            what: "local response header (encode)",
            source,
        })?;
    body.encode(&mut out, meta.api_version)
        .map_err(|source| FrameError::Malformed {
            what: "local response (encode)",
            source,
        })?;
    Ok(out.freeze())
}

/// Encode a request frame body (header + message, no length prefix).
pub fn encode_request<M: Encodable>(
    header: &kafka_protocol::messages::RequestHeader,
    header_version: i16,
    message: &M,
    version: i16,
) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::new();
    header
        .encode(&mut out, header_version)
        .map_err(|source| FrameError::Malformed {
            what: "request header (encode)",
            source,
        })?;
    message
        .encode(&mut out, version)
        .map_err(|source| FrameError::Malformed {
            what: "request body (encode)",
            source,
        })?;
    Ok(out.freeze())
}

/// Decode a message body at a version (guarded: see [`super::guard`]).
pub fn decode_body<M: Decodable>(
    mut body: Bytes,
    version: i16,
    what: &'static str,
) -> Result<M, FrameError> {
    super::guard::decode(&mut body, version, what)
}

/// Write a frame with its length prefix into a buffer (used by tests and local answers).
pub fn put_frame(out: &mut BytesMut, frame: &[u8]) -> Result<(), FrameError> {
    out.put_slice(&length_prefix(frame.len())?);
    out.put_slice(frame);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, RequestHeader};

    fn request_frame(key: ApiKey, version: i16, corr: i32, client: &str) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(client.to_string().into()));
        let hv = key.request_header_version(version);
        encode_request(&header, hv, &MetadataRequest::default(), version).unwrap()
    }

    #[test]
    fn decoder_yields_whole_frames_and_waits_for_partial_ones() {
        let a = request_frame(ApiKey::Metadata, 12, 7, "app");
        let b = request_frame(ApiKey::Metadata, 1, 8, "app");
        let mut wire = BytesMut::new();
        put_frame(&mut wire, &a).unwrap();
        put_frame(&mut wire, &b).unwrap();
        let mut partial = wire.split_to(wire.len() - 3);
        let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME);
        assert_eq!(codec.decode(&mut partial).unwrap().unwrap(), a);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        partial.unsplit(wire);
        assert_eq!(codec.decode(&mut partial).unwrap().unwrap(), b);
        assert!(partial.is_empty());
    }

    #[test]
    fn a_length_prefix_alone_does_not_reserve_the_frame_it_announces() {
        let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME);
        let mut wire = BytesMut::from(&[0x05u8, 0xff, 0xff, 0xff][..]);
        assert!(codec.decode(&mut wire).unwrap().is_none());
        assert!(
            wire.capacity() <= 2 * RESERVE_AHEAD,
            "reserved {} bytes for a frame that has not arrived",
            wire.capacity()
        );
    }

    #[test]
    fn decoder_refuses_frames_over_the_cap_and_negative_lengths() {
        let mut codec = FrameCodec::new(16);
        let mut wire = BytesMut::from(&[0u8, 0, 0, 17][..]);
        assert!(matches!(
            codec.decode(&mut wire),
            Err(FrameError::TooLarge { size: 17, cap: 16 })
        ));
        let mut wire = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut wire),
            Err(FrameError::NegativeLength(-1))
        ));
    }

    #[test]
    fn header_peek_reads_key_version_correlation_and_client_id() {
        for version in [0, 8, 9, 12] {
            let frame = request_frame(ApiKey::Metadata, version, 42, "billing");
            let meta = RequestMeta::peek(&frame).unwrap();
            assert_eq!(
                meta,
                RequestMeta {
                    api_key: ApiKey::Metadata,
                    api_version: version,
                    correlation_id: 42
                }
            );
            assert_eq!(peek_client_id(&frame), Some("billing"));
            let (header, body) = split_request(&frame, &meta).unwrap();
            assert_eq!(header.correlation_id, 42);
            let decoded: Result<MetadataRequest, _> = decode_body(body, version, "metadata");
            assert!(
                decoded.is_ok(),
                "body after the header decodes at v{version}"
            );
        }
    }

    #[test]
    fn unknown_api_keys_are_a_clean_error() {
        let mut frame = request_frame(ApiKey::Metadata, 1, 1, "x").to_vec();
        frame[0] = 0x7f;
        assert!(matches!(
            RequestMeta::peek(&frame),
            Err(FrameError::UnknownApiKey(_))
        ));
        assert!(matches!(
            RequestMeta::peek(&frame[..5]),
            Err(FrameError::ShortHeader(5))
        ));
    }

    #[test]
    fn flexible_versions_use_header_v2_and_v1_but_api_versions_answers_with_v0() {
        let flexible = RequestMeta {
            api_key: ApiKey::Metadata,
            api_version: 12,
            correlation_id: 0,
        };
        assert_eq!(
            (
                flexible.request_header_version(),
                flexible.response_header_version()
            ),
            (2, 1)
        );
        let legacy = RequestMeta {
            api_key: ApiKey::Metadata,
            api_version: 8,
            correlation_id: 0,
        };
        assert_eq!(
            (
                legacy.request_header_version(),
                legacy.response_header_version()
            ),
            (1, 0)
        );
        let av = RequestMeta {
            api_key: ApiKey::ApiVersions,
            api_version: 3,
            correlation_id: 0,
        };
        assert_eq!(
            (av.request_header_version(), av.response_header_version()),
            (2, 0)
        );
    }
}
