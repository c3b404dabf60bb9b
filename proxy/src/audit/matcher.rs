//! `audit match`: prove that the ranges a trail records are the bytes the
//! broker holds — fetch each recorded topic/partition/offset range again and
//! compare its digest with the partition digest in the record
//! ([`crate::audit::digest`]: base offset and leader epoch left out, so a
//! batch digests alike as produced and as fetched).
//!
//! Pure core ([`select_range`], [`Verdict`]) and one IO edge ([`fetch_range`]).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::digest::PartitionDigest;
use super::replay::Access;
use crate::datapath::upstream::{UpstreamConfig, UpstreamError, exchange};
use crate::kafka::record_batch::batches;

/// Fetch v11: topics by name and no tagged fields (some brokers send tags a
/// flexible version does not define), supported from Kafka 2.3 to 4.x.
const FETCH_VERSION: i16 = 11;
const METADATA_VERSION: i16 = 9;
/// Per fetch: enough for several batches, bounded so a huge range is read in steps.
const PARTITION_MAX_BYTES: i32 = 8 * 1024 * 1024;
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// What matching one recorded range found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result")]
pub enum Verdict {
    /// The broker's batches over the range digest to the recorded value.
    Match,
    /// They do not: the broker's data differs from what was disclosed or written.
    Mismatch { recorded: String, broker: String },
    /// The broker no longer has (all of) the range: retention or compaction.
    Unavailable { why: String },
    /// The record holds no partition digest to compare (payload `None`, a
    /// record from before partition digests, or no offsets).
    NoDigest,
}

impl Verdict {
    /// Whether this verdict disproves the trail.
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Mismatch { .. })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Match => "MATCH",
            Verdict::Mismatch { .. } => "MISMATCH",
            Verdict::Unavailable { .. } => "UNAVAILABLE",
            Verdict::NoDigest => "NO-DIGEST",
        }
    }
}

/// The complete batches of one fetched partition that lie within
/// `first..=last`, and the offset to fetch next (past the last batch seen).
pub fn select_range(records: &[u8], first: i64, last: i64) -> (Vec<&[u8]>, Option<i64>) {
    let mut inside = Vec::new();
    let mut next = None;
    for (header, batch) in batches(records) {
        let base = header.base_offset();
        let end = base + i64::from(header.last_offset_delta().max(0));
        if base >= first && end <= last {
            inside.push(batch);
        }
        next = Some(end + 1);
    }
    (inside, next)
}

/// The verdict for one access, given the broker's batches over its range
/// (`None`: the broker no longer has them).
pub fn judge(access: &Access, broker: Result<Vec<u8>, String>) -> Verdict {
    let Some(recorded) = access.digest.clone() else {
        return Verdict::NoDigest;
    };
    match broker {
        Err(why) => Verdict::Unavailable { why },
        Ok(bytes) => {
            let got = PartitionDigest::of(&bytes).render();
            if got == recorded {
                Verdict::Match
            } else {
                Verdict::Mismatch {
                    recorded,
                    broker: got,
                }
            }
        }
    }
}

/// The partition's leader (`host:port`), from the broker's Metadata.
async fn leader_of(
    upstream: &UpstreamConfig,
    topic: &str,
    partition: i32,
) -> Result<String, UpstreamError> {
    let mut stream = upstream.connect_bootstrap().await?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_owned())),
        ))]));
    let metadata: MetadataResponse = exchange(
        &mut stream,
        ApiKey::Metadata,
        METADATA_VERSION,
        1,
        &request,
        upstream.max_frame,
    )
    .await?;
    let leader = metadata
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == partition)
        .map(|p| p.leader_id)
        .unwrap_or(BrokerId(-1));
    metadata
        .brokers
        .iter()
        .find(|b| b.node_id == leader)
        .map(|b| format!("{}:{}", b.host, b.port))
        .ok_or_else(|| {
            UpstreamError::NoBootstrap(format!("no leader for {topic}[{partition}] in Metadata"))
        })
}

