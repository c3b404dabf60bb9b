//! Record-batch compression codecs. Every decompression is capped (checked
//! while reading, before memory is spent): at the caller's limit — the
//! masking budget, `--masking-max-batch-bytes` — and never above
//! [`MAX_DECOMPRESSED`].
//!
//! - gzip: flate2, written at level 1 (fast); reading accepts concatenated
//!   gzip members, like Java;
//! - snappy: reads both Kafka's xerial framing and raw snappy (what some
//!   producers send), writes the xerial framing that the Java client and
//!   librdkafka read;
//! - lz4: the LZ4 frame format of Kafka ≥ 0.10 (magic v1+), independent blocks;
//! - zstd: a standard zstd frame.
//!
//! lz4, zstd and gzip are read with the `lz4`/`zstd`/`flate2` crates directly
//! (the same crates kafka-protocol uses) so the size cap applies while
//! reading. They are written directly too: kafka-protocol compresses lz4
//! at level 4 (the slow HC mode), gzip at level 6 and streams zstd with a
//! fresh context per batch, which made them 3–5× slower than the rest of
//! the rewrite in benches/masking.rs; here lz4 uses its fast mode (what
//! librdkafka uses by default), gzip level 1, zstd level 3 with one
//! context per thread.
use std::cell::RefCell;
use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

use kafka_protocol::compression::{Compressor, Decompressor, Snappy};

/// The largest records section a batch may decompress to, whatever limit a
/// caller asks for.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// How much is read from a decompressor at a time: the output grows by at
/// most this much past what it holds, so a batch never costs much more than
/// its limit (`read_to_end` doubles its buffer and could reach twice it).
const READ_CHUNK: usize = 64 << 10;

/// Why a records section cannot be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The section would decompress past the limit (a compression bomb, or a
    /// batch larger than the masking budget): nothing past the limit was
    /// allocated.
    #[error("decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// The compressed bytes are malformed.
    #[error("{0}")]
    Failed(String),
}

/// Reads all of `r`, refusing more than `limit` bytes; the buffer is grown
/// in steps of at most [`READ_CHUNK`] past its contents, never past `limit + 1`.
fn read_capped(r: &mut dyn Read, hint: usize, limit: usize) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(hint.min(limit));
    let mut chunk = vec![0u8; READ_CHUNK.min(limit + 1)];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CodecError::Failed(e.to_string())),
        };
        if out.len() + n > limit {
            return Err(CodecError::TooLarge { limit });
        }
        if out.capacity() - out.len() < n {
            // Double while small, but never reserve past the limit.
            let want = out.capacity().max(READ_CHUNK).min(limit - out.len());
            out.reserve_exact(want.max(n));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Bytes::from(out))
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// The decompressed size a snappy section announces (xerial blocks summed,
/// or the raw snappy header), read before anything is allocated.
fn snappy_len(data: &[u8]) -> Result<usize, String> {
    if !data.starts_with(XERIAL_MAGIC) {
        return snap::raw::decompress_len(data).map_err(|e| e.to_string());
    }
    let mut pos = XERIAL_HEADER_LEN;
    let mut total = 0usize;
    while pos < data.len() {
        let len_bytes = data
            .get(pos..pos + 4)
            .ok_or("truncated xerial block length")?;
        let len =
            u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let block = data
            .get(pos + 4..pos + 4 + len)
            .ok_or("truncated xerial block")?;
        total = total.saturating_add(snap::raw::decompress_len(block).map_err(|e| e.to_string())?);
        pos += 4 + len;
    }
    Ok(total)
}

/// zstd's default level (also librdkafka's and the Java client's default).
const ZSTD_LEVEL: i32 = 3;

thread_local! {
    /// One zstd context per thread: creating one (and zeroing its tables)
    /// per batch cost more than compressing a 100 KiB batch.
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_compress(data: &[u8]) -> Result<Bytes, String> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| e.to_string())?);
        }
        match slot.as_mut() {
            Some(c) => c.compress(data).map(Bytes::from).map_err(|e| e.to_string()),
            None => Err("no zstd context".into()),
        }
    })
}

/// gzip at level 1: the masked batch is re-sent once over loopback, where
/// compression speed matters more than the last few percent of size.
fn gzip_compress(data: &[u8]) -> Result<Bytes, String> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data).map_err(|e| e.to_string())?;
    enc.finish().map(Bytes::from).map_err(|e| e.to_string())
}

fn lz4_frame(data: &[u8]) -> Result<Bytes, String> {
    let mut enc = lz4::EncoderBuilder::new()
        .level(0)
        .block_mode(lz4::BlockMode::Independent)
        .build(Vec::with_capacity(data.len() / 2 + 64))
        .map_err(|e| e.to_string())?;
    enc.write_all(data).map_err(|e| e.to_string())?;
    let (out, res) = enc.finish();
    res.map_err(|e| e.to_string())?;
    Ok(Bytes::from(out))
}

