//! Record-batch rewriting: the `records` bytes of a Fetch response partition
//! (or a Produce request partition) in, the same batches out with only the
//! record values masked — and the keys and header values where a rule
//! targets them (`targets: [Key, Headers]`; header names are kept).
//!
//! Kept exactly as received: every header field of each RecordBatch v2 —
//! base offset, partition leader epoch, magic, attributes (codec, timestamp
//! type incl. LogAppendTime, transactional, control), lastOffsetDelta (also
//! when compaction left gaps), first/max timestamps, producer id/epoch, base
//! sequence, record count — and each record's attributes, timestamp and
//! offset deltas, key and headers (byte for byte, duplicate keys included,
//! unless targeted).
//! Recomputed: the batch length, the CRC32C, each record's length varint.
//! Values are recompressed with the batch's own codec.
//!
//! Batches passed through untouched: control batches, and batches in which
//! masking changed nothing (byte-identical, no recompression).
//!
//! Never passed through unmasked: a truncated trailing batch (Fetch responses
//! may end with one) is dropped; a batch with a bad CRC, an unknown codec,
//! a malformed record, the legacy v0/v1 message format, or records larger
//! than the plan's budget ([`MaskPlan::max_batch_bytes`], checked while
//! decompressing) is an error.
use bytes::{Bytes, BytesMut};

use super::codec::{Codec, CodecError};
use super::plan::{MaskCounts, MaskPlan};
use streamgate_crds::MaskTarget;

/// Length of a RecordBatch v2 header (through the record count).
pub use crate::kafka::record_batch::HEADER_LEN;
use crate::kafka::record_batch::{
    ATTRIBUTES_AT, CONTROL_BIT, COUNT_AT, CRC_AT, LENGTH_AT, MAGIC_AT, be_i32, be_i64,
};

/// What to do with a trailing batch that is cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trailing {
    /// Fetch responses: the broker may cut the last batch; drop it (the
    /// client fetches it again from its offset).
    Drop,
    /// Produce requests: a cut batch is malformed; refuse it.
    Reject,
}

/// Why a record set cannot be masked. The caller must not forward the
/// original bytes: it answers the partition with an error instead.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("record set truncated at byte {at}")]
    Truncated { at: usize },
    #[error("batch at base offset {base_offset} is corrupt: {reason}")]
    Corrupt {
        base_offset: i64,
        reason: &'static str,
    },
    #[error("batch at base offset {base_offset} fails its CRC32C check")]
    Crc { base_offset: i64 },
    #[error("message format v{magic} (before Kafka 0.11) cannot be masked")]
    LegacyFormat { magic: i8 },
    #[error("batch at base offset {base_offset} uses unknown codec {codec}")]
    UnknownCodec { base_offset: i64, codec: u8 },
    #[error("batch at base offset {base_offset}: {codec} failed: {reason}")]
    Codec {
        base_offset: i64,
        codec: &'static str,
        reason: String,
    },
    /// The batch's records are larger than the masking budget
    /// (`--masking-max-batch-bytes`) once decompressed: refused, not masked.
    #[error(
        "batch at base offset {base_offset} holds more than {limit} bytes of records \
         ({codec}; the masking budget, --masking-max-batch-bytes)"
    )]
    TooLarge {
        base_offset: i64,
        codec: &'static str,
        limit: usize,
    },
}

/// Masks a Fetch response partition's `records`: truncated trailing batch dropped.
pub fn mask_record_set(plan: &MaskPlan, records: &Bytes) -> Result<(Bytes, MaskCounts), MaskError> {
    mask_records(plan, records, Trailing::Drop)
}

/// Masks a Produce request partition's `records`: a truncated batch is an error.
pub fn mask_produce_records(
    plan: &MaskPlan,
    records: &Bytes,
) -> Result<(Bytes, MaskCounts), MaskError> {
    mask_records(plan, records, Trailing::Reject)
}

