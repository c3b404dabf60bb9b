//! The per-connection gate on raw frames: SASL termination, who the caller
//! is, and policy enforcement — everything the connection loop needs from
//! identity and policy, behind two calls:
//!
//! - [`ConnGate::on_request`] with each client frame (size prefix removed)
//!   → a [`FrameAction`]: forward (maybe rewritten) with an optional
//!   [`ResponseFixup`] to keep with the in-flight request, answer locally
//!   (nothing forwarded), answer and close, say nothing, or close;
//! - [`ResponseFixup::apply`] on the broker's response frame to that request.
//!
//! Identity per request: the SASL session's principal when the client
//! authenticated; otherwise the pod's ServiceAccount when the policy in force
//! allows workload identity; otherwise the caller is *unauthenticated*: it
//! may send ApiVersions and SASL only, and any other request closes the
//! connection before its body is decoded (as a broker's SASL listener does).
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestKind, ResponseHeader, ResponseKind, api_versions_response,
};
use kafka_protocol::protocol::Encodable;
use streamgate_crds::matching::Principal;
use uuid::Uuid;

use super::apis::api_scope;
use super::decide::{CompiledPolicy, DenyReason};
use super::enforce::{Enforcement, Fixup, Gate, TopicDecision, TopicNames, needs_decoding};
use super::handle::PolicyHandle;
use crate::datapath::exchange::{Request, Response};
use crate::identity::jwt::{IssuerSet, OidcConfig};
use crate::identity::nobody;
use crate::identity::saml::{SamlConfig, SamlSet, Verifiers};
use crate::identity::sasl::SaslServer;
use crate::identity::workload::Workload;
use crate::kafka::codec::{FrameError, RequestMeta};
use kafka_protocol::ResponseError;

static NOBODY_POLICY: LazyLock<CompiledPolicy> = LazyLock::new(CompiledPolicy::empty);

/// Why a frame could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
}

fn malformed(what: &'static str) -> impl FnOnce(anyhow::Error) -> GateError {
    move |e| GateError::Malformed {
        what,
        message: e.to_string(),
    }
}

fn frame_error(e: FrameError) -> GateError {
    GateError::Malformed {
        what: "request",
        message: e.to_string(),
    }
}

fn not_decoded(what: &'static str) -> GateError {
    GateError::Malformed {
        what,
        message: "decoded as another API".into(),
    }
}

/// Topic ids → names, learned from Metadata responses (Fetch v13+ and
/// friends name topics by id only).
#[derive(Debug, Default)]
pub struct TopicIdMap(std::sync::RwLock<HashMap<Uuid, String>>);

impl TopicIdMap {
    pub fn learn(&self, id: Uuid, name: String) {
        if let Ok(mut m) = self.0.write() {
            m.insert(id, name);
        }
    }
}

impl TopicNames for TopicIdMap {
    fn topic_name(&self, id: &Uuid) -> Option<String> {
        self.0.read().ok()?.get(id).cloned()
    }
}

/// State shared by every connection of the sidecar.
pub struct GateShared {
    pub policy: PolicyHandle,
    /// The pod's identity, when known (workload identity).
    pub workload: Option<Workload>,
    /// Topic-id → name map learned from Metadata responses.
    pub topic_names: Arc<TopicIdMap>,
    issuers: Mutex<IssuerSet>,
    /// SAML IdPs (issue 16), beside the OIDC issuers.
    saml_idps: Mutex<SamlSet>,
    /// `--allow-insecure-issuers`: http:// issuers are trusted too.
    allow_insecure_issuers: bool,
}

impl std::fmt::Debug for GateShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateShared")
            .field("workload", &self.workload)
            .finish_non_exhaustive()
    }
}

impl GateShared {
    /// `allow_insecure_issuers`: trust `http://` OIDC issuers
    /// (`--allow-insecure-issuers`); otherwise only `https://` ones.
    pub fn new(
        policy: PolicyHandle,
        workload: Option<Workload>,
        allow_insecure_issuers: bool,
    ) -> Arc<Self> {
        Arc::new(GateShared {
            policy,
            workload,
            topic_names: Arc::default(),
            issuers: Mutex::new(IssuerSet::default()),
            saml_idps: Mutex::new(SamlSet::default()),
            allow_insecure_issuers,
        })
    }

