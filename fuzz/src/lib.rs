//! Fixtures shared by the fuzz targets and the seed generator: the policies,
//! the MaskingRules, the OIDC keys and the runtime, each built once per
//! process (libFuzzer calls a target millions of times).
//!
//! Every target feeds its input through the same public API the sidecar's
//! pipeline uses (see `proxy/src/datapath/pipeline.rs`); what each covers is
//! in `docs/fuzzing.md`.
pub mod seeds;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use streamgate_crds::matching::Principal;
use streamgate_crds::{MaskingRuleSpec, SecretKeyRef, StreamPolicySpec, SubjectKind};
use streamgate_proxy::identity::jwt::{OidcConfig, parse_jwks};
use streamgate_proxy::identity::workload::Workload;
use streamgate_proxy::masking::state::MaskingState;
use streamgate_proxy::masking::{HashKey, KeyError, MaskingSet};
use streamgate_proxy::policy::conn::GateShared;
use streamgate_proxy::policy::decide::{MaskingDoc, PolicyDoc};
use streamgate_proxy::policy::{PolicyInputs, PolicyPublisher, policy_channel};

pub const NAMESPACE: &str = "clinical";
/// The topic id Fetch/Produce v13+ use for `patient-events`.
pub const PATIENT_EVENTS_ID: [u8; 16] = [9; 16];
/// The topic id of `secret-ledger` (denied by the authenticated policy).
pub const SECRET_LEDGER_ID: [u8; 16] = [7; 16];
/// The HMAC key of the `Hash` field rule.
pub const HASH_KEY: &[u8] = b"streamgate-fuzz-hmac-key";

/// One current-thread runtime per process (the gate's calls are async but
/// never wait on IO here: no OIDC issuer is configured in the gate fixtures).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The pod the sidecar runs in (workload identity).
pub fn workload() -> Workload {
    Workload {
        service_account: "intake".into(),
        pod_name: Some("intake-1".into()),
        namespace: NAMESPACE.into(),
        labels: BTreeMap::new(),
    }
}

/// No workload identity: before SASL only ApiVersions and SASL are spoken.
pub const PREAUTH_POLICY: &str = r#"
identity: {workloadIdentity: false}
rules:
  - name: anyone
    subjects: [{kind: Group, name: "*"}]
    topics: ["**"]
    operations: [Write, Read, Describe, Create, Admin]
"#;

/// Workload identity accepted; the pod may do anything except touch
/// `secret-*` (a Deny, so trimming and refusals are exercised) and the
/// blocked admin APIs.
pub const AUTHED_POLICY: &str = r#"
identity: {workloadIdentity: true}
rules:
  - name: app
    subjects: [{kind: ServiceAccount, name: intake}]
    topics: ["**"]
    operations: [Write, Read, Describe, Create, Admin]
  - name: no-secrets
    effect: Deny
    subjects: [{kind: ServiceAccount, name: intake}]
    topics: ["secret-*"]
    operations: [Write, Read, Describe, Create, Admin]
blockedOperations: [DeleteTopics, DeleteRecords]
"#;

/// JSON masking on `patient-*` (Fetch and Produce), every strategy and
/// every detector.
pub const JSON_RULE: &str = r#"
topics: ["patient-*"]
format: Json
fields:
  - {path: "$.ssn", strategy: Redact}
  - {path: "$.patient.name", strategy: Partial, keepLast: 2}
  - {path: "$..mrn", strategy: Hash}
  - {path: "$.contacts[*].email", strategy: Redact}
  - {path: "$.internal", strategy: Remove}
detectors: [SSN, Email, Phone, CreditCard, NPI, MRN]
mrnPattern: "MRN-[0-9]{6}"
hashKeySecretRef: {name: masking-key, key: hmac}
exemptSubjects: [{kind: Group, name: clinicians}]
applyTo: [Fetch, Produce]
"#;

/// Free-text masking on `notes-*` (Fetch only).
pub const TEXT_RULE: &str = r#"
topics: ["notes-*"]
format: Text
detectors: [SSN, Email, Phone, CreditCard, NPI]
applyTo: [Fetch]
"#;

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).expect("fixture YAML")
}