/// Masks every batch of `records`. Returns the input itself (no copy) when
/// nothing changed.
pub fn mask_records(
    plan: &MaskPlan,
    records: &Bytes,
    trailing: Trailing,
) -> Result<(Bytes, MaskCounts), MaskError> {
    mask_records_seen(
        Some(plan),
        plan.max_batch_bytes(),
        records,
        trailing,
        &mut |_| {},
    )
}

/// Each record value as the broker holds it (before masking; `None` for a
/// null value), for the patient scan: called once per record of every data
/// batch that is passed on, in the same decompression as the masking.
pub type SeenValue<'s> = &'s mut dyn FnMut(Option<&[u8]>);

/// [`mask_records`], showing every record value to `seen` first. Without a
/// plan nothing is masked (the input comes back as is): the records are
/// only walked, under the budget `limit`.
pub fn mask_records_seen(
    plan: Option<&MaskPlan>,
    limit: usize,
    records: &Bytes,
    trailing: Trailing,
    seen: SeenValue<'_>,
) -> Result<(Bytes, MaskCounts), MaskError> {
    let mut counts = MaskCounts::default();
    let buf = &records[..];
    let mut out: Option<BytesMut> = None;
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let cut = rest.len() < LENGTH_AT + 4 || {
            let len = be_i32(rest, LENGTH_AT);
            len >= 0 && rest.len() < LENGTH_AT + 4 + len as usize
        };
        if cut {
            match trailing {
                Trailing::Reject => return Err(MaskError::Truncated { at: pos }),
                Trailing::Drop => {
                    // Dropping changes the output: materialise what came before.
                    if out.is_none() {
                        out = Some(BytesMut::from(&buf[..pos]));
                    }
                    break;
                }
            }
        }
        let base_offset = be_i64(rest, 0);
        let len = be_i32(rest, LENGTH_AT);
        if len < (MAGIC_AT + 1 - LENGTH_AT - 4) as i32 {
            return Err(MaskError::Corrupt {
                base_offset,
                reason: "batch length too small",
            });
        }
        let total = LENGTH_AT + 4 + len as usize;
        let batch = &rest[..total];
        let magic = batch[MAGIC_AT] as i8;
        if magic != 2 {
            if magic == 0 || magic == 1 {
                return Err(MaskError::LegacyFormat { magic });
            }
            return Err(MaskError::Corrupt {
                base_offset,
                reason: "unknown magic byte",
            });
        }
        let masked = mask_batch(
            plan,
            limit,
            records.slice(pos..pos + total),
            base_offset,
            &mut counts,
            seen,
        )?;
        match (masked, &mut out) {
            (Some(new), Some(o)) => o.extend_from_slice(&new),
            (Some(new), None) => {
                let mut o = BytesMut::with_capacity(buf.len() + 64);
                o.extend_from_slice(&buf[..pos]);
                o.extend_from_slice(&new);
                out = Some(o);
            }
            (None, Some(o)) => o.extend_from_slice(batch),
            (None, None) => {}
        }
        pos += total;
    }
    match out {
        Some(o) => Ok((o.freeze(), counts)),
        None => Ok((records.clone(), counts)),
    }
}

