//! Record-batch compression codecs, through kafka-protocol's `compression`
//! module (its gzip/snappy/lz4/zstd features are on in the workspace):
//! - gzip: flate2;
//! - snappy: reads both Kafka's xerial framing and raw snappy (what some
//!   producers send), writes the xerial framing that the Java client and
//!   librdkafka read;
//! - lz4: the LZ4 frame format of Kafka ≥ 0.10 (magic v1+), independent blocks;
//! - zstd: a standard zstd frame.
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

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

    /// Decompresses a batch's records section.
    pub fn decompress(self, data: Bytes) -> Result<Bytes, String> {
        let mut data = data;
        let take = |b: &mut Bytes| Ok(std::mem::take(b));
        let res = match self {
            Self::None => return Ok(data),
            Self::Gzip => Gzip::decompress(&mut data, take),
            Self::Snappy => Snappy::decompress(&mut data, take),
            Self::Lz4 => Lz4::decompress(&mut data, take),
            Self::Zstd => Zstd::decompress(&mut data, take),
        };
        res.map_err(|e| format!("{e:#}"))
    }

    /// Compresses a records section.
    pub fn compress(self, data: &[u8]) -> Result<Bytes, String> {
        let mut out = BytesMut::with_capacity(data.len() / 2 + 64);
        let fill = |b: &mut BytesMut| {
            b.put_slice(data);
            Ok(())
        };
        let res = match self {
            Self::None => return Ok(Bytes::copy_from_slice(data)),
            Self::Gzip => Gzip::compress(&mut out, fill),
            Self::Snappy => Snappy::compress(&mut out, fill),
            Self::Lz4 => Lz4::compress(&mut out, fill),
            Self::Zstd => Zstd::compress(&mut out, fill),
        };
        res.map_err(|e| format!("{e:#}"))?;
        Ok(out.freeze())
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
