//! The order of concerns, written down once.
//!
//! On the way in, each client frame meets, in order:
//! 1. identity — SASL answered here, the caller named (workload identity or token);
//! 2. policy — refused topics trimmed or the request refused, the merge kept for the response;
//! 3. approvals — a `NeedsApproval` decision asks for an AccessApproval;
//! 4. masking — Produce records masked (`applyTo: Produce`);
//! 5. audit — the record started; failureMode `Closed` may refuse here.
//!
//! On the way out, the broker's answer meets:
//! 1. policy — refusals merged back in, hidden topics filtered, SASL advertised;
//! 2. addresses — broker endpoints rewritten to the loopback stand-ins (and learned);
//! 3. masking — Fetch records masked;
//! 4. audit — the record finished last, over the bytes as delivered (Closed waits for durability).
//!
//! The connection loop ([`super::connection`]) only moves frames and
//! [`Carry`]s; it knows nothing of the stages.

use super::apis::{self, MaskingContext, RequestAction};
use super::exchange::{Request, Response};
use super::session::{Session, Target};
use super::state::Proxy;
use crate::audit::stage::{GateReport, InFlight, OnRequest};
use crate::kafka::codec::{FrameError, RequestMeta, peek_client_id};
use crate::masking::wire::TopicMasking;
use crate::policy::conn::{ConnGate, FrameAction, GateError, ResponseFixup};
use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the pipeline cannot go on with a connection.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("client frame: {0}")]
    Client(FrameError),
    #[error("broker frame: {0}")]
    Broker(FrameError),
    #[error("policy gate: {0}")]
    Gate(#[from] GateError),
}

/// What the request side does with one client frame.
#[derive(Debug)]
pub enum Step {
    /// Send `frame` upstream; `carry` waits for its response (`None`: an
    /// acks=0 Produce, which has none).
    Forward {
        frame: Bytes,
        carry: Option<Box<Carry>>,
    },
    /// Answer the client with this frame, in order; forward nothing.
    Answer(Bytes),
    /// Answer, then end the connection (failed authentication).
    AnswerThenClose(Bytes),
    /// Neither forward nor answer (a refused acks=0 Produce).
    Drop,
    /// Close the connection.
    Close(String),
}

/// What a forwarded request carries to its response.
#[derive(Debug)]
pub struct Carry {
    session: Arc<Session>,
    /// policy: refusals to merge in, topics to hide.
    fixup: Option<ResponseFixup>,
    /// audit: the record to finish with the response.
    audit: Option<Box<InFlight>>,
    /// masking: what was done to the request's records (`applyTo: Produce`).
    masked: Vec<TopicMasking>,
}

/// The request side of one client connection: its identity and policy state.
#[derive(Debug)]
pub struct Pipeline<'a> {
    proxy: &'a Proxy,
    gate: ConnGate,
    session: Arc<Session>,
}

impl<'a> Pipeline<'a> {
    pub fn new(proxy: &'a Proxy, peer: SocketAddr, target: Target) -> Self {
        Self {
            proxy,
            gate: ConnGate::new(Arc::clone(&proxy.gate)),
            session: Arc::new(Session::new(peer, target)),
        }
    }

    /// Whether the caller has proved who it is (see [`ConnGate::is_authenticated`]).
    pub fn is_authenticated(&self) -> bool {
        self.gate.is_authenticated()
    }

