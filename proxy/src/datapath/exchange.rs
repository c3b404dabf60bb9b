//! A request or a response on its way through the pipeline: the frame as it
//! arrived, its body decoded at most once (only when a stage asks for it) and
//! encoded at most once (only when a stage changed it). A frame no stage
//! touched is forwarded as the original bytes.

use crate::kafka::codec::{FrameError, RequestMeta, split_request, split_response};
use crate::kafka::guard;
use crate::kafka::wire::decode_fetch_lenient;
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// Fetch v12-15 responses are flexible; some brokers (tansu 0.6) put v16's
/// `node_endpoints` tag into them, which kafka-protocol refuses.
const LENIENT_FETCH: std::ops::Range<i16> = 12..16;

/// One client request.
#[derive(Debug)]
pub struct Request {
    meta: RequestMeta,
    frame: Bytes,
    decoded: Option<(RequestHeader, RequestKind)>,
    changed: bool,
}

impl Request {
    /// `meta` is the frame's peeked header.
    pub fn new(meta: RequestMeta, frame: Bytes) -> Self {
        Self {
            meta,
            frame,
            decoded: None,
            changed: false,
        }
    }

    pub fn meta(&self) -> &RequestMeta {
        &self.meta
    }

    /// The client's bytes (what the broker gets unless a stage changes the body).
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The body, decoded on first use. A stage that changes it says so with
    /// [`Request::changed`].
    pub fn body(&mut self) -> Result<&mut RequestKind, FrameError> {
        let decoded = match self.decoded.take() {
            Some(decoded) => decoded,
            None => {
                let (header, mut body) = split_request(&self.frame, &self.meta)?;
                let kind = guard::request(self.meta.api_key, &mut body, self.meta.api_version)?;
                (header, kind)
            }
        };
        Ok(&mut self.decoded.insert(decoded).1)
    }

    /// Whether the body is already decoded.
    pub fn is_decoded(&self) -> bool {
        self.decoded.is_some()
    }

    /// The body was changed: [`Request::into_frame`] encodes it.
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// The frame for the broker: the original bytes, or the body encoded once.
    pub fn into_frame(self) -> Result<Bytes, FrameError> {
        let (true, Some((header, body))) = (self.changed, self.decoded) else {
            return Ok(self.frame);
        };
        let malformed = |source| FrameError::Malformed {
            what: "request (encode)",
            source,
        };
        let mut out = BytesMut::new();
        header
            .encode(&mut out, self.meta.request_header_version())
            .map_err(malformed)?;
        body.encode(&mut out, self.meta.api_version)
            .map_err(malformed)?;
        Ok(out.freeze())
    }
}

/// The broker's answer to one forwarded request.
#[derive(Debug)]
pub struct Response {
    meta: RequestMeta,
    frame: Bytes,
    decoded: Option<(ResponseHeader, ResponseKind)>,
    /// The layout the body was read in (ApiVersions' UNSUPPORTED_VERSION
    /// answer is v0 whatever was asked).
    body_version: i16,
    changed: bool,
    lenient: bool,
    withheld: Option<&'static str>,
}

impl Response {
    pub fn new(meta: RequestMeta, frame: Bytes) -> Self {
        let body_version = meta.api_version;
        Self {
            meta,
            frame,
            decoded: None,
            body_version,
            changed: false,
            lenient: false,
            withheld: None,
        }
    }

    /// This response must not reach the client, and it cannot be taken apart
    /// to withhold only part of it: the connection closes instead.
    pub fn withhold(&mut self, why: &'static str) {
        self.withheld = Some(why);
    }

    /// The request this answers.
    pub fn meta(&self) -> &RequestMeta {
        &self.meta
    }

    /// The broker's bytes (what the client gets unless a stage changes the body).
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The body, decoded on first use. A stage that changes it says so with
    /// [`Response::changed`].
    pub fn body(&mut self) -> Result<&mut ResponseKind, FrameError> {
        let decoded = match self.decoded.take() {
            Some(decoded) => decoded,
            None => self.decode()?,
        };
        Ok(&mut self.decoded.insert(decoded).1)
    }

    /// Whether the body is already decoded (no stage pays for decoding it again).
    pub fn is_decoded(&self) -> bool {
        self.decoded.is_some()
    }

    /// The body was changed: [`Response::into_frame`] encodes it.
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// Whether the body was read without tags its version does not define;
    /// forwarding the original then hands the client a nonconforming frame.
    pub fn was_lenient(&self) -> bool {
        self.lenient
    }

    /// The frame for the client: the original bytes, or the body encoded once.
    pub fn into_frame(self) -> Result<Bytes, FrameError> {
        if let Some(why) = self.withheld {
            return Err(FrameError::Withheld(why));
        }
        if let Some(why) = self.withheld {
            return Err(FrameError::Withheld(why));
        }
        let (true, Some((header, body))) = (self.changed, self.decoded) else {
            return Ok(self.frame);
        };
        let malformed = |source| FrameError::Malformed {
            what: "response (encode)",
            source,
        };
        let mut out = BytesMut::new();
        header
            .encode(&mut out, self.meta.response_header_version())
            .map_err(malformed)?;
        body.encode(&mut out, self.body_version)
            .map_err(malformed)?;
        Ok(out.freeze())
    }

    fn decode(&mut self) -> Result<(ResponseHeader, ResponseKind), FrameError> {
        let meta = &self.meta;
        let (header, body) = split_response(&self.frame, meta.response_header_version())?;
        if meta.api_key == ApiKey::ApiVersions && error_code(&body) == unsupported_version() {
            // A broker that does not know the requested version answers in
            // the v0 layout; error_code is the first field in every version.
            self.body_version = 0;
        }
        match guard::response(meta.api_key, &mut body.clone(), self.body_version) {
            Ok(kind) => Ok((header, kind)),
            Err(error)
                if meta.api_key == ApiKey::Fetch && LENIENT_FETCH.contains(&meta.api_version) =>
            {
                tracing::debug!(%error, version = meta.api_version, "Fetch response carries a foreign tag; decoded without it");
                let fetch = decode_fetch_lenient(body, meta.api_version)?;
                self.lenient = true;
                Ok((header, ResponseKind::Fetch(fetch)))
            }
            Err(error) => Err(error),
        }
    }
}

fn error_code(body: &Bytes) -> i16 {
    body.get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

fn unsupported_version() -> i16 {
    ResponseError::UnsupportedVersion.code()
}