/// Masks one complete v2 batch; `None` when it passes unchanged.
fn mask_batch(
    plan: Option<&MaskPlan>,
    limit: usize,
    batch: Bytes,
    base_offset: i64,
    counts: &mut MaskCounts,
    seen: SeenValue<'_>,
) -> Result<Option<Vec<u8>>, MaskError> {
    let corrupt = |reason| MaskError::Corrupt {
        base_offset,
        reason,
    };
    if batch.len() < HEADER_LEN {
        return Err(corrupt("batch shorter than its header"));
    }
    let stored_crc = u32::from_be_bytes([
        batch[CRC_AT],
        batch[CRC_AT + 1],
        batch[CRC_AT + 2],
        batch[CRC_AT + 3],
    ]);
    if crc32c::crc32c(&batch[ATTRIBUTES_AT..]) != stored_crc {
        return Err(MaskError::Crc { base_offset });
    }
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
    if attributes & CONTROL_BIT != 0 {
        return Ok(None);
    }
    let codec = Codec::from_attributes(attributes)
        .map_err(|codec| MaskError::UnknownCodec { base_offset, codec })?;
    let count = be_i32(&batch, COUNT_AT);
    if count < 0 {
        return Err(corrupt("negative record count"));
    }
    let codec_err = |reason| MaskError::Codec {
        base_offset,
        codec: codec.name(),
        reason,
    };
    let too_large = MaskError::TooLarge {
        base_offset,
        codec: codec.name(),
        limit,
    };
    // An uncompressed batch is held to the same budget: masking copies it.
    if codec == Codec::None && batch.len() - HEADER_LEN > limit {
        return Err(too_large);
    }
    let section = match codec.decompress_limited(batch.slice(HEADER_LEN..), limit) {
        Ok(section) => section,
        Err(CodecError::TooLarge { .. }) => return Err(too_large),
        Err(CodecError::Failed(reason)) => return Err(codec_err(reason)),
    };
    let Some(new_section) =
        mask_records_section(plan, &section, count as usize, counts, seen).map_err(corrupt)?
    else {
        return Ok(None);
    };
    let compressed = codec.compress(&new_section).map_err(codec_err)?;
    let mut out = Vec::with_capacity(HEADER_LEN + compressed.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&compressed);
    let new_len =
        i32::try_from(out.len() - LENGTH_AT - 4).map_err(|_| corrupt("masked batch too large"))?;
    out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&new_len.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(out))
}

/// How many compressed bytes count as one byte of work in [`estimated_work`]:
/// the true ratio is unknown until decompressed (and an attacker picks it),
/// so a compressed batch is assumed to expand this much, up to the budget.
const ASSUMED_EXPANSION: usize = 32;

/// About how many bytes masking `records` will decompress and rewrite, from
/// the batch headers only (no decompression): an uncompressed batch counts
/// its size, a compressed one [`ASSUMED_EXPANSION`] times its size, each at
/// most `limit` (the budget: no batch is worked past it). Used to decide
/// whether masking may run on an async worker or goes to the blocking pool.
pub fn estimated_work(records: &[u8], limit: usize) -> usize {
    let mut work = 0usize;
    let mut at = 0usize;
    while let Some(rest) = records.get(at..).filter(|r| r.len() >= HEADER_LEN) {
        let Ok(len) = usize::try_from(be_i32(rest, LENGTH_AT)) else {
            break;
        };
        let total = (LENGTH_AT + 4).saturating_add(len);
        let attributes = i16::from_be_bytes([rest[ATTRIBUTES_AT], rest[ATTRIBUTES_AT + 1]]);
        let size = total.min(rest.len());
        let expanded = match Codec::from_attributes(attributes) {
            Ok(Codec::None) => size,
            _ => size.saturating_mul(ASSUMED_EXPANSION),
        };
        work = work.saturating_add(expanded.min(limit));
        at = at.saturating_add(total);
    }
    work
}

/// Rewrites the (uncompressed) records section; `None` when nothing changed.
fn mask_records_section(
    plan: Option<&MaskPlan>,
    data: &[u8],
    count: usize,
    counts: &mut MaskCounts,
    seen: SeenValue<'_>,
) -> Result<Option<Vec<u8>>, &'static str> {
    let mut pos = 0;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // data[..copied] is already in `out`
    for _ in 0..count {
        let rec_start = pos;
        let len = read_varint(data, &mut pos)?;
        let body_start = pos;
        let body_end = usize::try_from(len)
            .ok()
            .and_then(|l| body_start.checked_add(l))
            .filter(|&e| e <= data.len())
            .ok_or("record length out of bounds")?;
        let body = &data[body_start..body_end];
        if let Some(new_body) = mask_record(plan, body, counts, seen)? {
            let o = out.get_or_insert_with(|| Vec::with_capacity(data.len() + 64));
            o.extend_from_slice(&data[copied..rec_start]);
            write_varint(o, new_body.len() as i64);
            o.extend_from_slice(&new_body);
            copied = body_end;
        }
        pos = body_end;
    }
    if pos != data.len() {
        return Err("bytes after the last record");
    }
    Ok(out.map(|mut o| {
        o.extend_from_slice(&data[copied..]);
        o
    }))
}

