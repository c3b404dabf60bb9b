//! Fetch: the response is decoded from v11 (where `preferred_read_replica`
//! appears: it is cleared so clients never fetch from a follower behind the
//! gate's back) and carries `node_endpoints` from v16. Record batches are
//! `Bytes` slices of the broker's frame: decoding them copies nothing, and an
//! unchanged response is forwarded as the broker's original bytes.
//!
//! Masking: while a MaskingRule applies to Fetch, every response is decoded
//! (all versions) and the records of covered topics are masked for the
//! connection's principal (names from `topic` before v13, from the topic-id
//! map after); a partition that cannot be masked is answered with its error
//! and no records. tansu 0.6 puts v16's `node_endpoints` tag into v12-15
//! responses (kafka-python fetches at v12): the exchange decodes such a
//! response without the foreign tag (`kafka::wire::decode_fetch_lenient`),
//! and under masking it is re-encoded conforming; one that still does not
//! decode closes the connection — it is never forwarded unmasked.

use super::{Learned, MaskingContext, rewrite_endpoints};
use crate::datapath::addresses::AddressPlan;
use crate::datapath::exchange::Response;
use crate::identity::caller::Caller;
use crate::kafka::codec::FrameError;
use crate::masking::wire::{INLINE_MAX_WORK, fetch_work};
use crate::masking::{Masked, mask_fetch_response};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::{FetchResponse, ResponseKind};
use std::collections::HashMap;
use std::sync::Arc;
use streamgate_crds::ApplyTo;

const PREFERRED_READ_REPLICA_SINCE: i16 = 11;
const NODE_ENDPOINTS_SINCE: i16 = 16;
/// From v13 topics are named by id.
const TOPIC_IDS_SINCE: i16 = 13;

