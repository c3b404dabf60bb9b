//! FindCoordinator: v0–3 carry one coordinator at the top level, v4+ an array
//! (one per key). Both are rewritten to loopback ports.

use super::Learned;
use crate::datapath::addresses::AddressPlan;
use crate::datapath::exchange::Response;
use crate::kafka::codec::FrameError;
use kafka_protocol::messages::{FindCoordinatorResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

pub fn on_response(plan: &AddressPlan, response: &mut Response) -> Result<Learned, FrameError> {
    let version = response.meta().api_version;
    let mut out = Learned::default();
    if let ResponseKind::FindCoordinator(found) = response.body()? {
        rewrite(plan, version, found, &mut out);
        response.changed();
    }
    Ok(out)
}

pub fn rewrite(
    plan: &AddressPlan,
    version: i16,
    response: &mut FindCoordinatorResponse,
    out: &mut Learned,
) {
    if version < 4 {
        let r = response;
        rewrite_one(
            plan,
            r.node_id.0,
            &mut r.host,
            &mut r.port,
            &mut r.error_code,
            out,
        );
    } else {
        for c in &mut response.coordinators {
            rewrite_one(
                plan,
                c.node_id.0,
                &mut c.host,
                &mut c.port,
                &mut c.error_code,
                out,
            );
        }
    }
}

/// Rewrite one coordinator; an error answer (node -1, no address) is left
/// alone, and one the plan cannot map becomes COORDINATOR_NOT_AVAILABLE so
/// the client retries instead of connecting past the gate.
fn rewrite_one(
    plan: &AddressPlan,
    node_id: i32,
    host: &mut StrBytes,
    port: &mut i32,
    error_code: &mut i16,
    out: &mut Learned,
) {
    if *error_code != 0 {
        return;
    }
    match plan.rewrite(node_id, host, port) {
        Ok(found) => out.brokers.push(found),
        Err(reason) => {
            tracing::warn!(%reason, "coordinator cannot be mapped; answering COORDINATOR_NOT_AVAILABLE");
            *error_code = kafka_protocol::ResponseError::CoordinatorNotAvailable.code();
            *host = StrBytes::default();
            *port = -1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::apis::test_support::*;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::{ApiKey, BrokerId};
    use kafka_protocol::protocol::Message;

    #[test]
    fn v0_to_v3_rewrite_the_top_level_coordinator() {
        for version in 0..4 {
            let meta = meta(ApiKey::FindCoordinator, version);
            let golden = FindCoordinatorResponse::default()
                .with_node_id(BrokerId(111))
                .with_host(StrBytes::from_static_str("tansu.internal"))
                .with_port(29092);
            let out = through(&meta, response_frame(&meta, &golden), |r| {
                on_response(&plan(), r)
            })
            .unwrap();
            let (corr, got): (i32, FindCoordinatorResponse) = decode_response(&meta, &out.frame);
            assert_eq!(corr, 99);
            assert_eq!(
                (got.node_id.0, got.host.as_str(), got.port),
                (111, "127.0.0.1", 9204),
                "v{version}"
            );
            assert_eq!(out.brokers[0].host, "tansu.internal");
        }
    }

    #[test]
    fn v4_and_later_rewrite_each_coordinator() {
        for version in 4..=FindCoordinatorResponse::VERSIONS.max {
            let meta = meta(ApiKey::FindCoordinator, version);
            let c = |key: &'static str, node: i32| {
                Coordinator::default()
                    .with_key(StrBytes::from_static_str(key))
                    .with_node_id(BrokerId(node))
                    .with_host(StrBytes::from_static_str("tansu.internal"))
                    .with_port(29092)
            };
            let golden = FindCoordinatorResponse::default()
                .with_coordinators(vec![c("g1", 111), c("g2", 3)]);
            let out = through(&meta, response_frame(&meta, &golden), |r| {
                on_response(&plan(), r)
            })
            .unwrap();
            let (_, got): (i32, FindCoordinatorResponse) = decode_response(&meta, &out.frame);
            let seen: Vec<_> = got
                .coordinators
                .iter()
                .map(|c| (c.key.as_str(), c.host.as_str(), c.port))
                .collect();
            assert_eq!(
                seen,
                vec![("g1", "127.0.0.1", 9204), ("g2", "127.0.0.1", 9096)],
                "v{version}"
            );
        }
    }

    #[test]
    fn error_answers_pass_through_unchanged() {
        let meta = meta(ApiKey::FindCoordinator, 3);
        let golden = FindCoordinatorResponse::default()
            .with_error_code(15)
            .with_node_id(BrokerId(-1))
            .with_port(-1);
        let out = through(&meta, response_frame(&meta, &golden), |r| {
            on_response(&plan(), r)
        })
        .unwrap();
        let (_, got): (i32, FindCoordinatorResponse) = decode_response(&meta, &out.frame);
        assert_eq!(got, golden);
        assert!(out.brokers.is_empty());
    }
}
