//! Guarded decoding: no length read from the wire reaches an allocation
//! unchecked.
//!
//! kafka-protocol reserves `Vec::with_capacity(n)` with an array count `n`
//! taken from the wire before reading a single element (and `vec![0; n]` for
//! non-flexible bytes). A 14-byte Metadata request whose topic count is
//! `0x7fffffff` asks the allocator for hundreds of gigabytes; the allocation
//! fails and Rust aborts the process: every connection of the sidecar dies,
//! not just the attacker's.
//!
//! The guard does not need the message schemas. Every message is first
//! decoded through [`GuardedBuf`], which sees each primitive read:
//!
//! - an `int32` larger than both the bytes left and [`FLOOR`] is handed to
//!   the decoder as `-2`. Used as an array or bytes length that is a clean
//!   "negative length" error before any allocation (and such a length could
//!   never have been satisfied by the bytes left: every element takes at
//!   least one byte). Used as a plain field (a timeout, a session id) it only
//!   changes the value, not how many bytes are read, so this pass still
//!   parses the frame exactly as the real decode will.
//! - an unsigned varint (a run of byte reads with the continuation bit)
//!   larger than both the bytes left and [`FLOOR`] fails the decode. In
//!   message bodies varints are only lengths, tag counts, tag numbers and tag
//!   sizes, none of which can exceed the bytes left in a well-formed frame.
//!
//! So the guarded pass succeeds exactly when the real decode succeeds with
//! every length bounded by the frame. When no `int32` had to be replaced the
//! guarded result *is* the real one (one decode); otherwise the frame is
//! decoded once more, unguarded, which is now known to be safe. Counts below
//! [`FLOOR`] are let through: reserving that many elements is harmless and
//! the element reads fail on their own.

use super::codec::FrameError;
use bytes::{Buf, Bytes, TryGetError};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::protocol::buf::ByteBuf;

/// Lengths up to this many elements are never questioned: reserving them
/// costs at most a few hundred MiB of address space that is never touched.
pub const FLOOR: u64 = 1 << 20;

/// A varint is at most five bytes (u32).
const MAX_VARINT_BYTES: u32 = 5;

/// A `Bytes` reader that keeps wire lengths from reaching allocations.
#[derive(Debug)]
pub struct GuardedBuf {
    inner: Bytes,
    /// Off for the second pass over a frame the guarded pass accepted.
    guarding: bool,
    /// An int32 was replaced: the guarded result is not the real one.
    altered: bool,
    /// Why the guard failed the decode, when it did.
    refused: Option<String>,
    /// The varint being read: its bytes so far and their value.
    run_len: u32,
    run_value: u64,
}

impl GuardedBuf {
    pub fn new(inner: Bytes) -> Self {
        Self {
            inner,
            guarding: true,
            altered: false,
            refused: None,
            run_len: 0,
            run_value: 0,
        }
    }

    fn limit(&self) -> u64 {
        (self.inner.remaining() as u64 + 1).max(FLOOR)
    }

    fn end_run(&mut self) {
        self.run_len = 0;
        self.run_value = 0;
    }
}

impl Buf for GuardedBuf {
    fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.inner.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        // Every read other than a single byte ends a varint.
        self.end_run();
        self.inner.advance(cnt);
    }

    fn try_get_u8(&mut self) -> Result<u8, TryGetError> {
        let byte = self.inner.try_get_u8()?;
        if !self.guarding {
            return Ok(byte);
        }
        self.run_value |= u64::from(byte & 0x7f) << (7 * self.run_len);
        if byte & 0x80 != 0 && self.run_len + 1 < MAX_VARINT_BYTES {
            self.run_len += 1;
            return Ok(byte);
        }
        let value = self.run_value;
        self.end_run();
        if value > self.limit() {
            self.refused = Some(format!(
                "a length of {value} with {} bytes left in the frame",
                self.inner.remaining()
            ));
            return Err(TryGetError {
                requested: usize::try_from(value).unwrap_or(usize::MAX),
                available: self.inner.remaining(),
            });
        }
        Ok(byte)
    }

    fn try_get_i32(&mut self) -> Result<i32, TryGetError> {
        self.end_run();
        let value = self.inner.try_get_i32()?;
        if let Ok(wide) = u64::try_from(value)
            && self.guarding
            && wide > self.limit()
        {
            self.altered = true;
            return Ok(-2);
        }
        Ok(value)
    }
}

