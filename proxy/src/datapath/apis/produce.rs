//! Produce: `acks` is peeked from the bytes unless the body is decoded
//! already (policy decodes it to check topics; masking with `applyTo:
//! Produce` masks it in place); the response is decoded here only at v10+,
//! where it can carry `node_endpoints` (new leaders) that must be rewritten.

use super::{Learned, MaskingContext, RequestAction};
use crate::datapath::addresses::AddressPlan;
use crate::datapath::exchange::{Request, Response};
use crate::identity::caller::Caller;
use crate::kafka::codec::{FrameError, RequestMeta, encode_response, split_request};
use crate::kafka::refusal::{POLICY_VIOLATION, refuse_produce};
use crate::kafka::wire::skip_nullable_string;
use crate::masking::wire::{INLINE_MAX_WORK, TopicMasking, produce_work};
use crate::masking::{Masked, PartitionFailure, mask_produce_request};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestKind, ResponseKind};
use kafka_protocol::protocol::buf::ByteBuf;
use std::collections::HashMap;
use std::sync::Arc;
use streamgate_crds::ApplyTo;

/// First Produce version whose response may carry `node_endpoints`.
const NODE_ENDPOINTS_SINCE: i16 = 10;
/// Produce v13 names topics by id.
const TOPIC_IDS_SINCE: i16 = 13;

pub async fn on_request(
    caller: &Caller,
    request: &mut Request,
    masking: Option<&MaskingContext<'_>>,
) -> Result<RequestAction, FrameError> {
    let acks = match request.is_decoded() {
        true => match request.body()? {
            RequestKind::Produce(produce) => produce.acks,
            _ => peek_acks(request.frame(), request.meta())?,
        },
        false => peek_acks(request.frame(), request.meta())?,
    };
    let masked = match masking.filter(|m| m.applies(ApplyTo::Produce)) {
        Some(ctx) => match mask_request(caller, request, ctx).await? {
            MaskedRequest::Masked(topics) => topics,
            MaskedRequest::Unchanged => Vec::new(),
            MaskedRequest::Refused(answer) if acks != 0 => {
                return Ok(RequestAction::Answer(answer));
            }
            // acks=0 has no response to carry the refusal: close instead.
            MaskedRequest::Refused(_) => {
                return Err(FrameError::Malformed {
                    what: "Produce request (acks=0) with records that cannot be masked",
                    source: anyhow::anyhow!("refused: the records would reach the broker unmasked"),
                });
            }
        },
        None => Vec::new(),
    };
    Ok(RequestAction::Forward {
        expect_response: acks != 0,
        masked,
    })
}

/// What masking a Produce request came to.
enum MaskedRequest {
    /// Nothing changed: forward the original frame.
    Unchanged,
    /// The records were masked in place; what was masked goes to the audit record.
    Masked(Vec<TopicMasking>),
    /// Some partition cannot be masked: answer every partition of the request instead.
    Refused(Bytes),
}

/// Mask the records of a Produce request where a rule has `applyTo: Produce`.
async fn mask_request(
    caller: &Caller,
    request: &mut Request,
    ctx: &MaskingContext<'_>,
) -> Result<MaskedRequest, FrameError> {
    let meta = request.meta().clone();
    let RequestKind::Produce(produce) = request.body()? else {
        return Ok(MaskedRequest::Unchanged);
    };
    let by_id = meta.api_version >= TOPIC_IDS_SINCE;
    match mask(caller, ctx, by_id, produce).await? {
        Ok(masked) => {
            if masked.changed {
                request.changed();
            }
            // Unchanged records may still name patients (for the audit record).
            Ok(MaskedRequest::Masked(masked.topics))
        }
        Err(failures) => {
            for f in &failures {
                tracing::warn!(topic = ?f.topic, partition = f.partition, error_code = f.error_code, error = ?f.error.as_ref().map(ToString::to_string), "Produce refused: records cannot be masked");
            }
            let name = |t: &TopicProduceData| match by_id {
                true => (ctx.topic_name)(&t.topic_id),
                false => Some(t.name.0.to_string()),
            };
            let response = refusal(produce, &failures, name);
            Ok(MaskedRequest::Refused(encode_response(
                meta.correlation_id,
                meta.response_header_version(),
                &response,
                meta.api_version,
            )?))
        }
    }
}

