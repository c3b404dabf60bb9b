//! Payload digests: what a record says about the bytes of a Produce or Fetch
//! without holding them.
//!
//! Two levels, computed in one pass over the bytes:
//! - **per partition** (`ResourceAccess.digest`): the complete record batches of
//!   that partition, each *normalised* — its `baseOffset` and
//!   `partitionLeaderEpoch` left out, because the broker assigns them (a Produce
//!   sends base offset 0; a later Fetch of the same batch carries the real one).
//!   The same batch therefore has the same digest written and read, which is
//!   what `audit match` relies on when it fetches a recorded range again;
//! - **per request** (`payloadDigest`): the partition digests in order plus any
//!   trailing bytes that are not a complete batch (a Fetch cut at `max_bytes`),
//!   so every byte that reached the client or the broker is covered.
//!
//! BLAKE3, not SHA-256: the digest runs over every byte of audited traffic, and
//! on the sidecar's CPU budget SHA-256 (even with SHA-NI, ~1.7 GB/s here) cost
//! more than the rest of the data path; BLAKE3 is a cryptographic hash at
//! several times that speed. The prefix names the algorithm, so a record is
//! self-describing (`blake3:<hex>`); the chain itself stays SHA-256.

use crate::kafka::record_batch::{LENGTH_AT, MAGIC_AT, batches};

/// The prefix of every payload digest.
pub const ALGORITHM: &str = "blake3";

/// `blake3:<hex>` of a byte string (a whole frame, a `Full` payload).
pub fn of_bytes(bytes: &[u8]) -> String {
    render(blake3::hash(bytes))
}

fn render(hash: blake3::Hash) -> String {
    format!("{ALGORITHM}:{}", hash.to_hex())
}

/// One partition's bytes, digested: the normalised complete batches, and how
/// many bytes after them were not a complete batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionDigest {
    hash: blake3::Hash,
    tail: usize,
}

impl PartitionDigest {
    /// Digest the complete batches of one partition's `records` field.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = blake3::Hasher::new();
        let mut walk = batches(bytes);
        for (_, batch) in walk.by_ref() {
            // batchLength frames the batch; magic..end is its content (the
            // CRC covers attributes..end). baseOffset and the leader epoch
            // are the broker's, not the producer's.
            h.update(&batch[LENGTH_AT..LENGTH_AT + 4]);
            h.update(&batch[MAGIC_AT..]);
        }
        Self {
            hash: h.finalize(),
            tail: walk.rest().len(),
        }
    }

    /// `blake3:<hex>` (what `ResourceAccess.digest` holds).
    pub fn render(&self) -> String {
        render(self.hash)
    }
}

/// The request-level digest over its partitions, in request/response order.
#[derive(Debug, Default)]
pub struct PayloadDigest(blake3::Hasher);

impl PayloadDigest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one partition: its digest, then the bytes its digest left out.
    pub fn add(&mut self, partition: &PartitionDigest, bytes: &[u8]) {
        self.0.update(partition.hash.as_bytes());
        let tail = &bytes[bytes.len() - partition.tail..];
        self.0.update(&(tail.len() as u64).to_le_bytes());
        self.0.update(tail);
    }

    pub fn finish(self) -> String {
        render(self.0.finalize())
    }
}

/// A request's digests: over everything, and per partition (in order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub request: String,
    pub partitions: Vec<String>,
}

impl Digests {
    /// One pass over each partition's bytes.
    pub fn of(parts: &[impl AsRef<[u8]>]) -> Self {
        Self::of_with_originals(parts, &[])
    }

    /// The request digest over what was delivered; each partition's digest
    /// over the broker's bytes where masking rewrote them (`originals[i]`),
    /// else over the same bytes — one more pass only for masked partitions.
    pub fn of_with_originals(
        parts: &[impl AsRef<[u8]>],
        originals: &[Option<bytes::Bytes>],
    ) -> Self {
        let mut request = PayloadDigest::new();
        let partitions = parts
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let delivered = PartitionDigest::of(bytes.as_ref());
                request.add(&delivered, bytes.as_ref());
                match originals.get(i).and_then(Option::as_ref) {
                    Some(broker) => PartitionDigest::of(broker).render(),
                    None => delivered.render(),
                }
            })
            .collect();
        Self {
            request: request.finish(),
            partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 batch of `len` total bytes with the given base offset and epoch.
    fn batch(base: i64, epoch: i32, body: u8, len: usize) -> Vec<u8> {
        let mut b = vec![body; len];
        b[..8].copy_from_slice(&base.to_be_bytes());
        b[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        b[12..16].copy_from_slice(&epoch.to_be_bytes());
        b[MAGIC_AT] = 2;
        b
    }

    #[test]
    fn a_batch_digests_the_same_as_produced_and_as_fetched() {
        let produced = batch(0, -1, 7, 100);
        let fetched = batch(4711, 3, 7, 100);
        assert_eq!(
            PartitionDigest::of(&produced),
            PartitionDigest::of(&fetched)
        );
        // Any change of content changes it.
        let mut edited = fetched.clone();
        edited[80] ^= 1;
        assert_ne!(PartitionDigest::of(&edited), PartitionDigest::of(&fetched));
    }

    #[test]
    fn batch_boundaries_are_part_of_the_digest() {
        let one = batch(0, 0, 1, 200);
        let mut two = batch(0, 0, 1, 100);
        two.extend(batch(5, 0, 1, 100));
        assert_ne!(PartitionDigest::of(&one), PartitionDigest::of(&two));
    }

    #[test]
    fn a_trailing_partial_batch_is_left_to_the_request_digest() {
        let whole = batch(10, 0, 9, 120);
        let mut cut = whole.clone();
        cut.extend_from_slice(&batch(20, 0, 9, 120)[..70]);
        let (a, b) = (PartitionDigest::of(&whole), PartitionDigest::of(&cut));
        assert_eq!(
            a.render(),
            b.render(),
            "the partition digest covers complete batches"
        );
        assert_eq!(b.tail, 70);
        let request = |p: &PartitionDigest, bytes: &[u8]| {
            let mut d = PayloadDigest::new();
            d.add(p, bytes);
            d.finish()
        };
        assert_ne!(
            request(&a, &whole),
            request(&b, &cut),
            "the request digest covers every byte"
        );
        assert!(request(&a, &whole).starts_with("blake3:"));
    }

    #[test]
    fn garbage_is_all_tail() {
        let d = PartitionDigest::of(b"not a batch");
        assert_eq!(d.tail, 11);
        assert_eq!(
            d.render(),
            PartitionDigest::of(b"").render(),
            "no complete batch either way"
        );
    }
}
