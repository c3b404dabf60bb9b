//! DescribeCluster (admin clients): brokers rewritten to loopback ports.

use super::Learned;
use crate::datapath::addresses::AddressPlan;
use crate::datapath::exchange::Response;
use crate::kafka::codec::FrameError;
use kafka_protocol::messages::ResponseKind;

pub fn on_response(plan: &AddressPlan, response: &mut Response) -> Result<Learned, FrameError> {
    let ResponseKind::DescribeCluster(cluster) = response.body()? else {
        return Ok(Learned::default());
    };
    let out = Learned::brokers(plan, &mut cluster.brokers, |b| {
        (b.broker_id.0, &mut b.host, &mut b.port)
    });
    response.changed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::apis::test_support::*;
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterResponse};
    use kafka_protocol::protocol::{Message, StrBytes};

    #[test]
    fn every_version_rewrites_brokers_and_keeps_the_rest() {
        for version in DescribeClusterResponse::VERSIONS.min..=DescribeClusterResponse::VERSIONS.max
        {
            let meta = meta(ApiKey::DescribeCluster, version);
            let golden = DescribeClusterResponse::default()
                .with_cluster_id(StrBytes::from_static_str("c1"))
                .with_controller_id(BrokerId(111))
                .with_brokers(vec![
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(111))
                        .with_host(StrBytes::from_static_str("tansu.internal"))
                        .with_port(29092),
                ]);
            let out = through(&meta, response_frame(&meta, &golden), |r| {
                on_response(&plan(), r)
            })
            .unwrap();
            let (_, got): (i32, DescribeClusterResponse) = decode_response(&meta, &out.frame);
            let mut want = golden.clone();
            want.brokers[0].host = StrBytes::from_static_str("127.0.0.1");
            want.brokers[0].port = 9204;
            assert_eq!(got, want, "v{version}");
        }
    }
}