/// Mask `produce` in place: on this worker when the work is small, else on
/// the blocking pool (see `fetch::mask`). The topic names are looked up
/// first: the blocking task cannot borrow the topic-id map.
async fn mask(
    caller: &Caller,
    ctx: &MaskingContext<'_>,
    by_id: bool,
    produce: &mut ProduceRequest,
) -> Result<Result<Masked, Vec<PartitionFailure>>, FrameError> {
    let principal = caller.masking_subject();
    let ids: HashMap<uuid::Uuid, String> = if by_id {
        produce
            .topic_data
            .iter()
            .filter_map(|t| (ctx.topic_name)(&t.topic_id).map(|n| (t.topic_id, n)))
            .collect()
    } else {
        HashMap::new()
    };
    let name = move |t: &TopicProduceData| {
        if by_id {
            ids.get(&t.topic_id).cloned()
        } else {
            Some(t.name.0.to_string())
        }
    };
    if produce_work(&ctx.set, &principal, produce, &name) <= INLINE_MAX_WORK {
        return Ok(mask_produce_request(&ctx.set, &principal, produce, name));
    }
    let set = Arc::clone(&ctx.set);
    let mut body = std::mem::take(produce);
    let (body, masked) = tokio::task::spawn_blocking(move || {
        let masked = mask_produce_request(&set, &principal, &mut body, name);
        (body, masked)
    })
    .await
    // The request was moved into the task: with it gone (a panic), nothing
    // is forwarded, the connection closes.
    .map_err(|e| FrameError::Malformed {
        what: "Produce request (masking did not finish)",
        source: anyhow::anyhow!("{e}"),
    })?;
    *produce = body;
    Ok(masked)
}

/// Every partition of `request` answered: the failing ones with their codes,
/// the others with POLICY_VIOLATION (the request is refused as a whole).
/// `name` resolves a topic as masking did (v13 names topics by id only).
fn refusal(
    request: &ProduceRequest,
    failures: &[PartitionFailure],
    name: impl Fn(&TopicProduceData) -> Option<String>,
) -> ProduceResponse {
    let message =
        "streamgate: records cannot be masked (MaskingRule applyTo Produce); nothing was written";
    refuse_produce(request, message, |t, partition| {
        let topic = name(t);
        failures
            .iter()
            .find(|f| f.partition == partition && f.topic == topic)
            .map_or(POLICY_VIOLATION, |f| f.error_code)
    })
}

/// Read `acks` without decoding the records: v3+ put a nullable
/// `transactional_id` (compact at v9+) in front of it.
pub fn peek_acks(frame: &Bytes, meta: &RequestMeta) -> Result<i16, FrameError> {
    let (_, mut body) = split_request(frame, meta)?;
    if meta.api_version >= 3 {
        skip_nullable_string(&mut body, meta.api_version >= 9)?;
    }
    let acks = body.try_get_bytes(2).map_err(|e| FrameError::Malformed {
        what: "Produce acks",
        source: anyhow::anyhow!("{e}"),
    })?;
    Ok(i16::from_be_bytes([acks[0], acks[1]]))
}

