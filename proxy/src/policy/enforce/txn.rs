//! Transactions and producer state: TxnOffsetCommit, AddPartitionsToTxn,
//! InitProducerId and DescribeProducers. Transaction coordination needs
//! `Write` on some topic; which transactional ids a caller may use was
//! checked before (`policy::coordination`).
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ResponseKind, TopicName, TxnOffsetCommitRequest,
    add_partitions_to_txn_request, add_partitions_to_txn_response, describe_producers_request,
    describe_producers_response, txn_offset_commit_request, txn_offset_commit_response,
};
use streamgate_crds::Operation;

use super::refusal::{Denied, TopicEntry, answer_list, message, refuse_every};
use super::{CLUSTER_AUTH, Ctx, Enforcement, Fixup, TOPIC_AUTH, TXN_AUTH};

const NOT_ATTEMPTED: i16 = ResponseError::OperationNotAttempted.code();

/// The offsets a transaction commits for its consumer need `Read` on the topic.
pub(super) fn check_txn_offset_commit(
    ctx: &mut Ctx<'_, '_>,
    req: &mut TxnOffsetCommitRequest,
) -> Enforcement {
    if !ctx.may_any(Operation::Write) {
        return Enforcement::Respond(refuse_every(&req.topics, TXN_AUTH));
    }
    ctx.topics(&mut req.topics, Operation::Read, true)
}

pub(super) fn check_init_producer_id(
    ctx: &mut Ctx<'_, '_>,
    req: &InitProducerIdRequest,
) -> Enforcement {
    if ctx.may_any(Operation::Write) {
        return Enforcement::Forward(Fixup::default());
    }
    // Idempotent producers without a transactional id need cluster rights in Kafka.
    let code = if req.transactional_id.is_some() {
        TXN_AUTH
    } else {
        CLUSTER_AUTH
    };
    Enforcement::Respond(ResponseKind::InitProducerId(
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1),
    ))
}

/// Every partition a transaction adds needs `Write` on its topic. Like
/// Kafka, the whole request fails when one is refused: refused partitions
/// carry the authorization error, the others OPERATION_NOT_ATTEMPTED.
pub(super) fn check_add_partitions_to_txn(
    ctx: &mut Ctx<'_, '_>,
    req: &AddPartitionsToTxnRequest,
) -> Enforcement {
    let may_write = ctx.may_any(Operation::Write);
    // The code of each topic, in request order (v3 list, then per transaction).
    let mut codes = Vec::new();
    for t in req
        .v3_and_below_topics
        .iter()
        .chain(req.transactions.iter().flat_map(|x| x.topics.iter()))
    {
        let ok = may_write && ctx.allow(Operation::Write, &t.name, &uuid::Uuid::nil());
        codes.push(match (may_write, ok) {
            (false, _) => TXN_AUTH,
            (true, true) => NOT_ATTEMPTED,
            (true, false) => TOPIC_AUTH,
        });
    }
    if codes.iter().all(|c| *c == NOT_ATTEMPTED) {
        return Enforcement::Forward(Fixup::default());
    }
    let mut codes = codes.into_iter();
    let mut code = || codes.next().unwrap_or(TOPIC_AUTH);
    Enforcement::Respond(add_partitions_to_txn_answer(0, req, &mut code))
}

/// A transactional id the caller may not use: every partition refused with `code`.
pub(super) fn add_partitions_to_txn_refusal(
    version: i16,
    req: &AddPartitionsToTxnRequest,
    code: i16,
) -> ResponseKind {
    let top = if version >= 4 { code } else { 0 };
    add_partitions_to_txn_answer(top, req, &mut || code)
}

/// The answer to an AddPartitionsToTxn request, each topic's partitions
/// carrying the code `code` gives it (called once per topic, in order).
fn add_partitions_to_txn_answer(
    top_level: i16,
    req: &AddPartitionsToTxnRequest,
    code: &mut dyn FnMut() -> i16,
) -> ResponseKind {
    use add_partitions_to_txn_response as r;
    let mut results = |topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]| {
        topics
            .iter()
            .map(|t| {
                let code = code();
                r::AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                r::AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect::<Vec<_>>()
    };
    let v3 = results(&req.v3_and_below_topics);
    let per_txn = req
        .transactions
        .iter()
        .map(|t| {
            r::AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(results(&t.topics))
        })
        .collect();
    ResponseKind::AddPartitionsToTxn(
        AddPartitionsToTxnResponse::default()
            .with_error_code(top_level)
            .with_results_by_topic_v3_and_below(v3)
            .with_results_by_transaction(per_txn),
    )
}

impl TopicEntry for txn_offset_commit_request::TxnOffsetCommitRequestTopic {
    type Refused = txn_offset_commit_response::TxnOffsetCommitResponseTopic;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn partitions(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.partition_index).collect()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
            .with_name(d.name.clone())
            .with_partitions(
                d.partitions
                    .iter()
                    .map(|p| {
                        txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(*p)
                            .with_error_code(code)
                    })
                    .collect(),
            )
    }
    answer_list!(TxnOffsetCommit, topics);
}

impl TopicEntry for describe_producers_request::TopicRequest {
    type Refused = describe_producers_response::TopicResponse;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn partitions(&self) -> Vec<i32> {
        self.partition_indexes.clone()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        describe_producers_response::TopicResponse::default()
            .with_name(d.name.clone())
            .with_partitions(
                d.partitions
                    .iter()
                    .map(|p| {
                        describe_producers_response::PartitionResponse::default()
                            .with_partition_index(*p)
                            .with_error_code(code)
                            .with_error_message(message())
                    })
                    .collect(),
            )
    }
    answer_list!(DescribeProducers, topics);
}
