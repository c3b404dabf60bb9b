//! The per-connection gate on raw frames, as the connection loop drives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use streamgate_crds::StreamPolicySpec;
use streamgate_proxy::identity::workload::Workload;
use streamgate_proxy::policy::conn::{GateShared, ResponseFixup};

#[path = "support/gate.rs"]
mod gate;
use gate::{Conn, FrameAction, on_frame};
use streamgate_proxy::datapath::exchange::Response;
use streamgate_proxy::kafka::codec::RequestMeta;
use streamgate_proxy::policy::decide::PolicyDoc;
use streamgate_proxy::policy::{PolicyInputs, PolicyPublisher, policy_channel};

fn spec(workload_identity: bool, topic: &str) -> StreamPolicySpec {
    serde_yaml::from_str(&format!(
        r#"
identity: {{workloadIdentity: {workload_identity}}}
rules:
  - name: app
    subjects: [{{kind: ServiceAccount, name: intake}}]
    topics: ["{topic}"]
    operations: [Write, Describe]
  - name: anyone
    subjects: [{{kind: Group, name: "*"}}]
    topics: ["public"]
    operations: [Write]
"#
    ))
    .unwrap()
}

fn publish(p: &PolicyPublisher, workload_identity: bool, topic: &str) {
    p.publish(
        "test",
        PolicyInputs {
            policies: vec![PolicyDoc {
                name: "p".into(),
                namespace: "clinical".into(),
                generation: Some(1),
                spec: spec(workload_identity, topic),
            }],
            ..Default::default()
        },
    );
}

fn shared(workload_identity: bool) -> (PolicyPublisher, Arc<GateShared>) {
    let (publisher, handle) = policy_channel(BTreeMap::new());
    publish(&publisher, workload_identity, "patient-*");
    let workload = Workload {
        service_account: "intake".into(),
        pod_name: Some("intake-1".into()),
        namespace: "clinical".into(),
        labels: BTreeMap::new(),
    };
    (publisher, GateShared::new(handle, Some(workload), false))
}

fn frame<R: Encodable>(key: ApiKey, version: i16, correlation_id: i32, req: &R) -> Bytes {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("t")))
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    req.encode(&mut out, version).unwrap();
    out.freeze()
}

/// A broker response frame through the fixup, as the pipeline runs it.
fn through(fixup: &ResponseFixup, api_key: ApiKey, api_version: i16, frame: Bytes) -> Bytes {
    let meta = RequestMeta {
        api_key,
        api_version,
        correlation_id: 0,
    };
    let mut response = Response::new(meta, frame);
    fixup.apply(&mut response).unwrap();
    response.into_frame().unwrap()
}

fn response<R: Decodable>(key: ApiKey, version: i16, frame: &Bytes) -> (i32, R) {
    let mut buf = frame.clone();
    let h = ResponseHeader::decode(&mut buf, key.response_header_version(version)).unwrap();
    (h.correlation_id, R::decode(&mut buf, version).unwrap())
}

fn produce(topic: &'static str) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::new())),
                ]),
        ])
}

#[tokio::test]
async fn workload_identity_when_the_policy_allows_it() {
    let (_p, shared) = shared(true);
    let mut conn = Conn::new(shared);
    let f = frame(ApiKey::Produce, 9, 7, &produce("patient-records"));
    let f_copy = f.clone();
    let (FrameAction::Forward { fixup }, fwd) = on_frame(&mut conn, f).await else {
        panic!("forwarded")
    };
    assert!(
        fixup.is_none(),
        "nothing refused: the response passes untouched"
    );
    // Nothing trimmed: the client's frame goes upstream as it came.
    assert_eq!(fwd, f_copy);
    let mut buf = fwd.clone();
    let h = RequestHeader::decode(&mut buf, ApiKey::Produce.request_header_version(9)).unwrap();
    assert_eq!(h.correlation_id, 7);
    let f = frame(ApiKey::Produce, 9, 8, &produce("claims"));
    let FrameAction::Answer(a) = on_frame(&mut conn, f).await.0 else {
        panic!("answered locally")
    };
    let (cid, r): (i32, ProduceResponse) = response(ApiKey::Produce, 9, &a);
    assert_eq!(cid, 8);
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::TopicAuthorizationFailed.code()
    );
    assert_eq!(conn.take_decisions().len(), 1);
}