/// Only v10+ responses may carry `node_endpoints`; older ones are not decoded.
pub fn on_response(plan: &AddressPlan, response: &mut Response) -> Result<Learned, FrameError> {
    if response.meta().api_version < NODE_ENDPOINTS_SINCE {
        return Ok(Learned::default());
    }
    match response.body()? {
        ResponseKind::Produce(produced) if !produced.node_endpoints.is_empty() => {
            let out = Learned::brokers(plan, &mut produced.node_endpoints, |n| {
                (n.node_id.0, &mut n.host, &mut n.port)
            });
            response.changed();
            Ok(out)
        }
        _ => Ok(Learned::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::apis::test_support::*;
    use kafka_protocol::messages::produce_response::NodeEndpoint;
    use kafka_protocol::messages::{ApiKey, BrokerId};
    use kafka_protocol::protocol::Message;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn acks_are_read_at_every_version_with_and_without_transactional_id() {
        for version in ProduceRequest::VERSIONS.min..=ProduceRequest::VERSIONS.max {
            for acks in [0i16, 1, -1] {
                let mut req = ProduceRequest::default()
                    .with_acks(acks)
                    .with_timeout_ms(1000);
                if version >= 3 {
                    req = req.with_transactional_id(Some(StrBytes::from_static_str("tx-1").into()));
                }
                let meta = meta(ApiKey::Produce, version);
                let frame = request_frame(&meta, &req);
                assert_eq!(peek_acks(&frame, &meta).unwrap(), acks, "v{version}");
                let Requested::Forward {
                    frame: out,
                    expect_response,
                    ..
                } = request_through(&caller(), &meta, frame.clone(), None).unwrap()
                else {
                    panic!("produce is forwarded")
                };
                assert_eq!(out, frame, "request bytes are forwarded untouched");
                assert_eq!(expect_response, acks != 0, "acks=0 has no response");
            }
        }
    }

    #[test]
    fn node_endpoints_are_rewritten_and_plain_responses_forwarded_byte_for_byte() {
        for version in NODE_ENDPOINTS_SINCE..=ProduceResponse::VERSIONS.max {
            let meta = meta(ApiKey::Produce, version);
            let plain = response_frame(&meta, &ProduceResponse::default().with_throttle_time_ms(3));
            let out = through(&meta, plain.clone(), |r| on_response(&plan(), r)).unwrap();
            assert_eq!(out.frame, plain);
            let golden = ProduceResponse::default().with_node_endpoints(vec![
                NodeEndpoint::default()
                    .with_node_id(BrokerId(111))
                    .with_host(StrBytes::from_static_str("tansu.internal"))
                    .with_port(29092),
            ]);
            let out = through(&meta, response_frame(&meta, &golden), |r| {
                on_response(&plan(), r)
            })
            .unwrap();
            let (_, got): (i32, ProduceResponse) = decode_response(&meta, &out.frame);
            let mut want = golden.clone();
            want.node_endpoints[0].host = StrBytes::from_static_str("127.0.0.1");
            want.node_endpoints[0].port = 9204;
            assert_eq!(got, want, "v{version}");
        }
    }

    mod masking {
        use super::*;
        use crate::masking::wire::tests::{PHI, batch, set, user, values};
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::messages::TopicName;
        use kafka_protocol::messages::produce_request::PartitionProduceData;
        use kafka_protocol::protocol::Decodable;
        use kafka_protocol::records::Compression;
        use std::sync::Arc;

        fn request(version: i16, records: Bytes) -> ProduceRequest {
            let mut topic = TopicProduceData::default().with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records)),
            ]);
            if version >= 13 {
                topic = topic.with_topic_id(uuid::Uuid::from_bytes([7u8; 16]));
            } else {
                topic = topic.with_name(TopicName(StrBytes::from_static_str("patient-intake")));
            }
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![topic])
        }

        fn decoded(meta: &RequestMeta, frame: &Bytes) -> (RequestHeader, ProduceRequest) {
            let (header, mut body) = split_request(frame, meta).unwrap();
            let req = ProduceRequest::decode(&mut body, meta.api_version).unwrap();
            (header, req)
        }

        #[test]
        fn records_are_masked_before_the_broker_at_every_version() {
            let names = |_: &uuid::Uuid| Some("patient-intake".to_string());
            let ctx = MaskingContext {
                set: Arc::new(set(vec![ApplyTo::Produce])),
                topic_name: &names,
                clear: None,
            };
            for version in 3..=ProduceRequest::VERSIONS.max {
                let meta = meta(ApiKey::Produce, version);
                let frame = request_frame(&meta, &request(version, batch(PHI, Compression::Zstd)));
                let Requested::Forward { frame: out, .. } =
                    request_through(&caller(), &meta, frame.clone(), Some(&ctx)).unwrap()
                else {
                    panic!("a maskable request is forwarded")
                };
                let (header, req) = decoded(&meta, &out);
                assert_eq!(header.correlation_id, 99);
                assert_eq!(header.client_id.as_deref(), Some("test"));
                let records = req.topic_data[0].partition_data[0].records.clone().unwrap();
                assert_eq!(
                    values(&records),
                    vec![r#"{"ssn":"[REDACTED]","ok":1}"#],
                    "v{version}"
                );
            }
        }

        #[test]
        fn large_records_are_masked_off_the_async_workers_and_bombs_refused() {
            use crate::masking::wire::{INLINE_MAX_WORK, MESSAGE_TOO_LARGE, tests::bomb};
            let names = |_: &uuid::Uuid| Some("patient-intake".to_string());
            let ctx = MaskingContext {
                set: Arc::new(set(vec![ApplyTo::Produce])),
                topic_name: &names,
                clear: None,
            };
            for version in [9, 13] {
                let meta = meta(ApiKey::Produce, version);
                let large = bomb(INLINE_MAX_WORK + (64 << 10));
                let frame =
                    request_frame(&meta, &request(version, batch(&large, Compression::None)));
                let Requested::Forward { frame: out, .. } =
                    request_through(&caller(), &meta, frame, Some(&ctx)).unwrap()
                else {
                    panic!("v{version}: masked and forwarded")
                };
                let (_, req) = decoded(&meta, &out);
                let records = req.topic_data[0].partition_data[0].records.clone().unwrap();
                assert!(values(&records)[0].starts_with(r#"{"ssn":"[REDACTED]","pad":"000"#));

                let over = bomb(crate::masking::DEFAULT_MAX_BATCH_BYTES + 1);
                let frame =
                    request_frame(&meta, &request(version, batch(&over, Compression::Zstd)));
                let Requested::Answer(answer) =
                    request_through(&caller(), &meta, frame, Some(&ctx)).unwrap()
                else {
                    panic!("v{version}: refused locally")
                };
                let (_, resp): (i32, ProduceResponse) = decode_response(&meta, &answer);
                let p = &resp.responses[0].partition_responses[0];
                assert_eq!(p.error_code, MESSAGE_TOO_LARGE, "v{version}");
            }
        }

        #[test]
        fn exempt_producers_and_fetch_only_rules_forward_the_original_frame() {
            let names = |_: &uuid::Uuid| None;
            let meta = meta(ApiKey::Produce, 9);
            let frame = request_frame(&meta, &request(9, batch(PHI, Compression::Gzip)));
            let fetch_only = MaskingContext {
                set: Arc::new(set(vec![ApplyTo::Fetch])),
                topic_name: &names,
                clear: None,
            };
            let Requested::Forward { frame: out, .. } =
                request_through(&caller(), &meta, frame.clone(), Some(&fetch_only)).unwrap()
            else {
                panic!("forwarded")
            };
            assert_eq!(out, frame);
            let produce = MaskingContext {
                set: Arc::new(set(vec![ApplyTo::Produce])),
                topic_name: &names,
                clear: None,
            };
            let mut exempt = caller();
            exempt.principal = Some(user(&["clinicians"]));
            let Requested::Forward { frame: out, .. } =
                request_through(&exempt, &meta, frame.clone(), Some(&produce)).unwrap()
            else {
                panic!("forwarded")
            };
            assert_eq!(out, frame);
        }

        #[test]
        fn unmaskable_records_are_answered_not_forwarded() {
            let names = |_: &uuid::Uuid| None;
            let ctx = MaskingContext {
                set: Arc::new(set(vec![ApplyTo::Produce])),
                topic_name: &names,
                clear: None,
            };
            let full = batch(PHI, Compression::None);
            for version in [3i16, 9, 13] {
                let meta = meta(ApiKey::Produce, version);
                // truncated batch (v3-12), or an unknown topic id (v13)
                let records = if version >= 13 {
                    full.clone()
                } else {
                    full.slice(..full.len() - 1)
                };
                let frame = request_frame(&meta, &request(version, records));
                let Requested::Answer(answer) =
                    request_through(&caller(), &meta, frame, Some(&ctx)).unwrap()
                else {
                    panic!("v{version}: refused locally")
                };
                let (corr, resp): (i32, ProduceResponse) = decode_response(&meta, &answer);
                assert_eq!(corr, 99);
                let p = &resp.responses[0].partition_responses[0];
                let want = if version >= 13 {
                    crate::masking::wire::UNKNOWN_TOPIC_ID
                } else {
                    crate::masking::wire::CORRUPT_MESSAGE
                };
                assert_eq!(p.error_code, want, "v{version}");
                assert_eq!(p.base_offset, -1);
            }
            // acks=0: nothing to answer with, the connection closes.
            let meta = meta(ApiKey::Produce, 9);
            let frame = request_frame(
                &meta,
                &request(9, full.slice(..full.len() - 1)).with_acks(0),
            );
            assert!(request_through(&caller(), &meta, frame, Some(&ctx)).is_err());
        }
    }
}