    /// The verifiers for the issuers and SAML IdPs the current policy
    /// accepts; key caches survive policy reloads that keep one.
    fn issuers(&self, policy: &CompiledPolicy) -> Verifiers {
        Verifiers {
            oidc: self.oidc_issuers(policy),
            saml: self.saml_idps(policy),
        }
    }

    fn saml_idps(&self, policy: &CompiledPolicy) -> SamlSet {
        let configs: Vec<SamlConfig> = policy
            .saml()
            .into_iter()
            .map(|s| SamlConfig {
                allow_insecure: self.allow_insecure_issuers,
                ..SamlConfig::from(s)
            })
            .collect();
        let mut guard = self
            .saml_idps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = guard.reconcile(configs);
        guard.clone()
    }

    fn oidc_issuers(&self, policy: &CompiledPolicy) -> IssuerSet {
        let configs: Vec<OidcConfig> = policy
            .oidc()
            .into_iter()
            .map(|o| OidcConfig {
                allow_insecure: self.allow_insecure_issuers,
                ..OidcConfig::from(o)
            })
            .collect();
        let mut guard = self
            .issuers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = guard.reconcile(configs);
        guard.clone()
    }
}

/// What the connection does with a client frame.
#[derive(Debug)]
pub enum FrameAction {
    /// Send the request upstream (as trimmed). Keep `fixup` with the
    /// in-flight request and run it on the response; `None` means the
    /// response passes as it is. (An acks=0 Produce still expects no
    /// response: the Produce stage's peek decides.)
    Forward { fixup: Option<ResponseFixup> },
    /// Answer the client with this frame (correlation id included); forward nothing.
    Answer(Bytes),
    /// Answer, then close the connection (failed authentication).
    AnswerThenClose(Bytes),
    /// Forward nothing and answer nothing (an acks=0 Produce refused).
    Silent,
    /// Close the connection (unknown API, broken SASL exchange, expired session).
    Close(String),
}

/// Work left for the response of a forwarded request.
#[derive(Debug)]
pub struct ResponseFixup {
    fixup: Fixup,
    policy: Arc<CompiledPolicy>,
    principal: Option<Principal>,
    topic_names: Arc<TopicIdMap>,
}

impl ResponseFixup {
    /// Merge refusals into the broker's response, filter what the caller may
    /// not see, advertise SASL in ApiVersions.
    pub fn apply(&self, response: &mut Response) -> Result<(), GateError> {
        if response.meta().api_key == ApiKey::ApiVersions {
            // An UNSUPPORTED_VERSION answer offers no versions to add to: the
            // client retries at a version the broker knows.
            if let Ok(ResponseKind::ApiVersions(versions)) = response.body()
                && versions.error_code != ResponseError::UnsupportedVersion.code()
            {
                advertise_sasl(versions);
                response.changed();
            }
            return Ok(());
        }
        let body = response.body().map_err(|e| GateError::Malformed {
            what: "response",
            message: e.to_string(),
        })?;
        let nobody = nobody();
        let principal = self.principal.as_ref().unwrap_or(&nobody);
        let policy: &CompiledPolicy = if self.principal.is_some() {
            &self.policy
        } else {
            &NOBODY_POLICY
        };
        let gate = Gate {
            policy,
            principal,
            topic_names: self.topic_names.as_ref(),
        };
        if self.fixup.apply(&gate, body) {
            response.changed();
        }
        Ok(())
    }
}