pub fn masking_rules() -> Vec<(String, MaskingRuleSpec)> {
    vec![
        ("phi-json".into(), yaml(JSON_RULE)),
        ("phi-text".into(), yaml(TEXT_RULE)),
    ]
}

fn hash_key(_: &SecretKeyRef) -> Result<HashKey, KeyError> {
    HashKey::new(HASH_KEY.to_vec()).ok_or(KeyError::Empty {
        path: "fixture".into(),
    })
}

/// The compiled MaskingRules (keys given directly, no Secret directory).
pub fn masking_set() -> &'static MaskingSet {
    static SET: OnceLock<MaskingSet> = OnceLock::new();
    SET.get_or_init(|| {
        let (set, errors) = MaskingSet::compile(NAMESPACE, &masking_rules(), hash_key);
        assert!(errors.is_empty(), "{errors:?}");
        set
    })
}

/// A reader the rules mask for.
pub fn reader() -> Principal {
    Principal {
        kind: SubjectKind::User,
        name: "billing-bot".into(),
        groups: vec!["billing".into()],
        ..streamgate_proxy::identity::nobody()
    }
}

/// A reader every rule exempts (sees clear text).
pub fn clinician() -> Principal {
    Principal {
        kind: SubjectKind::User,
        name: "dr-who".into(),
        groups: vec!["clinicians".into()],
        ..streamgate_proxy::identity::nobody()
    }
}

/// Topic-id → name for Fetch/Produce v13+ (what the sidecar learns from Metadata).
pub fn topic_name(id: &uuid::Uuid) -> Option<String> {
    match *id.as_bytes() {
        PATIENT_EVENTS_ID => Some("patient-events".into()),
        SECRET_LEDGER_ID => Some("secret-ledger".into()),
        _ => None,
    }
}

/// The gate's shared state for one policy, and the masking state (with its
/// Secret directory) the pipeline would use.
pub struct GateFixture {
    /// Kept so the policy channel stays open.
    _publisher: PolicyPublisher,
    pub shared: Arc<GateShared>,
    pub masking: MaskingState,
    /// Kept so the Secret directory outlives the fixture.
    _secret_dir: tempfile::TempDir,
}

impl std::fmt::Debug for GateFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateFixture").finish_non_exhaustive()
    }
}

fn gate_fixture(policy: &str) -> GateFixture {
    let (publisher, handle) = policy_channel(BTreeMap::new());
    let spec: StreamPolicySpec = yaml(policy);
    publisher.publish(
        "fuzz",
        PolicyInputs {
            policies: vec![PolicyDoc {
                name: "p".into(),
                namespace: NAMESPACE.into(),
                generation: Some(1),
                spec,
            }],
            masking: masking_rules()
                .into_iter()
                .map(|(name, spec)| MaskingDoc {
                    name,
                    namespace: NAMESPACE.into(),
                    generation: Some(1),
                    spec,
                })
                .collect(),
            ..Default::default()
        },
    );
    let shared = GateShared::new(handle, Some(workload()), false);
    shared.topic_names.learn(
        uuid::Uuid::from_bytes(PATIENT_EVENTS_ID),
        "patient-events".into(),
    );
    shared.topic_names.learn(
        uuid::Uuid::from_bytes(SECRET_LEDGER_ID),
        "secret-ledger".into(),
    );
    let secret_dir = tempfile::tempdir().expect("secret dir");
    let key_dir = secret_dir.path().join("masking-key");
    std::fs::create_dir(&key_dir).expect("secret dir");
    std::fs::write(key_dir.join("hmac"), HASH_KEY).expect("secret dir");
    let masking = MaskingState::new(Some(secret_dir.path().to_path_buf()));
    GateFixture {
        _publisher: publisher,
        shared,
        masking,
        _secret_dir: secret_dir,
    }
}

/// Unauthenticated callers (no workload identity in the policy).
pub fn preauth() -> &'static GateFixture {
    static F: OnceLock<GateFixture> = OnceLock::new();
    F.get_or_init(|| gate_fixture(PREAUTH_POLICY))
}

/// The pod's ServiceAccount, allowed nearly everything, plus the MaskingRules.
pub fn authed() -> &'static GateFixture {
    static F: OnceLock<GateFixture> = OnceLock::new();
    F.get_or_init(|| gate_fixture(AUTHED_POLICY))
}