impl ByteBuf for GuardedBuf {
    fn peek_bytes(&mut self, r: std::ops::Range<usize>) -> Bytes {
        self.inner.slice(r)
    }

    fn get_bytes(&mut self, size: usize) -> Bytes {
        self.end_run();
        self.inner.split_to(size)
    }
}

fn malformed(what: &'static str, guard: &GuardedBuf, source: anyhow::Error) -> FrameError {
    let source = match &guard.refused {
        Some(why) => anyhow::anyhow!("{why}"),
        None => source,
    };
    FrameError::Malformed { what, source }
}

/// Decode one `M` from the front of `buf`, advancing it past what was read.
pub fn decode<M: Decodable>(
    buf: &mut Bytes,
    version: i16,
    what: &'static str,
) -> Result<M, FrameError> {
    decode_with(buf, what, |b| M::decode(b, version))
}

/// Decode with `f` (a kafka-protocol decoder), guarded as the module says.
pub fn decode_with<M>(
    buf: &mut Bytes,
    what: &'static str,
    f: impl Fn(&mut GuardedBuf) -> anyhow::Result<M>,
) -> Result<M, FrameError> {
    let mut guarded = GuardedBuf::new(buf.clone());
    let checked = f(&mut guarded).map_err(|e| malformed(what, &guarded, e))?;
    if !guarded.altered {
        *buf = guarded.inner;
        return Ok(checked);
    }
    // Safe now: every length in the frame is bounded by it.
    let mut real = GuardedBuf {
        guarding: false,
        ..GuardedBuf::new(buf.clone())
    };
    let exact = f(&mut real).map_err(|e| malformed(what, &real, e))?;
    *buf = real.inner;
    Ok(exact)
}

macro_rules! every_api {
    ($($api:ident),* $(,)?) => {
        /// A request body, decoded with the guard.
        pub fn request(api_key: ApiKey, body: &mut Bytes, version: i16) -> Result<RequestKind, FrameError> {
            const WHAT: &str = "request body";
            Ok(match api_key {
                $(ApiKey::$api => RequestKind::$api(decode(body, version, WHAT)?),)*
            })
        }

        /// A response body, decoded with the guard.
        pub fn response(api_key: ApiKey, body: &mut Bytes, version: i16) -> Result<ResponseKind, FrameError> {
            const WHAT: &str = "response body";
            Ok(match api_key {
                $(ApiKey::$api => ResponseKind::$api(decode(body, version, WHAT)?),)*
            })
        }
    };
}