/// The sidecar answers SaslHandshake and SaslAuthenticate itself, so it
/// offers them whatever the broker does (KIP-368 needs SaslAuthenticate v1+);
/// APIs it refuses whatever the policy says are not offered at all.
fn advertise_sasl(response: &mut ApiVersionsResponse) {
    response.api_keys.retain(|k| {
        k.api_key != ApiKey::SaslHandshake as i16
            && k.api_key != ApiKey::SaslAuthenticate as i16
            && !api_scope(k.api_key).is_refused()
    });
    for (key, max) in [(ApiKey::SaslHandshake, 1), (ApiKey::SaslAuthenticate, 2)] {
        response.api_keys.push(
            api_versions_response::ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(0)
                .with_max_version(max),
        );
    }
}

fn encode_response(
    correlation_id: i32,
    header_version: i16,
    version: i16,
    body: &ResponseKind,
) -> Result<Bytes, GateError> {
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, header_version)
        .map_err(malformed("local response header"))?;
    body.encode(&mut out, version)
        .map_err(malformed("local response"))?;
    Ok(out.freeze())
}

/// Identity and policy state of one client connection.
#[derive(Debug)]
pub struct ConnGate {
    shared: Arc<GateShared>,
    sasl: SaslServer,
    decisions: Vec<TopicDecision>,
    /// The caller had an identity on this connection at some point.
    was_authenticated: bool,
    /// Why the last request was refused, for its audit record.
    refusal: Option<String>,
}

impl ConnGate {
    pub fn new(shared: Arc<GateShared>) -> Self {
        ConnGate {
            shared,
            sasl: SaslServer::new(),
            decisions: Vec::new(),
            was_authenticated: false,
            refusal: None,
        }
    }

    /// The caller of this connection right now (None: unauthenticated).
    pub fn principal(&self, policy: &CompiledPolicy) -> Option<Principal> {
        if let Some(s) = self.sasl.session() {
            return Some(s.principal.clone());
        }
        match &self.shared.workload {
            Some(w) if policy.workload_identity_allowed() => Some(w.principal()),
            _ => None,
        }
    }

    /// Whether the caller is someone now (SASL session, or workload identity
    /// the policy in force accepts).
    pub fn is_authenticated(&self) -> bool {
        self.principal(&self.shared.policy.current()).is_some()
    }

    /// The per-topic decisions of the last request (for approvals).
    pub fn decisions(&self) -> &[TopicDecision] {
        &self.decisions
    }

    /// Why the last request was refused, when it was (for audit).
    pub fn take_refusal(&mut self) -> Option<String> {
        self.refusal.take()
    }

    /// The per-topic decisions of the last request (for audit).
    pub fn take_decisions(&mut self) -> Vec<TopicDecision> {
        std::mem::take(&mut self.decisions)
    }

    /// The SASL state (KIP-368 session expiry, principal).
    pub fn sasl(&self) -> &SaslServer {
        &self.sasl
    }

    /// SaslHandshake v0: the frame after the handshake is the bare token,
    /// with no Kafka header; the answer is an empty frame, or the connection closes.
    pub async fn on_raw_token(&mut self, frame: &Bytes) -> FrameAction {
        let policy = self.shared.policy.current();
        let issuers = self.shared.issuers(&policy);
        match self.sasl.raw_token(&issuers, frame).await {
            Ok(_) => FrameAction::Answer(Bytes::new()),
            Err(e) => FrameAction::Close(format!("SASL authentication failed: {e}")),
        }
    }