/// A batch codec (attributes bits 0–2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec in batch `attributes`; `Err(id)` for an unknown one.
    pub fn from_attributes(attributes: i16) -> Result<Self, u8> {
        match attributes & 0x07 {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            other => Err(other as u8),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// Decompresses a batch's records section, refusing more than
    /// [`MAX_DECOMPRESSED`] bytes (a compression bomb must not exhaust the
    /// sidecar's memory).
    pub fn decompress(self, data: Bytes) -> Result<Bytes, CodecError> {
        self.decompress_limited(data, MAX_DECOMPRESSED)
    }

    /// [`Codec::decompress`] with an explicit limit (capped at
    /// [`MAX_DECOMPRESSED`]). An uncompressed section is returned as is: its
    /// size is the caller's to check.
    pub fn decompress_limited(self, data: Bytes, limit: usize) -> Result<Bytes, CodecError> {
        let limit = limit.min(MAX_DECOMPRESSED);
        let failed = |e: std::io::Error| CodecError::Failed(e.to_string());
        let hint = data.len().saturating_mul(4);
        match self {
            Self::None => Ok(data),
            Self::Gzip => read_capped(
                &mut flate2::read::MultiGzDecoder::new(&data[..]),
                hint,
                limit,
            ),
            Self::Lz4 => read_capped(
                &mut lz4::Decoder::new(&data[..]).map_err(failed)?,
                hint,
                limit,
            ),
            Self::Zstd => read_capped(
                &mut zstd::stream::read::Decoder::new(&data[..]).map_err(failed)?,
                hint,
                limit,
            ),
            Self::Snappy => {
                if snappy_len(&data).map_err(CodecError::Failed)? > limit {
                    return Err(CodecError::TooLarge { limit });
                }
                Self::decompress_snappy(data)
            }
        }
    }

    /// Snappy through kafka-protocol (it reads both xerial and raw framing).
    fn decompress_snappy(mut data: Bytes) -> Result<Bytes, CodecError> {
        Snappy::decompress(&mut data, |b: &mut Bytes| Ok(std::mem::take(b)))
            .map_err(|e| CodecError::Failed(format!("{e:#}")))
    }

    /// Compresses a records section.
    pub fn compress(self, data: &[u8]) -> Result<Bytes, String> {
        match self {
            Self::None => Ok(Bytes::copy_from_slice(data)),
            Self::Gzip => gzip_compress(data),
            Self::Snappy => {
                let mut out = BytesMut::with_capacity(data.len() / 2 + 64);
                Snappy::compress(&mut out, |b: &mut BytesMut| {
                    b.put_slice(data);
                    Ok(())
                })
                .map_err(|e| format!("{e:#}"))?;
                Ok(out.freeze())
            }
            Self::Lz4 => lz4_frame(data),
            Self::Zstd => zstd_compress(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let z = c.compress(&data).unwrap();
            assert_eq!(c.decompress(z).unwrap(), data, "{}", c.name());
        }
    }

    #[test]
    fn snappy_reads_raw_and_writes_xerial() {
        let data = b"hello hello hello hello hello snappy".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(Codec::Snappy.decompress(Bytes::from(raw)).unwrap(), data);
        let written = Codec::Snappy.compress(&data).unwrap();
        assert!(written.starts_with(b"\x82SNAPPY\x00"), "xerial header");
    }

    #[test]
    fn compression_bombs_are_refused() {
        let zeros = vec![0u8; 1 << 20];
        for c in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let z = c.compress(&zeros).unwrap();
            assert!(z.len() < zeros.len() / 10, "{}", c.name());
            let e = c.decompress_limited(z.clone(), 64 << 10).unwrap_err();
            assert!(
                matches!(e, CodecError::TooLarge { limit } if limit == 64 << 10),
                "{}: {e}",
                c.name()
            );
            assert_eq!(
                c.decompress_limited(z.clone(), 1 << 20).unwrap().len(),
                zeros.len()
            );
            // One byte short of the size is refused too.
            assert!(matches!(
                c.decompress_limited(z, (1 << 20) - 1),
                Err(CodecError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for c in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            assert!(
                c.decompress(Bytes::from_static(b"not compressed at all"))
                    .is_err(),
                "{}",
                c.name()
            );
        }
        assert_eq!(Codec::from_attributes(0x15), Err(5));
        assert_eq!(Codec::from_attributes(0x0b), Ok(Codec::Lz4));
    }
}