every_api!(
    Produce,
    Fetch,
    ListOffsets,
    Metadata,
    OffsetCommit,
    OffsetFetch,
    FindCoordinator,
    JoinGroup,
    Heartbeat,
    LeaveGroup,
    SyncGroup,
    DescribeGroups,
    ListGroups,
    SaslHandshake,
    ApiVersions,
    CreateTopics,
    DeleteTopics,
    DeleteRecords,
    InitProducerId,
    OffsetForLeaderEpoch,
    AddPartitionsToTxn,
    AddOffsetsToTxn,
    EndTxn,
    WriteTxnMarkers,
    TxnOffsetCommit,
    DescribeAcls,
    CreateAcls,
    DeleteAcls,
    DescribeConfigs,
    AlterConfigs,
    AlterReplicaLogDirs,
    DescribeLogDirs,
    SaslAuthenticate,
    CreatePartitions,
    CreateDelegationToken,
    RenewDelegationToken,
    ExpireDelegationToken,
    DescribeDelegationToken,
    DeleteGroups,
    ElectLeaders,
    IncrementalAlterConfigs,
    AlterPartitionReassignments,
    ListPartitionReassignments,
    OffsetDelete,
    DescribeClientQuotas,
    AlterClientQuotas,
    DescribeUserScramCredentials,
    AlterUserScramCredentials,
    Vote,
    BeginQuorumEpoch,
    EndQuorumEpoch,
    DescribeQuorum,
    AlterPartition,
    UpdateFeatures,
    Envelope,
    FetchSnapshot,
    DescribeCluster,
    DescribeProducers,
    BrokerRegistration,
    BrokerHeartbeat,
    UnregisterBroker,
    DescribeTransactions,
    ListTransactions,
    AllocateProducerIds,
    ConsumerGroupHeartbeat,
    ConsumerGroupDescribe,
    ControllerRegistration,
    GetTelemetrySubscriptions,
    PushTelemetry,
    AssignReplicasToDirs,
    ListConfigResources,
    DescribeTopicPartitions,
    ShareGroupHeartbeat,
    ShareGroupDescribe,
    ShareFetch,
    ShareAcknowledge,
    AddRaftVoter,
    RemoveRaftVoter,
    UpdateRaftVoter,
    InitializeShareGroupState,
    ReadShareGroupState,
    WriteShareGroupState,
    DeleteShareGroupState,
    ReadShareGroupStateSummary,
    DescribeShareGroupOffsets,
    AlterShareGroupOffsets,
    DeleteShareGroupOffsets,
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::kafka::codec::{RequestMeta, encode_request, split_request};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{FetchRequest, MetadataRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn frame<M: kafka_protocol::protocol::Encodable>(key: ApiKey, version: i16, body: &M) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("app")));
        encode_request(&header, key.request_header_version(version), body, version).unwrap()
    }

    fn decode_request(frame: &Bytes) -> Result<RequestKind, FrameError> {
        let meta = RequestMeta::peek(frame)?;
        let (_, mut body) = split_request(frame, &meta)?;
        request(meta.api_key, &mut body, meta.api_version)
    }

    fn plain(frame: &Bytes) -> anyhow::Result<RequestKind> {
        let meta = RequestMeta::peek(frame).unwrap();
        let (_, mut body) = split_request(frame, &meta).unwrap();
        RequestKind::decode(meta.api_key, &mut body, meta.api_version)
    }

    #[test]
    fn the_fourteen_byte_metadata_request_is_an_error_not_an_abort() {
        // Metadata v1, correlation 1, null client id, 0x7fffffff topics.
        let frame = Bytes::from_static(b"\x00\x03\x00\x01\x00\x00\x00\x01\xff\xff\x7f\xff\xff\xff");
        let err = decode_request(&frame).unwrap_err();
        assert!(
            err.to_string().contains("request body"),
            "a clear error: {err}"
        );
    }

    #[test]
    fn a_huge_compact_array_count_is_an_error() {
        let mut frame = frame(ApiKey::Metadata, 12, &MetadataRequest::default()).to_vec();
        // Header v2: key, version, correlation, client id "app", tag count 0.
        let body_at = 2 + 2 + 4 + 2 + 3 + 1;
        frame.truncate(body_at);
        frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let err = decode_request(&Bytes::from(frame)).unwrap_err();
        assert!(err.to_string().contains("request body"), "{err}");
    }

    #[test]
    fn a_huge_bytes_length_is_an_error() {
        // SaslAuthenticate v0: auth_bytes with a length of 2^31-1.
        let mut frame = frame(
            ApiKey::SaslAuthenticate,
            0,
            &kafka_protocol::messages::SaslAuthenticateRequest::default(),
        )
        .to_vec();
        let len = frame.len();
        frame[len - 4..].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(decode_request(&Bytes::from(frame)).is_err());
    }

    #[test]
    fn large_plain_fields_decode_exactly() {
        let fetch = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_max_bytes(52_428_800)
            .with_session_id(0x7fff_fff0)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("patients")))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(i32::MAX),
                    ]),
            ]);
        for version in [7, 11, 12] {
            let frame = frame(ApiKey::Fetch, version, &fetch);
            let RequestKind::Fetch(got) = decode_request(&frame).unwrap() else {
                panic!("not a fetch")
            };
            assert_eq!(got, fetch, "v{version}");
        }
    }

    fn metadata(topics: Vec<String>) -> MetadataRequest {
        MetadataRequest::default().with_topics(Some(
            topics
                .into_iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t))))
                })
                .collect(),
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every frame the guard lets through decodes to what the plain decoder reads.
        #[test]
        fn guarded_and_plain_decoders_agree(
            topics in proptest::collection::vec("[a-z.]{0,300}", 0..8),
            version in 1i16..=12,
        ) {
            let frame = frame(ApiKey::Metadata, version, &metadata(topics));
            let guarded = decode_request(&frame).unwrap();
            prop_assert_eq!(guarded, plain(&frame).unwrap());
        }

        /// Any corruption of a frame is an error or a value, never an abort.
        #[test]
        fn corrupted_frames_never_abort(
            topics in proptest::collection::vec("[a-z]{0,20}", 0..4),
            version in 1i16..=12,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = frame(ApiKey::Metadata, version, &metadata(topics)).to_vec();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                // Keep the header's key and version so the body decoder runs.
                if i >= 4 {
                    bytes[i] = value;
                }
            }
            let _ = decode_request(&Bytes::from(bytes));
        }
    }
}
