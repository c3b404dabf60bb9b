//! The RecordBatch v2 header, read in place: every offset named once.
//!
//! ```text
//! baseOffset i64 @0 | batchLength i32 @8 | partitionLeaderEpoch i32 @12 | magic i8 @16
//! crc u32 @17 (CRC32C over attributes..end) | attributes i16 @21 | lastOffsetDelta i32 @23
//! baseTimestamp i64 @27 | maxTimestamp i64 @35 | producerId i64 @43 | producerEpoch i16 @51
//! baseSequence i32 @53 | recordsCount i32 @57 | records @61
//! ```

/// Bytes before the records.
pub const HEADER_LEN: usize = 61;
/// `batchLength` counts from here: the base offset and the length field precede it.
pub const LENGTH_AT: usize = 8;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
/// The CRC covers the batch from the attributes to its end.
pub const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
pub const COUNT_AT: usize = 57;
/// Attributes bit of transaction markers (no user records).
pub const CONTROL_BIT: i16 = 0x20;

pub fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

pub fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// A view of one batch header (at least [`HEADER_LEN`] bytes long).
#[derive(Clone, Copy, Debug)]
pub struct Header<'a>(&'a [u8]);

impl<'a> Header<'a> {
    /// The header at the start of `bytes`, if a whole header is there.
    pub fn at(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() >= HEADER_LEN).then_some(Self(bytes))
    }

    pub fn base_offset(self) -> i64 {
        be_i64(self.0, 0)
    }

    /// The whole batch's size (header included), or `None` for a negative length.
    pub fn total_len(self) -> Option<usize> {
        usize::try_from(be_i32(self.0, LENGTH_AT))
            .ok()
            .map(|n| n + LENGTH_AT + 4)
    }

    pub fn magic(self) -> i8 {
        self.0[MAGIC_AT] as i8
    }

    pub fn attributes(self) -> i16 {
        be_i16(self.0, ATTRIBUTES_AT)
    }

    pub fn is_control(self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }

    pub fn last_offset_delta(self) -> i32 {
        be_i32(self.0, LAST_OFFSET_DELTA_AT)
    }

    pub fn records_count(self) -> i32 {
        be_i32(self.0, COUNT_AT)
    }
}

/// The complete batches at the start of a partition's `records` field, in
/// order, each with its header; [`Batches::rest`] is what follows them (a
/// batch a broker cut at `max_bytes`, or bytes that are not a batch).
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// Walk the complete batches of `bytes`.
pub fn batches(bytes: &[u8]) -> Batches<'_> {
    Batches { bytes, at: 0 }
}

impl<'a> Batches<'a> {
    /// The bytes after the complete batches walked so far.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = (Header<'a>, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest();
        let header = Header::at(rest)?;
        let total = header.total_len()?;
        if rest.len() < total || total < HEADER_LEN {
            return None;
        }
        self.at += total;
        Some((header, &rest[..total]))
    }
}
