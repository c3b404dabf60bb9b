//! Produce: each topic needs `Write`; a transactional Produce also needs the
//! caller to write somewhere (its transactional id was checked before).
use kafka_protocol::messages::{
    ProduceRequest, ResponseKind, TopicName, produce_request, produce_response,
};
use streamgate_crds::Operation;
use uuid::Uuid;

use super::refusal::{Denied, TopicEntry, answer_list, message, refuse_every};
use super::{Ctx, Enforcement, FixupKind, TXN_AUTH, conclude};

pub(super) fn check_produce(ctx: &mut Ctx<'_, '_>, req: &mut ProduceRequest) -> Enforcement {
    // acks=0: the client reads no answer, so a refusal is silence.
    if req.transactional_id.is_some() && !ctx.may_any(Operation::Write) {
        if req.acks == 0 {
            return Enforcement::NoResponse;
        }
        return Enforcement::Respond(refuse_every(&req.topic_data, TXN_AUTH));
    }
    let denied = ctx.trim(&mut req.topic_data, Operation::Write, true);
    let emptied = req.topic_data.is_empty();
    if emptied && !denied.is_empty() && req.acks == 0 {
        return Enforcement::NoResponse;
    }
    conclude::<produce_request::TopicProduceData>(emptied, denied, FixupKind::Topics)
}

impl TopicEntry for produce_request::TopicProduceData {
    type Refused = produce_response::TopicProduceResponse;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn id(&self) -> Uuid {
        self.topic_id
    }
    fn partitions(&self) -> Vec<i32> {
        self.partition_data.iter().map(|p| p.index).collect()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        produce_response::TopicProduceResponse::default()
            .with_name(d.name.clone())
            .with_topic_id(d.id)
            .with_partition_responses(
                d.partitions
                    .iter()
                    .map(|p| {
                        produce_response::PartitionProduceResponse::default()
                            .with_index(*p)
                            .with_error_code(code)
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1)
                            .with_error_message(message())
                    })
                    .collect(),
            )
    }
    answer_list!(Produce, responses);
}
