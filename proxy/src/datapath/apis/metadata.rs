//! Metadata: every broker is rewritten to its loopback port; topic ids are
//! learned so Fetch/Produce requests that carry ids can be named.

use super::{Learned, rewrite_endpoints};
use crate::datapath::addresses::AddressPlan;
use crate::datapath::exchange::Response;
use crate::kafka::codec::FrameError;
use kafka_protocol::messages::{MetadataResponse, ResponseKind};

pub fn on_response(plan: &AddressPlan, response: &mut Response) -> Result<Learned, FrameError> {
    let mut out = Learned::default();
    if let ResponseKind::Metadata(metadata) = response.body()? {
        rewrite(plan, metadata, &mut out);
        response.changed();
    }
    Ok(out)
}

/// Rewrite brokers and collect topic ids (pure, for tests).
pub fn rewrite(plan: &AddressPlan, response: &mut MetadataResponse, out: &mut Learned) {
    rewrite_endpoints(
        plan,
        &mut response.brokers,
        |b| (b.node_id.0, &mut b.host, &mut b.port),
        &mut out.brokers,
    );
    for topic in &response.topics {
        if let Some(name) = &topic.name
            && !topic.topic_id.is_nil()
        {
            out.topics.push((*topic.topic_id.as_bytes(), name.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::apis::test_support::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
    use kafka_protocol::protocol::{Message, StrBytes};

    fn golden() -> MetadataResponse {
        let broker = |id: i32, host: &'static str| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_static_str(host))
                .with_port(29092)
                .with_rack(Some(StrBytes::from_static_str("rack-a")))
        };
        MetadataResponse::default()
            .with_throttle_time_ms(5)
            .with_brokers(vec![
                broker(111, "tansu.internal"),
                broker(2, "b2.internal"),
            ])
            .with_cluster_id(Some(StrBytes::from_static_str("c1")))
            .with_controller_id(BrokerId(111))
            .with_topics(vec![
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("patient-events"))))
                    .with_topic_id(uuid::Uuid::from_bytes([7u8; 16]))
                    .with_partitions(vec![
                        MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_leader_id(BrokerId(111))
                            .with_replica_nodes(vec![BrokerId(111)])
                            .with_isr_nodes(vec![BrokerId(111)]),
                    ]),
            ])
    }

    #[test]
    fn every_version_rewrites_hosts_and_ports_and_keeps_the_rest() {
        let plan = plan();
        for version in MetadataResponse::VERSIONS.min..=MetadataResponse::VERSIONS.max {
            let meta = meta(ApiKey::Metadata, version);
            let frame = response_frame(&meta, &golden());
            let out = through(&meta, frame.clone(), |r| on_response(&plan, r)).unwrap();
            let (corr, got): (i32, MetadataResponse) = decode_response(&meta, &out.frame);
            let (_, mut want): (i32, MetadataResponse) = decode_response(&meta, &frame);
            assert_eq!(corr, 99);
            assert_eq!(got.brokers[0].host.as_str(), "127.0.0.1", "v{version}");
            assert_eq!(got.brokers[0].port, 9092 + 1 + 111);
            assert_eq!(got.brokers[1].port, 9092 + 1 + 2);
            for b in &mut want.brokers {
                b.host = StrBytes::from_static_str("127.0.0.1");
                b.port = 9093 + b.node_id.0;
            }
            assert_eq!(got, want, "only hosts and ports change at v{version}");
            let hosts: Vec<_> = out
                .brokers
                .iter()
                .map(|b| (b.node_id, b.host.as_str(), b.port))
                .collect();
            assert_eq!(
                hosts,
                vec![(111, "tansu.internal", 29092), (2, "b2.internal", 29092)]
            );
            if version >= 10 {
                assert_eq!(out.topics.len(), 1, "topic id learned at v{version}");
                assert_eq!(out.topics[0].0, [7u8; 16]);
            }
        }
    }

    #[test]
    fn brokers_outside_the_node_range_are_dropped_not_leaked() {
        let plan = AddressPlan {
            node_id_max: 100,
            ..plan()
        };
        let meta = meta(ApiKey::Metadata, 12);
        let out = through(&meta, response_frame(&meta, &golden()), |r| {
            on_response(&plan, r)
        })
        .unwrap();
        let (_, got): (i32, MetadataResponse) = decode_response(&meta, &out.frame);
        assert_eq!(got.brokers.len(), 1);
        assert_eq!(got.brokers[0].node_id.0, 2);
        assert!(
            !got.brokers
                .iter()
                .any(|b| b.host.as_str() == "tansu.internal")
        );
    }
}
