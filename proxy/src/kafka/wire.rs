//! Wire primitives read by hand where kafka-protocol cannot be used: peeking
//! past a field without decoding a message, and the one lenient Fetch decoder.

use super::codec::FrameError;
use bytes::{Buf, Bytes};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::protocol::buf::ByteBuf;

/// An unsigned varint (compact lengths, tag counts and sizes).
pub fn read_unsigned_varint(buf: &mut Bytes) -> Result<u32, String> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = buf.try_get_bytes(1).map_err(|e| e.to_string())?[0];
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 5 bytes".into())
}

/// Read a Kafka (nullable) string field and skip it; used to peek past
/// `transactional_id` without decoding a whole Produce request.
pub fn skip_nullable_string(buf: &mut Bytes, flexible: bool) -> Result<(), FrameError> {
    let malformed = |e: &dyn std::fmt::Display| FrameError::Malformed {
        what: "string field",
        source: anyhow::anyhow!("{e}"),
    };
    let len: usize = if flexible {
        let n = read_unsigned_varint(buf).map_err(|e| malformed(&e))?;
        n.saturating_sub(1) as usize
    } else {
        let n = buf.try_get_bytes(2).map_err(|e| malformed(&e))?;
        let n = i16::from_be_bytes([n[0], n[1]]);
        usize::try_from(n).unwrap_or(0)
    };
    buf.try_get_bytes(len).map_err(|e| malformed(&e))?;
    Ok(())
}

/// Decode a flexible (v12+) Fetch response whose top-level tagged section
/// holds tags its version does not define (tansu 0.6 sends v16's
/// `node_endpoints`, tag 0, at v12-15, which kafka-protocol refuses). The
/// fixed fields and the topics are decoded at `version` by kafka-protocol;
/// the trailing tagged section is then read by hand and its unknown tags
/// dropped (they are not defined for the client's version, and
/// node_endpoints would name brokers past the gate).
pub fn decode_fetch_lenient(mut body: Bytes, version: i16) -> Result<FetchResponse, FrameError> {
    let malformed = |e: &dyn std::fmt::Display| FrameError::Malformed {
        what: "Fetch response (lenient)",
        source: anyhow::anyhow!("{e}"),
    };
    let mut fixed = body.try_get_bytes(10).map_err(|e| malformed(&e))?;
    let throttle_time_ms = fixed.get_i32();
    let error_code = fixed.get_i16();
    let session_id = fixed.get_i32();
    // Compact array: length + 1 (0 = null).
    let count = read_unsigned_varint(&mut body).map_err(|e| malformed(&e))?;
    let mut responses = Vec::new();
    for _ in 1..count {
        responses.push(super::guard::decode::<FetchableTopicResponse>(
            &mut body,
            version,
            "Fetch response topic",
        )?);
    }
    let tags = read_unsigned_varint(&mut body).map_err(|e| malformed(&e))?;
    for _ in 0..tags {
        let tag = read_unsigned_varint(&mut body).map_err(|e| malformed(&e))?;
        let size = read_unsigned_varint(&mut body).map_err(|e| malformed(&e))?;
        body.try_get_bytes(size as usize)
            .map_err(|e| malformed(&e))?;
        tracing::debug!(
            tag,
            size,
            version,
            "dropped a top-level tag the Fetch version does not define"
        );
    }
    if !body.is_empty() {
        return Err(malformed(&format!(
            "{} bytes after the tagged fields",
            body.len()
        )));
    }
    Ok(FetchResponse::default()
        .with_throttle_time_ms(throttle_time_ms)
        .with_error_code(error_code)
        .with_session_id(session_id)
        .with_responses(responses))
}
