//! The data path's own per-API work, one file per API that needs any:
//! broker endpoints rewritten to the loopback stand-ins (Metadata,
//! FindCoordinator, DescribeCluster, Produce v10+, Fetch v16), ApiVersions
//! narrowed to what the proxy parses, and the masking hooks (Produce
//! requests, Fetch responses). Each works on the pipeline's exchange and asks
//! for the body only when its version needs it; everything else passes as
//! the original bytes. Policy and audit are stages of their own
//! (see `super::pipeline`).

pub mod api_versions;
pub mod describe_cluster;
pub mod fetch;
pub mod find_coordinator;
pub mod metadata;
pub mod produce;

use super::addresses::{AddressPlan, UpstreamBroker};
use super::exchange::{Request, Response};
use crate::identity::caller::Caller;
use crate::kafka::codec::FrameError;
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, TopicName};

/// What to do with one client request.
#[derive(Debug)]
pub enum RequestAction {
    /// Send the request upstream; `expect_response` is false only for acks=0 Produce.
    /// `masked`: what masking did to a Produce request's records
    /// (`applyTo: Produce`), for the audit record.
    Forward {
        expect_response: bool,
        masked: Vec<crate::masking::wire::TopicMasking>,
    },
    /// Do not forward; answer the client with this frame, in order.
    Answer(Bytes),
}

/// What a response taught the proxy, and what masking did to it.
#[derive(Debug, Default)]
pub struct Learned {
    /// Brokers whose loopback stand-ins must be listening before the client sees this.
    pub brokers: Vec<UpstreamBroker>,
    /// Topic ids learned (Metadata v10+), for APIs that carry ids instead of names.
    pub topics: Vec<([u8; 16], TopicName)>,
    /// What masking did, per topic (Fetch): for the audit record (decision Masked).
    pub masking: Vec<crate::masking::TopicMasking>,
}

impl Learned {
    /// The brokers of `entries`, rewritten to their loopback stand-ins (see
    /// [`rewrite_endpoints`]).
    fn brokers<T>(
        plan: &AddressPlan,
        entries: &mut Vec<T>,
        fields: impl Fn(&mut T) -> (i32, &mut kafka_protocol::protocol::StrBytes, &mut i32),
    ) -> Self {
        let mut out = Learned::default();
        rewrite_endpoints(plan, entries, fields, &mut out.brokers);
        out
    }
}

/// What the masking step needs: the rules in force and the topic-id map
/// (Fetch v13+ and Produce v13 name topics by id).
pub struct MaskingContext<'a> {
    pub set: std::sync::Arc<crate::masking::MaskingSet>,
    pub topic_name: &'a (dyn Fn(&uuid::Uuid) -> Option<String> + Sync),
    /// Topics the caller reads in clear: a break-glass rule with
    /// `unmasked: true` lifts the MaskingRules for its grant (Fetch only).
    pub clear: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
}

impl std::fmt::Debug for MaskingContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskingContext")
            .field("set", &self.set)
            .finish_non_exhaustive()
    }
}

impl MaskingContext<'_> {
    /// Does any rule apply in `direction`, or name its records' patients
    /// (read in both directions, for the audit trail)?
    pub fn applies(&self, direction: streamgate_crds::ApplyTo) -> bool {
        self.set.has_rules_for(direction) || self.set.names_patients()
    }
}

/// Handle one request from the client (async: masking a large Produce runs
/// on the blocking pool).
pub async fn on_request(
    caller: &Caller,
    request: &mut Request,
    masking: Option<&MaskingContext<'_>>,
) -> Result<RequestAction, FrameError> {
    match request.meta().api_key {
        ApiKey::ApiVersions => Ok(api_versions::on_request(request.meta())),
        ApiKey::Produce => produce::on_request(caller, request, masking).await,
        _ => Ok(RequestAction::Forward {
            expect_response: true,
            masked: Vec::new(),
        }),
    }
}

/// Handle one response from the broker: endpoints rewritten (and learned),
/// Fetch records masked (a large Fetch on the blocking pool). Each API
/// decodes the body only when it must.
pub async fn on_response(
    caller: &Caller,
    plan: &AddressPlan,
    response: &mut Response,
    masking: Option<&MaskingContext<'_>>,
) -> Result<Learned, FrameError> {
    match response.meta().api_key {
        ApiKey::ApiVersions => api_versions::on_response(response).map(|()| Learned::default()),
        ApiKey::Metadata => metadata::on_response(plan, response),
        ApiKey::FindCoordinator => find_coordinator::on_response(plan, response),
        ApiKey::DescribeCluster => describe_cluster::on_response(plan, response),
        ApiKey::Produce => produce::on_response(plan, response),
        ApiKey::Fetch => fetch::on_response(plan, response, masking.map(|m| (caller, m))).await,
        _ => Ok(Learned::default()),
    }
}