/// Fetch `first..=last` of one partition from its leader: the complete
/// batches inside the range, concatenated (`Err`: the broker no longer has it).
pub async fn fetch_range(
    upstream: &UpstreamConfig,
    topic: &str,
    partition: i32,
    first: i64,
    last: i64,
) -> Result<Result<Vec<u8>, String>, UpstreamError> {
    let leader = leader_of(upstream, topic, partition).await?;
    let mut stream = upstream.connect(&leader).await?;
    let mut out = BytesMut::new();
    let mut offset = first;
    let mut correlation = 1;
    while offset <= last {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(PARTITION_MAX_BYTES)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(PARTITION_MAX_BYTES),
                    ]),
            ]);
        let response: FetchResponse = exchange(
            &mut stream,
            ApiKey::Fetch,
            FETCH_VERSION,
            correlation,
            &request,
            upstream.max_frame,
        )
        .await?;
        correlation += 1;
        let Some(p) = response
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == partition)
        else {
            return Ok(Err("the broker's answer has no such partition".into()));
        };
        match p.error_code {
            0 => {}
            OFFSET_OUT_OF_RANGE => {
                return Ok(Err(format!(
                    "offset {offset} is no longer on the broker (log start {})",
                    p.log_start_offset
                )));
            }
            code => return Ok(Err(format!("the broker answered error code {code}"))),
        }
        let records: Bytes = p.records.clone().unwrap_or_default();
        let (inside, next) = select_range(&records, first, last);
        inside.iter().for_each(|b| out.extend_from_slice(b));
        match next {
            Some(n) if n > offset => offset = n,
            // No complete batch at this offset: the range ends before the log does.
            _ => {
                return Ok(Err(format!(
                    "no complete batch at offset {offset} (the log ends at {})",
                    p.high_watermark
                )));
            }
        }
    }
    Ok(Ok(out.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::record_batch::{LENGTH_AT, MAGIC_AT};

    /// A v2 batch at `base` holding `count` offsets, `len` bytes long.
    fn batch(base: i64, count: i32, fill: u8, len: usize) -> Vec<u8> {
        let mut b = vec![fill; len];
        b[..8].copy_from_slice(&base.to_be_bytes());
        b[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        b[MAGIC_AT] = 2;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b
    }

    fn access(digest: Option<String>, masked: bool) -> Access {
        Access {
            seq: 1,
            time: String::new(),
            api: "Fetch".into(),
            operation: "Read".into(),
            topic: "t".into(),
            partition: Some(0),
            offsets: Some((10, 19)),
            records: 10,
            decision: "Allow".into(),
            reason: None,
            policy: None,
            masked_by: masked.then(|| "mask-ssn".into()),
            payload_digest: None,
            digest,
            delivered: None,
        }
    }

    #[test]
    fn only_batches_inside_the_range_are_taken() {
        let mut log = batch(0, 10, 1, 100);
        log.extend(batch(10, 5, 2, 100));
        log.extend(batch(15, 5, 3, 100));
        log.extend(batch(20, 5, 4, 100));
        log.extend_from_slice(&batch(25, 5, 5, 100)[..40]);
        let (inside, next) = select_range(&log, 10, 19);
        assert_eq!(inside.len(), 2);
        assert_eq!(inside[0][..8], 10i64.to_be_bytes());
        assert_eq!(next, Some(25), "past the last complete batch");
    }

    #[test]
    fn the_same_batches_match_and_an_edited_one_does_not() {
        let produced: Vec<u8> = [batch(0, 5, 7, 90), batch(5, 5, 8, 90)].concat();
        let recorded = PartitionDigest::of(&produced).render();
        let fetched: Vec<u8> = [batch(10, 5, 7, 90), batch(15, 5, 8, 90)].concat();
        assert_eq!(
            judge(&access(Some(recorded.clone()), false), Ok(fetched.clone())),
            Verdict::Match
        );
        let mut edited = fetched;
        edited[150] ^= 0x20;
        let verdict = judge(&access(Some(recorded), false), Ok(edited));
        assert!(verdict.is_failure(), "{verdict:?}");
    }

    #[test]
    fn gone_and_undigested_ranges_are_said_so_not_failed() {
        let gone = judge(
            &access(Some("blake3:x".into()), false),
            Err("retention".into()),
        );
        assert_eq!(gone.label(), "UNAVAILABLE");
        assert!(!gone.is_failure());
        // A masked read is judged by its digest of the broker's bytes.
        let broker = batch(10, 5, 7, 90);
        let recorded = PartitionDigest::of(&broker).render();
        assert_eq!(
            judge(&access(Some(recorded), true), Ok(broker)),
            Verdict::Match
        );
        assert_eq!(judge(&access(None, false), Ok(vec![])), Verdict::NoDigest);
    }
}