/// RFC 7515 appendix A.3: an ES256 key and a token signed with it (issuer
/// `joe`, expired, no audience), so the verifier gets past the signature.
pub const RFC7515_ES256_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

/// The issuer's key set: the RFC 7515 A.3 P-256 key (also under kid `k1`).
pub fn jwks() -> &'static [Jwk] {
    static KEYS: OnceLock<Vec<Jwk>> = OnceLock::new();
    KEYS.get_or_init(|| {
        parse_jwks(&serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        }]}))
    })
}

pub fn oidc_config() -> OidcConfig {
    OidcConfig {
        issuer: "joe".into(),
        audiences: vec!["kafka".into()],
        username_claim: "sub".into(),
        groups_claim: "groups".into(),
        leeway: Duration::from_secs(30),
        min_refresh_interval: Duration::from_secs(10),
        // `verify_with_keys` fetches nothing, so the transport is never checked.
        allow_insecure: false,
    }
}

// ---------------------------------------------------------------------------
// The request gate (targets `request_gate_preauth` and `request_gate_authed`)
// ---------------------------------------------------------------------------

use bytes::Bytes;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::{ApiKey, RequestKind, SaslHandshakeRequest};
use kafka_protocol::protocol::Decodable;
use streamgate_crds::ApplyTo;
use streamgate_proxy::datapath::exchange::Request;
use streamgate_proxy::kafka::codec::{RequestMeta, encode_response, split_request, split_response};
use streamgate_proxy::kafka::guard;
use streamgate_proxy::kafka::refusal::refuse_produce;
use streamgate_proxy::masking::mask_produce_request;
use streamgate_proxy::identity::stage::{Admission, Identity};
use streamgate_proxy::policy::conn::{ConnGate, FrameAction};

/// One connection's request side before masking: the identity stage, then
/// the policy gate with the caller it named.
struct Conn {
    identity: Identity,
    gate: ConnGate,
}

impl Conn {
    fn new(shared: &Arc<GateShared>) -> Self {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 50000));
        Conn {
            identity: Identity::new(Arc::clone(&shared.identity), peer),
            gate: ConnGate::new(Arc::clone(shared)),
        }
    }

    /// Identity, then policy: `Err(Some(answer))` answered by identity,
    /// `Err(None)` closed there.
    async fn on_request(
        &mut self,
        shared: &GateShared,
        request: &mut Request,
    ) -> Result<FrameAction, Option<Bytes>> {
        let policy = shared.policy.current();
        match self.identity.on_request(&policy, request).await {
            Ok(Admission::Proceed) => {}
            Ok(Admission::Answer(a) | Admission::AnswerThenClose(a)) => return Err(Some(a)),
            Ok(Admission::Close { .. }) | Err(_) => return Err(None),
        }
        let caller = Arc::clone(self.identity.caller());
        self.gate
            .on_request(&caller, &policy, request)
            .map_err(|_| None)
    }
}

/// At most this many frames per input (a SASL exchange is two or three).
const MAX_FRAMES: usize = 4;

/// One fuzz input through the request side of the pipeline: identity
/// (`Identity::on_request`) and policy (`ConnGate::on_request`), then the
/// Produce masking stage, then the frame as it would go upstream
/// (`Request::into_frame`).
///
/// The input is one client frame without its length prefix. The bytes after
/// a SaslHandshake request's body are the *next* frame on the connection (a
/// raw token after a v0 handshake, a SaslAuthenticate or any request after
/// v1), so one input can drive a whole SASL exchange.
///
/// Checked besides "no panic": every answer the gate makes locally decodes
/// at the client's version, and a request the gate re-encoded decodes again.
pub fn gate_input(fixture: &GateFixture, data: &[u8]) {
    let mut frame = Bytes::copy_from_slice(data);
    runtime().block_on(async {
        let mut conn = Conn::new(&fixture.shared);
        for _ in 0..MAX_FRAMES {
            if conn.identity.expects_raw_token() {
                // After SaslHandshake v0 the token comes as a bare frame.
                let policy = fixture.shared.policy.current();
                let _ = conn.identity.on_raw_token(&policy, &frame).await;
                return;
            }
            let Some(next) = gate_frame(fixture, &mut conn, frame).await else {
                return;
            };
            frame = next;
        }
    });
}