/// One record body (after its length): the value, and the key and header
/// values where the plan targets them, masked; the whole record validated
/// so a malformed one is never forwarded. `None` when nothing changed.
fn mask_record(
    plan: Option<&MaskPlan>,
    body: &[u8],
    counts: &mut MaskCounts,
    seen: SeenValue<'_>,
) -> Result<Option<Vec<u8>>, &'static str> {
    let masks = |t| plan.is_some_and(|p| p.masks(t));
    let (keys, headers) = (masks(MaskTarget::Key), masks(MaskTarget::Headers));
    // (field start incl. its length varint, field end, masked bytes)
    let mut splices: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut examined = false;
    let mut p = 1; // attributes
    read_varint(body, &mut p)?; // timestamp delta
    read_varint(body, &mut p)?; // offset delta
    let mut part = |target, at: usize, range: Option<(usize, usize)>, counts: &mut MaskCounts| {
        let (Some((from, to)), Some(plan)) = (range, plan) else {
            return; // null: nothing to hide (or nothing to mask with)
        };
        examined = true;
        if let Some(masked) = plan.mask_part(target, &body[from..to], counts) {
            splices.push((at, to, masked));
        }
    };
    let key_at = p;
    let key = read_field(body, &mut p)?;
    if keys {
        part(MaskTarget::Key, key_at, key, counts);
    }
    let value_at = p;
    let value = read_field(body, &mut p)?;
    let value_seen = value.map(|(from, to)| &body[from..to]);
    part(MaskTarget::Value, value_at, value, counts);
    let n = read_varint(body, &mut p)?;
    if n < 0 {
        return Err("negative header count");
    }
    for _ in 0..n {
        if read_field(body, &mut p)?.is_none() {
            return Err("null header key");
        }
        let header_at = p;
        let header = read_field(body, &mut p)?;
        if headers {
            part(MaskTarget::Headers, header_at, header, counts);
        }
    }
    if p != body.len() {
        return Err("bytes after the record headers");
    }
    // Only a whole, valid record is shown: a malformed one fails the batch.
    seen(value_seen);
    counts.records += u64::from(examined);
    if splices.is_empty() {
        return Ok(None);
    }
    counts.masked_records += 1;
    let grown: usize = splices.iter().map(|(_, _, m)| m.len() + 10).sum();
    let mut new_body = Vec::with_capacity(body.len() + grown);
    let mut from = 0;
    for (at, to, masked) in splices {
        new_body.extend_from_slice(&body[from..at]);
        write_varint(&mut new_body, masked.len() as i64);
        new_body.extend_from_slice(&masked);
        from = to;
    }
    new_body.extend_from_slice(&body[from..]);
    Ok(Some(new_body))
}

/// A varint-length-prefixed bytes field at `p` (moved past it): the byte
/// range of its data, `None` for null (length -1).
fn read_field(b: &[u8], p: &mut usize) -> Result<Option<(usize, usize)>, &'static str> {
    let len = read_varint(b, p)?;
    if len < 0 {
        return Ok(None);
    }
    let start = *p;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .filter(|&e| e <= b.len())
        .ok_or("field out of bounds")?;
    *p = end;
    Ok(Some((start, end)))
}

/// A zig-zag varint (Kafka's varint and varlong share the encoding).
pub fn read_varint(b: &[u8], p: &mut usize) -> Result<i64, &'static str> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*p).ok_or("varint out of bounds")?;
        *p += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
        if shift == 63 {
            break;
        }
    }
    Err("varint too long")
}

pub fn write_varint(out: &mut Vec<u8>, v: i64) {
    let mut raw = ((v << 1) ^ (v >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut b = Vec::new();
            write_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(read_varint(&b, &mut p), Ok(v));
            assert_eq!(p, b.len());
        }
        assert!(read_varint(&[0x80, 0x80], &mut 0).is_err());
        assert!(read_varint(&[0xff; 11], &mut 0).is_err());
    }
}
