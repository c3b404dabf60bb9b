//! Topic administration: CreateTopics and CreatePartitions (`Create`),
//! DeleteTopics and DeleteRecords (`Admin`, and `blockedOperations`), and
//! the config APIs (DescribeConfigs `Describe`, AlterConfigs and
//! IncrementalAlterConfigs `Admin`), whose resources are topics or brokers.
use kafka_protocol::messages::{
    DeleteTopicsRequest, ResponseKind, TopicName, alter_configs_request, alter_configs_response,
    create_partitions_request, create_partitions_response, create_topics_request,
    create_topics_response, delete_records_request, delete_records_response, delete_topics_request,
    delete_topics_response, describe_configs_request, describe_configs_response,
    incremental_alter_configs_request, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use streamgate_crds::Operation;
use uuid::Uuid;

use super::refusal::{
    ConfigEntry, Denied, DeniedResource, TopicEntry, answer_list, answer_resources,
    merge_resources, message,
};
use super::{CLUSTER_AUTH, Ctx, Enforcement, Fixup, FixupKind, TOPIC_AUTH, conclude};

/// Config resource type of a topic (the others are brokers and the like).
const RESOURCE_TOPIC: i8 = 2;

/// Topics are named (v0–5) or by name or id (v6+); both lists are checked.
pub(super) fn check_delete_topics(
    ctx: &mut Ctx<'_, '_>,
    req: &mut DeleteTopicsRequest,
    open: bool,
) -> Enforcement {
    let mut denied = ctx.trim(&mut req.topic_names, Operation::Admin, open);
    denied.extend(ctx.trim(&mut req.topics, Operation::Admin, open));
    let emptied = req.topics.is_empty() && req.topic_names.is_empty();
    conclude::<delete_topics_request::DeleteTopicState>(emptied, denied, FixupKind::Topics)
}

/// Topic resources need `op` on the topic (TOPIC_AUTHORIZATION_FAILED);
/// broker resources need it on the cluster (CLUSTER_AUTHORIZATION_FAILED).
pub(super) fn configs<T: ConfigEntry>(
    ctx: &mut Ctx<'_, '_>,
    items: &mut Vec<T>,
    op: Operation,
    open: bool,
) -> Enforcement {
    let mut denied = Vec::new();
    let gate = ctx.gate;
    items.retain(|r| {
        let (resource_type, name) = r.key();
        let (ok, code) = if resource_type == RESOURCE_TOPIC {
            let topic = TopicName(name.clone());
            (open && ctx.allow(op, &topic, &Uuid::nil()), TOPIC_AUTH)
        } else {
            let cluster = gate.policy.decide_cluster(gate.principal, op).is_allow();
            (open && cluster, CLUSTER_AUTH)
        };
        if !ok {
            denied.push(DeniedResource {
                resource_type,
                name: name.clone(),
                code,
            });
        }
        ok
    });
    if items.is_empty() && !denied.is_empty() {
        return Enforcement::Respond(answer_resources::<T>(&denied));
    }
    Enforcement::Forward(Fixup(FixupKind::Configs(denied, merge_resources::<T>)))
}

/// The three config APIs answer a resource alike, in three types.
macro_rules! config_entry {
    ($req:ty, $resp:ty, $kind:ident, $list:ident) => {
        impl ConfigEntry for $req {
            type Refused = $resp;
            fn key(&self) -> (i8, &StrBytes) {
                (self.resource_type, &self.resource_name)
            }
            fn refused(d: &DeniedResource) -> Self::Refused {
                <$resp>::default()
                    .with_resource_type(d.resource_type)
                    .with_resource_name(d.name.clone())
                    .with_error_code(d.code)
                    .with_error_message(message())
            }
            answer_list!($kind, $list);
        }
    };
}

config_entry!(
    describe_configs_request::DescribeConfigsResource,
    describe_configs_response::DescribeConfigsResult,
    DescribeConfigs,
    results
);
config_entry!(
    alter_configs_request::AlterConfigsResource,
    alter_configs_response::AlterConfigsResourceResponse,
    AlterConfigs,
    responses
);
config_entry!(
    incremental_alter_configs_request::AlterConfigsResource,
    incremental_alter_configs_response::AlterConfigsResourceResponse,
    IncrementalAlterConfigs,
    responses
);

impl TopicEntry for delete_records_request::DeleteRecordsTopic {
    type Refused = delete_records_response::DeleteRecordsTopicResult;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn partitions(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.partition_index).collect()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        delete_records_response::DeleteRecordsTopicResult::default()
            .with_name(d.name.clone())
            .with_partitions(
                d.partitions
                    .iter()
                    .map(|p| {
                        delete_records_response::DeleteRecordsPartitionResult::default()
                            .with_partition_index(*p)
                            .with_low_watermark(-1)
                            .with_error_code(code)
                    })
                    .collect(),
            )
    }
    answer_list!(DeleteRecords, topics);
}

impl TopicEntry for create_topics_request::CreatableTopic {
    type Refused = create_topics_response::CreatableTopicResult;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        create_topics_response::CreatableTopicResult::default()
            .with_name(d.name.clone())
            .with_error_code(code)
            .with_error_message(message())
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    }
    answer_list!(CreateTopics, topics);
}

impl TopicEntry for create_partitions_request::CreatePartitionsTopic {
    type Refused = create_partitions_response::CreatePartitionsTopicResult;
    fn name(&self) -> TopicName {
        self.name.clone()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        create_partitions_response::CreatePartitionsTopicResult::default()
            .with_name(d.name.clone())
            .with_error_code(code)
            .with_error_message(message())
    }
    answer_list!(CreatePartitions, results);
}

/// DeleteTopics v0–5 name topics in a plain list.
impl TopicEntry for TopicName {
    type Refused = delete_topics_response::DeletableTopicResult;
    fn name(&self) -> TopicName {
        self.clone()
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        delete_topics_request::DeleteTopicState::refused(d, code)
    }
    answer_list!(DeleteTopics, responses);
}

impl TopicEntry for delete_topics_request::DeleteTopicState {
    type Refused = delete_topics_response::DeletableTopicResult;
    fn name(&self) -> TopicName {
        self.name.clone().unwrap_or_default()
    }
    fn id(&self) -> Uuid {
        self.topic_id
    }
    fn refused(d: &Denied, code: i16) -> Self::Refused {
        delete_topics_response::DeletableTopicResult::default()
            .with_name(Some(d.name.clone()).filter(|n| !n.0.is_empty()))
            .with_topic_id(d.id)
            .with_error_code(code)
            .with_error_message(message())
    }
    answer_list!(DeleteTopics, responses);
}