/// One frame through the gate; `Some(rest)`: the bytes after a SaslHandshake body.
async fn gate_frame(fixture: &GateFixture, conn: &mut Conn, frame: Bytes) -> Option<Bytes> {
    let meta = RequestMeta::peek(&frame).ok()?;
    let next = (meta.api_key == ApiKey::SaslHandshake)
        .then(|| trailing_after_handshake(&frame, &meta))
        .flatten();
    let mut request = Request::new(meta.clone(), frame.clone());
    let action = match conn.on_request(&fixture.shared, &mut request).await {
        Ok(action) => action,
        Err(Some(answer)) => {
            check_answer(&meta, &answer);
            return next.filter(|n| !n.is_empty());
        }
        Err(None) => return None,
    };
    match action {
        FrameAction::Forward { fixup: _ } => {
            if meta.api_key == ApiKey::Produce {
                if let Some(answer) = mask_produce(fixture, conn, &mut request) {
                    check_answer(&meta, &answer);
                    return next;
                }
            }
            if let Ok(out) = request.into_frame() {
                if out != frame {
                    check_request(&meta, &out);
                }
            }
        }
        FrameAction::Answer(answer) => {
            check_answer(&meta, &answer);
        }
        FrameAction::Silent | FrameAction::Close(_) => return None,
    }
    next.filter(|n| !n.is_empty())
}

fn trailing_after_handshake(frame: &Bytes, meta: &RequestMeta) -> Option<Bytes> {
    let (_, mut body) = split_request(frame, meta).ok()?;
    SaslHandshakeRequest::decode(&mut body, meta.api_version).ok()?;
    Some(body)
}

/// The pipeline's masking stage for a forwarded Produce (`applyTo: Produce`):
/// records masked in place, or the whole request refused (`Some(answer)`).
fn mask_produce(fixture: &GateFixture, conn: &Conn, request: &mut Request) -> Option<Bytes> {
    let policy = fixture.shared.policy.current();
    let set = fixture.masking.for_policy(&policy);
    if !set.has_rules_for(ApplyTo::Produce) {
        return None;
    }
    let meta = request.meta().clone();
    let principal = conn.identity.caller().masking_subject();
    let RequestKind::Produce(produce) = request.body().ok()? else {
        return None;
    };
    let by_id = meta.api_version >= 13;
    let name = |t: &TopicProduceData| {
        if by_id {
            topic_name(&t.topic_id)
        } else {
            Some(t.name.0.to_string())
        }
    };
    match mask_produce_request(&set, &principal, produce, name) {
        Ok(masked) => {
            if masked.changed {
                request.changed();
            }
            None
        }
        Err(failures) => {
            let refusal = refuse_produce(produce, "fuzz", |_, p| {
                failures
                    .iter()
                    .find(|f| f.partition == p)
                    .map_or(0, |f| f.error_code)
            });
            encode_response(
                meta.correlation_id,
                meta.response_header_version(),
                &refusal,
                meta.api_version,
            )
            .ok()
        }
    }
}

/// A frame the gate encoded for the broker must decode as what it claims to be.
pub fn check_request(meta: &RequestMeta, out: &Bytes) {
    let again = RequestMeta::peek(out).expect("re-encoded request has a header");
    assert_eq!(&again, meta, "re-encoded request keeps its header");
    let (_, mut body) = split_request(out, meta).expect("re-encoded request header decodes");
    if let Err(e) = guard::request(meta.api_key, &mut body, meta.api_version) {
        panic!(
            "{:?} v{} re-encoded by the gate does not decode: {e}",
            meta.api_key, meta.api_version
        );
    }
}

/// A local answer must be readable by the client that asked.
pub fn check_answer(meta: &RequestMeta, answer: &Bytes) {
    if answer.is_empty() {
        return; // the empty frame that acknowledges a raw v0 token
    }
    let (header, mut body) = split_response(answer, meta.response_header_version())
        .expect("a local answer's header decodes");
    assert_eq!(header.correlation_id, meta.correlation_id);
    if let Err(e) = guard::response(meta.api_key, &mut body, meta.api_version) {
        panic!(
            "local answer to {:?} v{} does not decode at that version: {e}",
            meta.api_key, meta.api_version
        );
    }
}