/// Apply the address plan to a list of endpoints, dropping (with a logged
/// reason) any the plan cannot map, so no client is ever pointed past the gate.
pub(crate) fn rewrite_endpoints<T>(
    plan: &AddressPlan,
    entries: &mut Vec<T>,
    fields: impl Fn(&mut T) -> (i32, &mut kafka_protocol::protocol::StrBytes, &mut i32),
    learned: &mut Vec<UpstreamBroker>,
) {
    entries.retain_mut(|entry| {
        let (node_id, host, port) = fields(entry);
        match plan.rewrite(node_id, host, port) {
            Ok(found) => {
                learned.push(found);
                true
            }
            Err(reason) => {
                tracing::warn!(%reason, "dropping a broker from a response: the proxy cannot map it");
                false
            }
        }
    });
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::kafka::codec::RequestMeta;
    use crate::kafka::codec::{encode_request, encode_response};
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::{Decodable, Encodable};
    use std::net::SocketAddr;

    pub fn plan() -> AddressPlan {
        AddressPlan {
            listen_ip: "127.0.0.1".parse().unwrap(),
            listen_port: 9092,
            node_id_min: 0,
            node_id_max: 1023,
        }
    }

    pub fn caller() -> Caller {
        Caller::new(SocketAddr::from(([127, 0, 0, 1], 50000)))
    }

    pub fn meta(api_key: ApiKey, api_version: i16) -> RequestMeta {
        RequestMeta {
            api_key,
            api_version,
            correlation_id: 99,
        }
    }

    pub fn response_frame<M: Encodable>(meta: &RequestMeta, msg: &M) -> Bytes {
        encode_response(
            meta.correlation_id,
            meta.response_header_version(),
            msg,
            meta.api_version,
        )
        .unwrap()
    }

    pub fn request_frame<M: Encodable>(meta: &RequestMeta, msg: &M) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(meta.api_key as i16)
            .with_request_api_version(meta.api_version)
            .with_correlation_id(meta.correlation_id)
            .with_client_id(Some("test".to_string().into()));
        encode_request(
            &header,
            meta.request_header_version(),
            msg,
            meta.api_version,
        )
        .unwrap()
    }

    /// What the request stage did, with the frame that would go upstream.
    #[derive(Debug)]
    pub enum Requested {
        Forward { frame: Bytes, expect_response: bool },
        Answer(Bytes),
    }

    /// Runs a stage's future to completion in a plain `#[test]` (a runtime
    /// with a blocking pool, as masking large records needs).
    pub fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime")
            .block_on(future)
    }

    /// A request frame through [`super::on_request`], as the pipeline runs it.
    pub fn request_through(
        caller: &Caller,
        meta: &RequestMeta,
        frame: Bytes,
        masking: Option<&MaskingContext<'_>>,
    ) -> Result<Requested, FrameError> {
        let mut request = Request::new(meta.clone(), frame);
        let action = block_on(on_request(caller, &mut request, masking))?;
        Ok(match action {
            RequestAction::Forward {
                expect_response, ..
            } => Requested::Forward {
                frame: request.into_frame()?,
                expect_response,
            },
            RequestAction::Answer(answer) => Requested::Answer(answer),
        })
    }

    /// A response frame through `stage`, as the pipeline runs it.
    #[derive(Debug)]
    pub struct Rewritten {
        pub frame: Bytes,
        pub brokers: Vec<UpstreamBroker>,
        pub topics: Vec<([u8; 16], TopicName)>,
        pub masking: Vec<crate::masking::TopicMasking>,
    }

    pub fn through(
        meta: &RequestMeta,
        frame: Bytes,
        stage: impl FnOnce(&mut Response) -> Result<Learned, FrameError>,
    ) -> Result<Rewritten, FrameError> {
        let mut response = Response::new(meta.clone(), frame);
        let learned = stage(&mut response)?;
        Ok(Rewritten {
            frame: response.into_frame()?,
            brokers: learned.brokers,
            topics: learned.topics,
            masking: learned.masking,
        })
    }

    /// Decode a response frame back into (correlation id, message).
    pub fn decode_response<M: Decodable>(meta: &RequestMeta, frame: &Bytes) -> (i32, M) {
        let (header, body) =
            crate::kafka::codec::split_response(frame, meta.response_header_version()).unwrap();
        let mut body = body;
        let msg = M::decode(&mut body, meta.api_version).unwrap();
        assert!(body.is_empty(), "nothing left over after the body");
        (header.correlation_id, msg)
    }
}
