//! Every codec path of the record-batch rewriter (`masking::codec`), with
//! fuzzed data behind a valid compression layer.
//!
//! Input: `[codec, mode, payload...]`; `codec % 5` picks none, gzip, snappy,
//! lz4 or zstd.
//!
//! - Always: `payload` decompressed as it is (garbage and bombs in every
//!   codec), and `compress` → `decompress` round-trips `payload`.
//! - `mode` bit 0 = 0: `payload` split at `\n` into record values, encoded
//!   by kafka-protocol's RecordBatchEncoder with the codec, then masked.
//!   Checked: a batch a real producer writes is never refused, and the
//!   masked batch decodes with the same records (keys, headers, offsets).
//! - `mode` bit 0 = 1: `payload` is the raw records section, compressed with
//!   the codec and wrapped in a batch header (record count `mode >> 1`,
//!   valid CRC), then masked: the record parser behind each decompressor.
#![no_main]
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use libfuzzer_sys::fuzz_target;
use streamgate_fuzz::{COMPRESSIONS, fix_crcs, plans, record_batch};
use streamgate_proxy::kafka::record_batch::{ATTRIBUTES_AT, COUNT_AT, HEADER_LEN, LENGTH_AT};
use streamgate_proxy::masking::codec::Codec;
use streamgate_proxy::masking::{Trailing, mask_records};

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Gzip,
    Codec::Snappy,
    Codec::Lz4,
    Codec::Zstd,
];

/// Records as the client library sees them (what must survive masking).
fn shape(records: &Bytes) -> Vec<(i64, Option<Bytes>, usize)> {
    let mut b = records.clone();
    RecordBatchDecoder::decode_all(&mut b)
        .expect("masked batch decodes")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| (r.offset, r.key, r.headers.len()))
        .collect()
}

fn producer_batch(compression: Compression, payload: &[u8]) {
    let values: Vec<&[u8]> = payload.split(|b| *b == b'\n').collect();
    let batch = record_batch(&values, compression);
    for plan in plans() {
        let (out, _) = match mask_records(plan, &batch, Trailing::Reject) {
            Ok(r) => r,
            Err(e) => panic!("a well-formed {compression:?} batch was refused: {e}"),
        };
        if out != batch {
            assert_eq!(shape(&out), shape(&batch), "masking keeps every record");
        }
    }
}

fn raw_section(codec: Codec, mode: u8, payload: &[u8]) {
    let Ok(section) = codec.compress(payload) else {
        return;
    };
    let mut batch = BytesMut::zeroed(HEADER_LEN);
    batch[16] = 2; // magic
    let attributes = codec_id(codec);
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[COUNT_AT..COUNT_AT + 4].copy_from_slice(&i32::from(mode >> 1).to_be_bytes());
    batch.extend_from_slice(&section);
    let len = (batch.len() - LENGTH_AT - 4) as i32;
    batch[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
    let batch = Bytes::from(fix_crcs(&batch).unwrap_or_else(|| batch.to_vec()));
    for plan in plans() {
        if let Ok((out, _)) = mask_records(plan, &batch, Trailing::Drop) {
            if out != batch {
                if let Err(e) = mask_records(plan, &out, Trailing::Reject) {
                    panic!("masked {} batch is not well-formed: {e}", codec.name());
                }
            }
        }
    }
}

fn codec_id(codec: Codec) -> i16 {
    CODECS.iter().position(|c| *c == codec).unwrap_or(0) as i16
}

fuzz_target!(|data: &[u8]| {
    let [which, mode, payload @ ..] = data else {
        return;
    };
    let i = usize::from(*which) % CODECS.len();
    let codec = CODECS[i];
    // Garbage (or a bomb) straight into the decompressor.
    let _ = codec.decompress(Bytes::copy_from_slice(payload));
    match codec.compress(payload) {
        Ok(z) => match codec.decompress(z) {
            Ok(back) => assert_eq!(&back[..], payload, "{} round trip", codec.name()),
            Err(e) => panic!("{} cannot read what it wrote: {e}", codec.name()),
        },
        Err(e) => panic!("{} cannot compress: {e}", codec.name()),
    }
    if mode & 1 == 0 {
        producer_batch(COMPRESSIONS[i], payload);
    } else {
        raw_section(codec, *mode, payload);
    }
});