// ---------------------------------------------------------------------------
// Frames: encoders shared by the seed generator and the response fixtures
// ---------------------------------------------------------------------------

use bytes::BytesMut;
use kafka_protocol::messages::{RequestHeader, ResponseKind};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use streamgate_proxy::datapath::exchange::Response;
use streamgate_proxy::policy::conn::ResponseFixup;

/// A request frame (header + body, no length prefix); `None` when the
/// message cannot be encoded at that version.
pub fn request_frame<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &R,
) -> Option<Bytes> {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("fuzz-seed")))
        .encode(&mut out, key.request_header_version(version))
        .ok()?;
    req.encode(&mut out, version).ok()?;
    Some(out.freeze())
}

/// A response frame (header + body, no length prefix).
pub fn response_frame<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    resp: &R,
) -> Option<Bytes> {
    encode_response(
        correlation_id,
        key.response_header_version(version),
        resp,
        version,
    )
    .ok()
}

/// One RecordBatch v2 holding `values` (and a key and a header on each record).
pub fn record_batch(values: &[&[u8]], compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 9,
            producer_epoch: 1,
            sequence: i as i32,
            timestamp_type: TimestampType::Creation,
            offset: 42 + i as i64,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("patient-{i}"))),
            value: Some(Bytes::copy_from_slice(v)),
            headers: [(
                StrBytes::from_static_str("trace"),
                Some(Bytes::from_static(b"abc")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("record batch");
    out.freeze()
}

/// Every codec kafka-protocol writes.
pub const COMPRESSIONS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// Record values with PHI in every shape the rules look for.
pub const PHI_VALUES: &[&str] = &[
    r#"{"ssn":"838-39-8865","ok":1}"#,
    r#"{"patient":{"name":"Ada Lovelace","dob":"1815-12-10"},"mrn":"MRN-123456"}"#,
    r#"{"contacts":[{"email":"ada@example.org","phone":"(555) 123-4567"},{"email":"b@example.com"}],"internal":{"x":1}}"#,
    r#"{"note":"card 4111 1111 1111 1111, NPI 1234567893, call 555-123-4567","visit":{"mrn":"MRN-654321"}}"#,
    r#"{"ssn":null,"n":12345678901234567890,"f":-1.5e300,"s":"\u00e9\ud83d\ude00"}"#,
    r#"[1,2,{"ssn":"123-45-6789"}]"#,
    "free text: SSN 838-39-8865, mail ada@example.org",
];

/// The policy's response work for a forwarded request that the authed gate
/// trimmed (a topic under `secret-*` cut out): what `ResponseFixup::apply`
/// merges back into the broker's answer.
pub fn fixup_for(frame: Bytes) -> Option<ResponseFixup> {
    let fixture = authed();
    runtime().block_on(async {
        let mut conn = Conn::new(&fixture.shared);
        let meta = RequestMeta::peek(&frame).ok()?;
        let mut request = Request::new(meta, frame);
        match conn.on_request(&fixture.shared, &mut request).await {
            Ok(FrameAction::Forward { fixup }) => fixup,
            _ => None,
        }
    })
}

/// A response frame the pipeline re-encoded must decode at the client's version.
pub fn check_response(meta: &RequestMeta, out: &Bytes) {
    // The header is the broker's (its correlation id is checked by the connection loop).
    let (_, mut body) =
        split_response(out, meta.response_header_version()).expect("re-encoded response header");
    if let Err(e) = guard::response(meta.api_key, &mut body, meta.api_version) {
        panic!(
            "{:?} v{} response re-encoded by the pipeline does not decode: {e}",
            meta.api_key, meta.api_version
        );
    }
}

/// The response side for Fetch and Produce, as `pipeline::response` runs it
/// with masking on: the policy fixup (when the request was trimmed), the
/// Fetch masking (`datapath/apis/fetch.rs`: names before v13, ids after; a
/// response decoded leniently is re-encoded), then the frame for the client.
/// `Err` where the pipeline would close the connection.
pub fn response_path(
    meta: &RequestMeta,
    frame: Bytes,
    fixup: Option<&ResponseFixup>,
    principal: &Principal,
) -> Result<Bytes, String> {
    let mut response = Response::new(meta.clone(), frame);
    if let Some(fixup) = fixup {
        fixup.apply(&mut response).map_err(|e| e.to_string())?;
    }
    match meta.api_key {
        ApiKey::Fetch => {
            let by_id = meta.api_version >= 13;
            let fetched = match response.body().map_err(|e| e.to_string())? {
                ResponseKind::Fetch(fetched) => fetched,
                _ => return Err("not a Fetch response".into()),
            };
            let masked = streamgate_proxy::masking::mask_fetch_response(
                masking_set(),
                principal,
                fetched,
                |t| {
                    if by_id {
                        topic_name(&t.topic_id)
                    } else {
                        Some(t.topic.0.to_string())
                    }
                },
            );
            if masked.changed || response.was_lenient() {
                response.changed();
            }
        }
        ApiKey::Produce if meta.api_version >= 10 => {
            response.body().map_err(|e| e.to_string())?;
        }
        _ => {}
    }
    response.into_frame().map_err(|e| e.to_string())
}

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};

/// The topics the fixtures know: (name, id).
pub const TOPICS: [(&str, [u8; 16]); 2] = [
    ("patient-events", PATIENT_EVENTS_ID),
    ("secret-ledger", SECRET_LEDGER_ID),
];

/// A Fetch of `topics` (by name before v13, by id from v13).
pub fn fetch_request(topics: &[(&str, [u8; 16])]) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(
            topics
                .iter()
                .map(|(name, id)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string((*name).into())))
                        .with_topic_id(uuid::Uuid::from_bytes(*id))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(42)
                                .with_partition_max_bytes(1 << 20),
                        ])
                })
                .collect(),
        )
}