/// `masking`: the caller and the rules in force (exemptions follow the caller).
pub async fn on_response(
    plan: &AddressPlan,
    response: &mut Response,
    masking: Option<(&Caller, &MaskingContext<'_>)>,
) -> Result<Learned, FrameError> {
    let masking = masking.filter(|(_, m)| m.applies(ApplyTo::Fetch));
    let version = response.meta().api_version;
    let mut out = Learned::default();
    if masking.is_none() && version < PREFERRED_READ_REPLICA_SINCE {
        return Ok(out);
    }
    let fetched = match response.body() {
        Ok(ResponseKind::Fetch(fetched)) => fetched,
        Ok(_) => return Ok(out),
        // Without masking, clients at v12-15 ignore a foreign tag, so a
        // response that does not decode even leniently is forwarded as the
        // broker sent it. With masking in force it is never forwarded (it may
        // carry PHI): the connection closes with the reason.
        Err(error) if masking.is_none() && version < NODE_ENDPOINTS_SINCE => {
            tracing::debug!(%error, version, "Fetch response not decodable; forwarded as is");
            return Ok(out);
        }
        Err(error) => return Err(error),
    };
    let mut changed = rewrite(plan, fetched, &mut out);
    if let Some((caller, ctx)) = masking {
        let masked = mask(caller, ctx, version >= TOPIC_IDS_SINCE, fetched).await?;
        for f in &masked.failures {
            // The error is about the record layout; it never quotes values.
            tracing::warn!(topic = ?f.topic, partition = f.partition, error_code = f.error_code, error = ?f.error.as_ref().map(ToString::to_string), "partition not maskable: answered with an error, no records");
        }
        // A response decoded leniently is re-encoded conforming to the
        // client's version: masked bytes never go out in a layout it refuses.
        changed |= masked.changed || response.was_lenient();
        out.masking = masked.topics;
    }
    if changed {
        response.changed();
    }
    Ok(out)
}

/// Mask `fetched` in place, except the topics the caller reads in clear
/// under break-glass (`ctx.clear`), which are set aside and put back where
/// they were.
async fn mask(
    caller: &Caller,
    ctx: &MaskingContext<'_>,
    by_id: bool,
    fetched: &mut FetchResponse,
) -> Result<Masked, FrameError> {
    let Some(clear) = ctx.clear else {
        return mask_all(caller, ctx, by_id, fetched).await;
    };
    let name_of = |t: &FetchableTopicResponse| {
        if by_id {
            (ctx.topic_name)(&t.topic_id)
        } else {
            Some(t.topic.0.to_string())
        }
    };
    let mut in_clear = Vec::new();
    let mut rest = Vec::new();
    for (i, t) in std::mem::take(&mut fetched.responses)
        .into_iter()
        .enumerate()
    {
        if name_of(&t).is_some_and(|n| clear(&n)) {
            in_clear.push((i, t));
        } else {
            rest.push(t);
        }
    }
    fetched.responses = rest;
    let masked = mask_all(caller, ctx, by_id, fetched).await;
    for (i, t) in in_clear {
        let at = i.min(fetched.responses.len());
        fetched.responses.insert(at, t);
    }
    masked
}

/// Mask `fetched` in place: on this worker when the work is small, else on
/// the blocking pool (decompressing and rewriting megabytes would stall
/// every connection sharing the worker). The topic names are looked up
/// first: the blocking task cannot borrow the topic-id map.
async fn mask_all(
    caller: &Caller,
    ctx: &MaskingContext<'_>,
    by_id: bool,
    fetched: &mut FetchResponse,
) -> Result<Masked, FrameError> {
    let principal = caller.masking_subject();
    let ids: HashMap<uuid::Uuid, String> = if by_id {
        fetched
            .responses
            .iter()
            .filter_map(|t| (ctx.topic_name)(&t.topic_id).map(|n| (t.topic_id, n)))
            .collect()
    } else {
        HashMap::new()
    };
    let name = move |t: &FetchableTopicResponse| {
        if by_id {
            ids.get(&t.topic_id).cloned()
        } else {
            Some(t.topic.0.to_string())
        }
    };
    if fetch_work(&ctx.set, &principal, fetched, &name) <= INLINE_MAX_WORK {
        return Ok(mask_fetch_response(&ctx.set, &principal, fetched, name));
    }
    let set = Arc::clone(&ctx.set);
    let mut body = std::mem::take(fetched);
    let (body, masked) = tokio::task::spawn_blocking(move || {
        let masked = mask_fetch_response(&set, &principal, &mut body, name);
        (body, masked)
    })
    .await
    // The response was moved into the task: with it gone (a panic), nothing
    // is forwarded, the connection closes.
    .map_err(|e| FrameError::Malformed {
        what: "Fetch response (masking did not finish)",
        source: anyhow::anyhow!("{e}"),
    })?;
    *fetched = body;
    Ok(masked)
}

/// Clear follower fetching and rewrite endpoints; true when anything changed.
pub fn rewrite(plan: &AddressPlan, response: &mut FetchResponse, out: &mut Learned) -> bool {
    let mut changed = false;
    for partition in response
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        if partition.preferred_read_replica.0 != -1 {
            partition.preferred_read_replica = (-1).into();
            changed = true;
        }
    }
    if !response.node_endpoints.is_empty() {
        rewrite_endpoints(
            plan,
            &mut response.node_endpoints,
            |n| (n.node_id.0, &mut n.host, &mut n.port),
            &mut out.brokers,
        );
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::apis::test_support::*;
    use crate::kafka::codec::RequestMeta;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{
        FetchableTopicResponse, NodeEndpoint, PartitionData,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
    use kafka_protocol::protocol::{Message, StrBytes};

    fn golden(version: i16, preferred: i32) -> FetchResponse {
        let mut topic = FetchableTopicResponse::default().with_partitions(vec![
            PartitionData::default()
                .with_partition_index(2)
                .with_high_watermark(10)
                .with_preferred_read_replica(BrokerId(preferred))
                .with_records(Some(Bytes::from_static(b"opaque-record-batch-bytes"))),
        ]);
        if version >= 13 {
            topic = topic.with_topic_id(uuid::Uuid::from_bytes([9u8; 16]));
        } else {
            topic = topic.with_topic(TopicName(StrBytes::from_static_str("patient-events")));
        }
        let mut r = FetchResponse::default().with_responses(vec![topic]);
        if version >= 16 {
            r = r.with_node_endpoints(vec![
                NodeEndpoint::default()
                    .with_node_id(BrokerId(111))
                    .with_host(StrBytes::from_static_str("tansu.internal"))
                    .with_port(29092),
            ]);
        }
        r
    }

    #[test]
    fn preferred_read_replica_is_cleared_and_endpoints_rewritten_at_every_version() {
        for version in PREFERRED_READ_REPLICA_SINCE..=FetchResponse::VERSIONS.max {
            let meta = meta(ApiKey::Fetch, version);
            let input = golden(version, 3);
            let out = through(&meta, response_frame(&meta, &input), |r| {
                block_on(on_response(&plan(), r, None))
            })
            .unwrap();
            let (corr, got): (i32, FetchResponse) = decode_response(&meta, &out.frame);
            assert_eq!(corr, 99);
            let mut want = input.clone();
            want.responses[0].partitions[0].preferred_read_replica = BrokerId(-1);
            for n in &mut want.node_endpoints {
                n.host = StrBytes::from_static_str("127.0.0.1");
                n.port = 9204;
            }
            assert_eq!(got, want, "v{version}");
        }
    }

    #[test]
    fn a_node_endpoints_tag_before_v16_is_forwarded_as_the_broker_sent_it() {
        // What tansu 0.6 sends at v12: the top-level tag 0 (node_endpoints).
        let meta = meta(ApiKey::Fetch, 12);
        let mut frame = response_frame(&meta, &golden(12, -1)).to_vec();
        assert_eq!(frame.pop(), Some(0), "no top-level tagged fields");
        frame.extend_from_slice(&[1, 0, 1, 1]); // one tag: 0, size 1, empty compact array
        let frame = Bytes::from(frame);
        let out = through(&meta, frame.clone(), |r| {
            block_on(on_response(&plan(), r, None))
        })
        .unwrap();
        assert_eq!(out.frame, frame);
    }

    #[test]
    fn an_unchanged_response_is_forwarded_byte_for_byte() {
        for version in PREFERRED_READ_REPLICA_SINCE..16 {
            let meta = meta(ApiKey::Fetch, version);
            let frame = response_frame(&meta, &golden(version, -1));
            let out = through(&meta, frame.clone(), |r| {
                block_on(on_response(&plan(), r, None))
            })
            .unwrap();
            assert_eq!(out.frame, frame, "v{version}");
        }
    }

    mod masking {
        use super::*;
        use crate::masking::wire::tests::{PHI, batch, set, values};
        use kafka_protocol::records::Compression;
        use std::sync::Arc;
        use streamgate_crds::ApplyTo;

        fn ctx<'a>(
            apply_to: Vec<ApplyTo>,
            names: &'a (dyn Fn(&uuid::Uuid) -> Option<String> + Sync),
        ) -> MaskingContext<'a> {
            MaskingContext {
                set: Arc::new(set(apply_to)),
                topic_name: names,
                clear: None,
            }
        }

        fn with_records(version: i16, records: Bytes) -> FetchResponse {
            let mut r = golden(version, -1);
            r.responses[0].partitions[0].records = Some(records);
            r
        }

        fn fetched(frame: &Bytes, meta: &RequestMeta) -> FetchResponse {
            decode_response::<FetchResponse>(meta, frame).1
        }

        #[test]
        fn records_are_masked_at_every_version_by_name_or_topic_id() {
            let names = |id: &uuid::Uuid| {
                (*id == uuid::Uuid::from_bytes([9u8; 16])).then(|| "patient-events".to_string())
            };
            let ctx = ctx(vec![ApplyTo::Fetch], &names);
            for version in 4..=FetchResponse::VERSIONS.max {
                let meta = meta(ApiKey::Fetch, version);
                assert!(rewrites_response_for(&meta, &ctx), "v{version}");
                let frame = response_frame(
                    &meta,
                    &with_records(version, batch(PHI, Compression::Snappy)),
                );
                let out = through(&meta, frame, |r| {
                    block_on(on_response(&plan(), r, Some((&caller(), &ctx))))
                })
                .unwrap();
                let got = fetched(&out.frame, &meta);
                let records = got.responses[0].partitions[0].records.clone().unwrap();
                assert_eq!(
                    values(&records),
                    vec![r#"{"ssn":"[REDACTED]","ok":1}"#],
                    "v{version}"
                );
                assert_eq!(out.masking.len(), 1, "v{version}: counts reach the audit");
                assert_eq!(out.masking[0].counts.fields.get("$.ssn"), Some(&1));
            }
        }

        /// Whether the stage decodes this version's response under `ctx`.
        fn rewrites_response_for(meta: &RequestMeta, ctx: &MaskingContext<'_>) -> bool {
            let records = with_records(meta.api_version, batch(PHI, Compression::None));
            let mut response = Response::new(meta.clone(), response_frame(meta, &records));
            block_on(on_response(&plan(), &mut response, Some((&caller(), ctx)))).unwrap();
            response.is_decoded()
        }

        #[test]
        fn an_unknown_topic_id_gets_an_error_and_no_records() {
            let names = |_: &uuid::Uuid| None;
            let ctx = ctx(vec![ApplyTo::Fetch], &names);
            let meta = meta(ApiKey::Fetch, 13);
            let frame = response_frame(&meta, &with_records(13, batch(PHI, Compression::None)));
            let out = through(&meta, frame, |r| {
                block_on(on_response(&plan(), r, Some((&caller(), &ctx))))
            })
            .unwrap();
            let got = fetched(&out.frame, &meta);
            let p = &got.responses[0].partitions[0];
            assert_eq!(p.error_code, crate::masking::wire::UNKNOWN_TOPIC_ID);
            assert_eq!(p.records.as_deref(), Some(&[][..]));
        }

        /// tansu 0.6 puts the v16 `node_endpoints` tag into v12-15 responses.
        fn with_foreign_endpoints_tag(version: i16, records: Bytes) -> Bytes {
            let meta16 = meta(ApiKey::Fetch, 16);
            let mut r = with_records(16, records);
            if version < 13 {
                r.responses[0].topic = TopicName(StrBytes::from_static_str("patient-events"));
            }
            // Encoded as v16 (ids, endpoints tag), announced as `version`.
            response_frame(&meta16, &r)
        }

        #[test]
        fn a_v13_to_v15_response_with_the_v16_tag_is_masked_and_made_conforming() {
            let names = |_: &uuid::Uuid| Some("patient-events".to_string());
            let ctx = ctx(vec![ApplyTo::Fetch], &names);
            for version in 13..16 {
                let meta = meta(ApiKey::Fetch, version);
                let frame = with_foreign_endpoints_tag(version, batch(PHI, Compression::Lz4));
                let out = through(&meta, frame, |r| {
                    block_on(on_response(&plan(), r, Some((&caller(), &ctx))))
                })
                .unwrap();
                let got = fetched(&out.frame, &meta);
                assert!(got.node_endpoints.is_empty());
                let records = got.responses[0].partitions[0].records.clone().unwrap();
                assert_eq!(
                    values(&records),
                    vec![r#"{"ssn":"[REDACTED]","ok":1}"#],
                    "v{version}"
                );
            }
        }

        /// A v12 response (topic names) with tansu's v16 tag appended.
        fn v12_with_foreign_tag(records: Bytes) -> Bytes {
            let meta = meta(ApiKey::Fetch, 12);
            let mut r = with_records(12, records);
            r.responses[0].topic = TopicName(StrBytes::from_static_str("patient-events"));
            let mut bytes = response_frame(&meta, &r).to_vec();
            // The last byte is the empty top-level tag section (0 tags):
            // replace it with one tag 0 of 3 bytes.
            assert_eq!(bytes.pop(), Some(0));
            bytes.extend_from_slice(&[1, 0, 3, 1, 2, 3]);
            Bytes::from(bytes)
        }

        #[test]
        fn a_v12_response_with_the_v16_tag_is_masked_and_made_conforming() {
            let names = |_: &uuid::Uuid| None;
            let ctx = ctx(vec![ApplyTo::Fetch], &names);
            let meta = meta(ApiKey::Fetch, 12);
            let frame = v12_with_foreign_tag(batch(PHI, Compression::Gzip));
            let out = through(&meta, frame.clone(), |r| {
                block_on(on_response(&plan(), r, Some((&caller(), &ctx))))
            })
            .unwrap();
            let got = fetched(&out.frame, &meta);
            let records = got.responses[0].partitions[0].records.clone().unwrap();
            assert_eq!(values(&records), vec![r#"{"ssn":"[REDACTED]","ok":1}"#]);
            // Without masking the frame passes as the broker sent it.
            let out = through(&meta, frame.clone(), |r| {
                block_on(on_response(&plan(), r, None))
            })
            .unwrap();
            assert_eq!(out.frame, frame);
        }

        #[test]
        fn a_truncated_response_is_never_forwarded_while_masking() {
            let names = |_: &uuid::Uuid| None;
            let ctx = ctx(vec![ApplyTo::Fetch], &names);
            let meta = meta(ApiKey::Fetch, 12);
            let frame = v12_with_foreign_tag(batch(PHI, Compression::None));
            let cut = frame.slice(..frame.len() - 2);
            assert!(
                through(&meta, cut, |r| block_on(on_response(
                    &plan(),
                    r,
                    Some((&caller(), &ctx))
                )))
                .is_err()
            );
        }

        #[test]
        fn large_records_are_masked_off_the_async_workers_and_bombs_refused() {
            use crate::masking::wire::{CORRUPT_MESSAGE, INLINE_MAX_WORK, tests::bomb};
            let names = |_: &uuid::Uuid| Some("patient-events".to_string());
            let ctx = ctx(vec![ApplyTo::Fetch], &names);
            for version in [12, 13] {
                let meta = meta(ApiKey::Fetch, version);
                // Over the inline threshold, under the budget: masked on the blocking pool.
                let large = bomb(INLINE_MAX_WORK + (64 << 10));
                let frame = response_frame(
                    &meta,
                    &with_records(version, batch(&large, Compression::None)),
                );
                let out = through(&meta, frame, |r| {
                    block_on(on_response(&plan(), r, Some((&caller(), &ctx))))
                })
                .unwrap();
                let got = fetched(&out.frame, &meta);
                let delivered = values(got.responses[0].partitions[0].records.as_ref().unwrap());
                assert!(
                    delivered[0].starts_with(r#"{"ssn":"[REDACTED]","pad":"000"#),
                    "v{version}"
                );
                assert_eq!(out.masking[0].counts.fields.get("$.ssn"), Some(&1));
                // Over the budget: an error and no records.
                let over = bomb(crate::masking::DEFAULT_MAX_BATCH_BYTES + 1);
                let frame = response_frame(
                    &meta,
                    &with_records(version, batch(&over, Compression::Zstd)),
                );
                let out = through(&meta, frame, |r| {
                    block_on(on_response(&plan(), r, Some((&caller(), &ctx))))
                })
                .unwrap();
                let got = fetched(&out.frame, &meta);
                let p = &got.responses[0].partitions[0];
                assert_eq!(p.error_code, CORRUPT_MESSAGE, "v{version}");
                assert_eq!(p.records.as_deref(), Some(&[][..]));
            }
        }

        #[test]
        fn produce_only_rules_leave_fetch_bytes_alone() {
            let names = |_: &uuid::Uuid| None;
            let ctx = ctx(vec![ApplyTo::Produce], &names);
            assert!(!rewrites_response_for(&meta(ApiKey::Fetch, 4), &ctx));
            let meta = meta(ApiKey::Fetch, 11);
            let frame = response_frame(&meta, &with_records(11, batch(PHI, Compression::None)));
            let out = through(&meta, frame.clone(), |r| {
                block_on(on_response(&plan(), r, Some((&caller(), &ctx))))
            })
            .unwrap();
            assert_eq!(out.frame, frame);
        }
    }
}
