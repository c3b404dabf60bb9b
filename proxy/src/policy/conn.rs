//! The per-connection policy gate, behind two calls:
//!
//! - [`ConnGate::on_request`] with each client request and its [`Caller`]
//!   (named by the identity stage, `crate::identity::stage`) → a
//!   [`FrameAction`]: forward (maybe rewritten) with an optional
//!   [`ResponseFixup`] to keep with the in-flight request, answer locally
//!   (nothing forwarded), say nothing, or close;
//! - [`ResponseFixup::apply`] on the broker's response frame to that request.
//!
//! An unauthenticated caller reaching policy (ApiVersions, or a connection
//! that lost its workload identity) is checked against an empty policy.
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind, api_versions_response};
use streamgate_crds::matching::Principal;
use uuid::Uuid;

use super::apis::api_scope;
use super::decide::{BreakGlass, CompiledPolicy};
use super::enforce::{Enforcement, Fixup, Gate, TopicDecision, TopicNames, needs_decoding};
use super::handle::PolicyHandle;
use crate::datapath::exchange::{Request, Response};
use crate::identity::caller::Caller;
use crate::identity::nobody;
use crate::identity::stage::IdentityShared;
use crate::identity::workload::Workload;
use crate::kafka::codec::{FrameError, encode_local_response};

static NOBODY_POLICY: LazyLock<CompiledPolicy> = LazyLock::new(CompiledPolicy::empty);

/// Why a frame could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
}

fn frame_error(e: FrameError) -> GateError {
    GateError::Malformed {
        what: "request",
        message: e.to_string(),
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

/// State shared by every connection's request side: the policy in force,
/// the topic names learned, and what the identity stage shares.
pub struct GateShared {
    pub policy: PolicyHandle,
    /// Topic-id → name map learned from Metadata responses.
    pub topic_names: Arc<TopicIdMap>,
    /// Workload identity and the OIDC validators.
    pub identity: Arc<IdentityShared>,
}

impl std::fmt::Debug for GateShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateShared")
            .field("identity", &self.identity)
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
            topic_names: Arc::default(),
            identity: Arc::new(IdentityShared::new(workload, allow_insecure_issuers)),
        })
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
    /// Forward nothing and answer nothing (an acks=0 Produce refused).
    Silent,
    /// Close the connection (an API the proxy does not know or refuses).
    Close(String),
}

/// Work left for the response of a forwarded request.
#[derive(Debug)]
pub struct ResponseFixup {
    fixup: Fixup,
    policy: Arc<CompiledPolicy>,
    principal: Option<Principal>,
    break_glass: Option<BreakGlass>,
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
            break_glass: self.break_glass.as_ref(),
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

/// The policy state of one client connection.
#[derive(Debug)]
pub struct ConnGate {
    shared: Arc<GateShared>,
    decisions: Vec<TopicDecision>,
    /// Why the last request was refused, for its audit record.
    refusal: Option<String>,
}

impl ConnGate {
    pub fn new(shared: Arc<GateShared>) -> Self {
        ConnGate {
            shared,
            decisions: Vec::new(),
            refusal: None,
        }
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

    /// Enforce `policy` on one request of `caller` (the body decoded only
    /// for APIs whose topics are checked, and trimmed in place).
    pub fn on_request(
        &mut self,
        caller: &Caller,
        policy: &Arc<CompiledPolicy>,
        request: &mut Request,
    ) -> Result<FrameAction, GateError> {
        let meta = request.meta().clone();
        let api_key = meta.api_key;
        let raw_key = api_key as i16;
        // Decisions are per request.
        self.decisions.clear();
        self.refusal = None;
        let principal = caller.principal.as_ref();
        let nobody = nobody();
        let gate = Gate {
            policy: if principal.is_some() {
                policy
            } else {
                &NOBODY_POLICY
            },
            principal: principal.unwrap_or(&nobody),
            break_glass: caller.break_glass.as_ref(),
            topic_names: self.shared.topic_names.as_ref(),
        };
        let checked = if needs_decoding(raw_key) {
            let body = request.body().map_err(frame_error)?;
            gate.check(api_key, meta.api_version, body)
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
                    policy: Arc::clone(policy),
                    principal: principal.cloned(),
                    break_glass: caller.break_glass.clone(),
                    topic_names: Arc::clone(&self.shared.topic_names),
                });
                FrameAction::Forward { fixup }
            }
            Enforcement::Respond(resp) => {
                self.refusal = Some(format!(
                    "{api_key:?} refused: answered with its authorization error"
                ));
                FrameAction::Answer(encode_local_response(&meta, &resp).map_err(frame_error)?)
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