/// A Produce of `records` to each of `topics` (names before v13, ids from v13).
pub fn produce_request(topics: &[(&str, [u8; 16])], acks: i16, records: &Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(
            topics
                .iter()
                .map(|(name, id)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string((*name).into())))
                        .with_topic_id(uuid::Uuid::from_bytes(*id))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(records.clone())),
                        ])
                })
                .collect(),
        )
}

// ---------------------------------------------------------------------------
// Record batches (targets `record_batch_masking` and `record_batch_codecs`)
// ---------------------------------------------------------------------------

use streamgate_proxy::kafka::record_batch::{ATTRIBUTES_AT, CRC_AT, HEADER_LEN, LENGTH_AT};
use streamgate_proxy::masking::MaskPlan;

/// The plan a masked reader gets on `patient-events` (JSON rule) and on
/// `notes-*` (Text rule), Fetch direction.
pub fn plans() -> &'static [MaskPlan; 2] {
    static P: OnceLock<[MaskPlan; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let set = masking_set();
        let plan = |topic| {
            set.plan_for(topic, &reader(), ApplyTo::Fetch)
                .expect("plan")
        };
        [plan("patient-events"), plan("notes-2024")]
    })
}

/// `records` with every complete batch's CRC32C recomputed, so that mutated
/// batches get past the checksum to the code behind it. `None` when no CRC
/// had to change.
pub fn fix_crcs(records: &[u8]) -> Option<Vec<u8>> {
    let mut out = records.to_vec();
    let mut pos = 0;
    let mut changed = false;
    while pos + LENGTH_AT + 4 <= out.len() {
        let len = i32::from_be_bytes(out[pos + LENGTH_AT..pos + LENGTH_AT + 4].try_into().ok()?);
        let Ok(len) = usize::try_from(len) else {
            break;
        };
        let end = pos + LENGTH_AT + 4 + len;
        if end > out.len() || end < pos + HEADER_LEN {
            break;
        }
        let crc = crc32c::crc32c(&out[pos + ATTRIBUTES_AT..end]).to_be_bytes();
        if out[pos + CRC_AT..pos + CRC_AT + 4] != crc {
            out[pos + CRC_AT..pos + CRC_AT + 4].copy_from_slice(&crc);
            changed = true;
        }
        pos = end;
    }
    changed.then_some(out)
}