    /// Handle one client request: SASL answered, policy enforced (the body
    /// decoded only for APIs whose topics are checked, and trimmed in place).
    pub async fn on_request(&mut self, request: &mut Request) -> Result<FrameAction, GateError> {
        let RequestMeta {
            api_key,
            api_version: version,
            correlation_id,
        } = *request.meta();
        let raw_key = api_key as i16;
        // Decisions are per request: a request answered before the policy
        // check (SASL, a closed connection) has none.
        self.decisions.clear();
        self.refusal = None;
        let is_sasl = matches!(api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
        if !is_sasl && self.sasl.session_expired(SystemTime::now()) {
            let why = "SASL session expired without re-authentication (KIP-368)".to_string();
            self.refusal = Some(format!("{why}; connection closed"));
            return Ok(FrameAction::Close(why));
        }
        if !is_sasl && self.sasl.in_progress() {
            return Ok(FrameAction::Close(format!(
                "{api_key:?} in the middle of a SASL exchange"
            )));
        }
        let answer = |resp: ResponseKind| {
            encode_response(
                correlation_id,
                api_key.response_header_version(version),
                version,
                &resp,
            )
        };
        match api_key {
            ApiKey::SaslHandshake => {
                let RequestKind::SaslHandshake(req) = request.body().map_err(frame_error)? else {
                    return Err(not_decoded("SaslHandshake"));
                };
                let resp = self.sasl.handshake(version, req);
                return Ok(FrameAction::Answer(answer(ResponseKind::SaslHandshake(
                    resp,
                ))?));
            }
            ApiKey::SaslAuthenticate => {
                let RequestKind::SaslAuthenticate(req) = request.body().map_err(frame_error)?
                else {
                    return Err(not_decoded("SaslAuthenticate"));
                };
                let policy = self.shared.policy.current();
                let issuers = self.shared.issuers(&policy);
                let out = self
                    .sasl
                    .authenticate(&issuers, req, SystemTime::now())
                    .await;
                if out.close {
                    // The audit record's reason: what the client is told
                    // (which check failed; never the token).
                    self.refusal = out.response.error_message.as_ref().map(|m| m.to_string());
                }
                let frame = answer(ResponseKind::SaslAuthenticate(out.response))?;
                return Ok(if out.close {
                    FrameAction::AnswerThenClose(frame)
                } else {
                    FrameAction::Answer(frame)
                });
            }
            _ => {}
        }
        let policy = self.shared.policy.current();
        let principal = self.principal(&policy);
        if principal.is_some() {
            self.was_authenticated = true;
        } else if api_key != ApiKey::ApiVersions && !self.was_authenticated {
            // As a SASL listener of a broker does: before authentication only
            // ApiVersions and SASL are spoken, and nothing else is decoded.
            // (A connection that had an identity and lost it — workload
            // identity switched off — gets authorization errors instead, so
            // its app sees why.)
            let why = format!(
                "{api_key:?} before authentication (only ApiVersions and SASL are accepted until then)"
            );
            self.refusal = Some(format!(
                "{}: {why}; connection closed",
                DenyReason::Unauthenticated.as_str()
            ));
            return Ok(FrameAction::Close(why));
        }
        let nobody = nobody();
        let gate = Gate {
            policy: if principal.is_some() {
                &policy
            } else {
                &NOBODY_POLICY
            },
            principal: principal.as_ref().unwrap_or(&nobody),
            topic_names: self.shared.topic_names.as_ref(),
        };
        let checked = if needs_decoding(raw_key) {
            let body = request.body().map_err(frame_error)?;
            gate.check(api_key, version, body)
        } else {
            gate.check_key(raw_key)
        };
        self.decisions = checked.decisions;
        Ok(match checked.enforcement {
            Enforcement::Forward(fixup) => {
                if fixup.request_changed() {
                    // Trimmed: encoded once, when the request leaves the pipeline.
                    request.changed();
                }
                let advertise = api_key == ApiKey::ApiVersions;
                let fixup = (advertise || fixup.needs_response_work()).then(|| ResponseFixup {
                    fixup,
                    policy: Arc::clone(&policy),
                    principal: principal.clone(),
                    topic_names: Arc::clone(&self.shared.topic_names),
                });
                FrameAction::Forward { fixup }
            }
            Enforcement::Respond(resp) => {
                self.refusal = Some(format!(
                    "{api_key:?} refused: answered with its authorization error"
                ));
                FrameAction::Answer(answer(resp)?)
            }
            Enforcement::NoResponse => {
                self.refusal = Some(format!("{api_key:?} refused (acks=0: no answer)"));
                FrameAction::Silent
            }
            Enforcement::Close(reason) => {
                let why = format!("{api_key:?}: {}", reason.as_str());
                self.refusal = Some(format!("{why}; connection closed"));
                FrameAction::Close(why)
            }
        })
    }
}