#[tokio::test]
async fn without_workload_identity_an_unauthenticated_caller_may_only_negotiate_and_authenticate() {
    let (_p, shared) = shared(false);
    // Before SASL, even a request a wildcard rule would allow closes the
    // connection, undecoded: only ApiVersions and SASL are spoken until then.
    for (key, version, body) in [
        (
            ApiKey::Produce,
            9,
            frame(ApiKey::Produce, 9, 1, &produce("public")),
        ),
        (
            ApiKey::Metadata,
            9,
            frame(
                ApiKey::Metadata,
                9,
                2,
                &MetadataRequest::default().with_topics(None),
            ),
        ),
        // Not even a body that could not be decoded is looked at.
        (ApiKey::Metadata, 1, {
            let mut f = frame(ApiKey::Metadata, 1, 3, &MetadataRequest::default()).to_vec();
            f.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
            Bytes::from(f)
        }),
    ] {
        let mut conn = Conn::new(Arc::clone(&shared));
        let FrameAction::Close(why) = on_frame(&mut conn, body).await.0 else {
            panic!("{key:?} v{version} closes the connection")
        };
        assert!(why.contains("before authentication"), "{why}");
    }
    let mut conn = Conn::new(shared);
    // ApiVersions always passes, and the answer offers the SASL APIs the
    // sidecar terminates even when the broker has none.
    let FrameAction::Forward {
        fixup: Some(fixup), ..
    } = on_frame(
        &mut conn,
        frame(ApiKey::ApiVersions, 3, 3, &ApiVersionsRequest::default()),
    )
    .await
    .0
    else {
        panic!("ApiVersions forwarded")
    };
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(3)
        .encode(&mut out, ApiKey::ApiVersions.response_header_version(3))
        .unwrap();
    ApiVersionsResponse::default()
        .with_api_keys(vec![
            api_versions_response::ApiVersion::default()
                .with_api_key(ApiKey::Produce as i16)
                .with_max_version(9),
        ])
        .encode(&mut out, 3)
        .unwrap();
    let (_, r): (i32, ApiVersionsResponse) = response(
        ApiKey::ApiVersions,
        3,
        &through(&fixup, ApiKey::ApiVersions, 3, out.freeze()),
    );
    let keys: Vec<(i16, i16)> = r
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.max_version))
        .collect();
    assert_eq!(keys, vec![(0, 9), (17, 1), (36, 2)]);
}

#[tokio::test]
async fn policy_reload_applies_to_open_connections() {
    let (publisher, shared) = shared(true);
    let mut conn = Conn::new(shared);
    assert!(matches!(
        on_frame(&mut conn, frame(ApiKey::Produce, 9, 1, &produce("claims")))
            .await
            .0,
        FrameAction::Answer(_)
    ));
    publish(&publisher, true, "claims");
    assert!(matches!(
        on_frame(&mut conn, frame(ApiKey::Produce, 9, 2, &produce("claims")))
            .await
            .0,
        FrameAction::Forward { .. }
    ));
}

#[tokio::test]
async fn sasl_mechanisms_and_unknown_apis() {
    let (_p, shared) = shared(true);
    let mut conn = Conn::new(shared);
    let hs = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let FrameAction::Answer(a) = on_frame(&mut conn, frame(ApiKey::SaslHandshake, 1, 5, &hs))
        .await
        .0
    else {
        panic!()
    };
    let (_, r): (i32, SaslHandshakeResponse) = response(ApiKey::SaslHandshake, 1, &a);
    assert_eq!(r.error_code, ResponseError::UnsupportedSaslMechanism.code());
    assert_eq!(r.mechanisms, vec![StrBytes::from_static_str("OAUTHBEARER")]);
    // SaslAuthenticate without a handshake: illegal state, then close.
    let auth = SaslAuthenticateRequest::default()
        .with_auth_bytes(Bytes::from_static(b"n,,\x01auth=Bearer x\x01\x01"));
    let FrameAction::AnswerThenClose(a) =
        on_frame(&mut conn, frame(ApiKey::SaslAuthenticate, 2, 6, &auth))
            .await
            .0
    else {
        panic!()
    };
    let (_, r): (i32, SaslAuthenticateResponse) = response(ApiKey::SaslAuthenticate, 2, &a);
    assert_eq!(r.error_code, ResponseError::IllegalSaslState.code());
    // OAUTHBEARER, but no issuer configured: authentication fails with the reason.
    let hs =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("OAUTHBEARER"));
    on_frame(&mut conn, frame(ApiKey::SaslHandshake, 1, 7, &hs)).await;
    let FrameAction::AnswerThenClose(a) =
        on_frame(&mut conn, frame(ApiKey::SaslAuthenticate, 2, 8, &auth))
            .await
            .0
    else {
        panic!()
    };
    let (_, r): (i32, SaslAuthenticateResponse) = response(ApiKey::SaslAuthenticate, 2, &a);
    assert_eq!(r.error_code, ResponseError::SaslAuthenticationFailed.code());
    assert!(r.error_message.unwrap().contains("no OIDC issuer"));
    // Unknown API key: close, as brokers do.
    let mut bogus =
        BytesMut::from(&frame(ApiKey::ApiVersions, 0, 9, &ApiVersionsRequest::default())[..]);
    bogus[0..2].copy_from_slice(&999i16.to_be_bytes());
    assert!(matches!(
        on_frame(&mut conn, bogus.freeze()).await.0,
        FrameAction::Close(_)
    ));
}