    /// One client frame (size prefix removed), through every stage in order.
    pub async fn request(&mut self, frame: Bytes) -> Result<(RequestMeta, Step), StageError> {
        let proxy = self.proxy;
        if self.gate.sasl().expects_raw_token() {
            // identity: SaslHandshake v0 sends a bare token frame with no
            // Kafka header; the answer is an empty frame, or the connection closes.
            let meta = RequestMeta {
                api_key: ApiKey::SaslAuthenticate,
                api_version: 0,
                correlation_id: -1,
            };
            let step = match self.gate.on_raw_token(&frame).await {
                FrameAction::Answer(reply) => Step::Answer(reply),
                other => {
                    // audit: a failed SASL v0 token.
                    if let Some(trail) = proxy.audit.as_ref() {
                        let reason = "SASL (v0 token) authentication failed; connection closed";
                        trail.on_auth_failure(&self.session, reason).await;
                    }
                    Step::Close(format!("{other:?}"))
                }
            };
            return Ok((meta, step));
        }
        let meta = RequestMeta::peek(&frame).map_err(|e| {
            proxy.metrics.api(-1).errors.inc();
            StageError::Client(e)
        })?;
        let api = proxy.metrics.api(meta.api_key as i16);
        api.requests.inc();
        if meta.request_header_version() >= 1 {
            let client_id = peek_client_id(&frame);
            if self.session.client_id.as_deref() != client_id {
                Arc::make_mut(&mut self.session).observe_client_id(client_id);
            }
        }
        let mut request = Request::new(meta.clone(), frame);
        // identity, policy, approvals: SASL and refusals are answered here,
        // allowed requests continue (perhaps trimmed).
        let action = self.gate.on_request(&mut request).await?;
        // approvals: a NeedsApproval decision asks for an AccessApproval.
        if let Some(approvals) = &proxy.approvals {
            let policy = proxy.gate.policy.current();
            let principal = self.gate.principal(&policy);
            approvals.on_decisions(&policy, principal.as_ref(), self.gate.decisions());
        }
        let fixup = match action {
            FrameAction::Forward { fixup } => fixup,
            FrameAction::Answer(reply) => {
                let principal = self.gate.sasl().session().map(|s| s.principal.name.clone());
                if self.session.principal != principal {
                    Arc::make_mut(&mut self.session).principal = principal;
                }
                // audit: a refusal by policy is a record too.
                let report = self.gate_report();
                if let Some(trail) = proxy.audit.as_ref() {
                    trail.on_refusal(&self.session, &meta, report).await;
                }
                return Ok((meta, Step::Answer(reply)));
            }
            FrameAction::AnswerThenClose(reply) => {
                // audit: failed authentication.
                if let Some(trail) = proxy.audit.as_ref() {
                    let reason = match self.gate.take_refusal() {
                        Some(why) => format!("SASL {why}; connection closed"),
                        None => "SASL authentication failed; connection closed".to_string(),
                    };
                    trail.on_auth_failure(&self.session, &reason).await;
                }
                return Ok((meta, Step::AnswerThenClose(reply)));
            }
            FrameAction::Silent => {
                self.record_refusal(&meta).await;
                return Ok((meta, Step::Drop));
            }
            FrameAction::Close(reason) => {
                self.record_refusal(&meta).await;
                return Ok((meta, Step::Close(reason)));
            }
        };
        if matches!(meta.api_key, ApiKey::Produce | ApiKey::Fetch) {
            // masking: exemptions follow the authenticated principal.
            let subject = self.gate.principal(&proxy.gate.policy.current());
            if self.session.subject != subject {
                Arc::make_mut(&mut self.session).subject = subject;
            }
        }
        // masking (Produce) and the acks=0 peek.
        let names = |id: &uuid::Uuid| proxy.topic_name_of(id);
        let masking = MaskingContext {
            set: proxy.masking.current(&proxy.gate.policy),
            topic_name: &names,
        };
        let action = apis::on_request(&self.session, &mut request, Some(&masking))
            .await
            .map_err(|e| {
                api.errors.inc();
                StageError::Client(e)
            })?;
        let (expect_response, masked) = match action {
            RequestAction::Forward {
                expect_response,
                masked,
            } => (expect_response, masked),
            RequestAction::Answer(reply) => {
                // audit: refused because its records cannot be masked.
                let mut report = self.gate_report();
                report.decisions.clear();
                report.refusal = Some(format!(
                    "{:?} refused: its records cannot be masked",
                    meta.api_key
                ));
                if let Some(trail) = proxy.audit.as_ref() {
                    trail.on_refusal(&self.session, &meta, report).await;
                }
                return Ok((meta, Step::Answer(reply)));
            }
        };
        // audit: summarise the request; a refusal is answered here, not forwarded.
        let report = self.gate_report();
        let audit = match proxy.audit.as_ref() {
            None => None,
            Some(trail) => match trail
                .on_request(&self.session, &mut request, expect_response, &names, report)
                .await
            {
                OnRequest::Done => None,
                OnRequest::Await(inflight) => Some(inflight),
                OnRequest::Refuse(reply) if reply.is_empty() => return Ok((meta, Step::Drop)),
                OnRequest::Refuse(reply) => return Ok((meta, Step::Answer(reply))),
            },
        };
        let carry = expect_response.then(|| {
            Box::new(Carry {
                session: Arc::clone(&self.session),
                fixup,
                audit,
                masked,
            })
        });
        // Encoded once, if any stage changed the body; else the client's bytes.
        let frame = request.into_frame().map_err(StageError::Client)?;
        Ok((meta, Step::Forward { frame, carry }))
    }

    /// audit: who the gate saw and what it decided for the request just handled
    /// (empty when no audit trail runs, so the gate's work is not cloned for nothing).
    fn gate_report(&mut self) -> GateReport {
        let decisions = self.gate.take_decisions();
        let refusal = self.gate.take_refusal();
        if self.proxy.audit.as_ref().is_none() {
            return GateReport::default();
        }
        GateReport {
            principal: self.gate.principal(&self.proxy.gate.policy.current()),
            decisions,
            refusal,
        }
    }

    /// Record a refusal that is not answered (silent, or the connection closes).
    async fn record_refusal(&mut self, meta: &RequestMeta) {
        let report = self.gate_report();
        if let Some(trail) = self.proxy.audit.as_ref() {
            trail.on_refusal(&self.session, meta, report).await;
        }
    }
}

/// The broker's answer to a forwarded request, through every stage in order.
pub async fn response(
    proxy: &Arc<Proxy>,
    meta: &RequestMeta,
    frame: Bytes,
    carry: Carry,
) -> Result<Bytes, StageError> {
    let Carry {
        session,
        fixup,
        audit,
        mut masked,
    } = carry;
    let mut response = Response::new(meta.clone(), frame);
    // policy: merge the refusals, filter what the caller may not see.
    if let Some(fixup) = &fixup {
        fixup.apply(&mut response)?;
    }
    // addresses and masking (Fetch).
    let names = |id: &uuid::Uuid| proxy.topic_name_of(id);
    let masking = MaskingContext {
        set: proxy.masking.current(&proxy.gate.policy),
        topic_name: &names,
    };
    let learned = apis::on_response(&session, &proxy.plan, &mut response, Some(&masking))
        .await
        .map_err(|e| {
            proxy.metrics.api(meta.api_key as i16).errors.inc();
            StageError::Broker(e)
        })?;
    // Listeners for every broker named must exist before the client reads this.
    proxy.learn(&learned);
    masked.extend(learned.masking);
    // audit: finish the record; in Closed mode this waits until it is durable.
    if let (Some(inflight), Some(trail)) = (audit, proxy.audit.as_ref()) {
        trail
            .on_response(*inflight, &mut response, &names, &masked)
            .await;
    }
    // Encoded once, if any stage changed the body; else the broker's bytes.
    response.into_frame().map_err(StageError::Broker)
}
