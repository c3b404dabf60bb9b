//! The order of concerns, written down once.
//!
//! On the way in, each client frame meets, in order:
//! 1. identity — SASL answered here, KIP-368 expiry, only ApiVersions and
//!    SASL before authentication; the [`Caller`] named (token or workload identity);
//! 2. policy — refused topics trimmed or the request refused, the merge kept for the response;
//! 3. approvals — a `NeedsApproval` decision asks for an AccessApproval;
//! 4. masking — Produce records masked (`applyTo: Produce`);
//! 5. audit — the record started; failureMode `Closed` may refuse here.
//!
//! On the way out, the broker's answer meets:
//! 1. policy — refusals merged back in, hidden topics filtered, SASL advertised;
//! 2. addresses — broker endpoints rewritten to the loopback stand-ins (and learned);
//! 3. masking — Fetch records masked;
//! 4. audit — the record finished last, over the bytes as delivered; under Closed the
//!    answer is [`Outgoing::Held`] until its record is durable ([`release`]).
//!
//! The connection loop ([`super::connection`]) only moves frames and
//! [`Carry`]s; it knows nothing of the stages.

use super::apis::{self, MaskingContext, RequestAction};
use super::exchange::{Request, Response};
use super::state::Proxy;
use crate::audit::stage::{GateReport, Held, InFlight, OnRequest};
use crate::identity::caller::Caller;
use crate::identity::stage::{Admission, Identity, IdentityError};
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
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
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
    /// Who asked, as of the request (masking exemptions, audit).
    caller: Arc<Caller>,
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
    identity: Identity,
    gate: ConnGate,
}

impl<'a> Pipeline<'a> {
    pub fn new(proxy: &'a Proxy, peer: SocketAddr) -> Self {
        Self {
            proxy,
            identity: Identity::new(Arc::clone(&proxy.gate.identity), peer),
            gate: ConnGate::new(Arc::clone(&proxy.gate)),
        }
    }

    /// Whether the caller has proved who it is (see [`Identity::is_authenticated`]).
    pub fn is_authenticated(&self) -> bool {
        self.identity
            .is_authenticated(&self.proxy.gate.policy.current())
    }

    /// One client frame (size prefix removed), through every stage in order.
    pub async fn request(&mut self, frame: Bytes) -> Result<(RequestMeta, Step), StageError> {
        let proxy = self.proxy;
        let policy = proxy.gate.policy.current();
        if self.identity.expects_raw_token() {
            // identity: SaslHandshake v0 sends a bare token frame with no
            // Kafka header; the answer is an empty frame, or the connection closes.
            let meta = RequestMeta {
                api_key: ApiKey::SaslAuthenticate,
                api_version: 0,
                correlation_id: -1,
            };
            let step = match self.identity.on_raw_token(&policy, &frame).await {
                Admission::Answer(reply) => Step::Answer(reply),
                other => {
                    // audit: a failed SASL v0 token.
                    if let Some(trail) = proxy.audit.as_ref() {
                        let reason = "SASL (v0 token) authentication failed; connection closed";
                        trail.on_auth_failure(self.identity.caller(), reason).await;
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
            self.identity.observe_client_id(peek_client_id(&frame));
        }
        let mut request = Request::new(meta.clone(), frame);
        // identity: SASL answered here; expired sessions and requests before
        // authentication close the connection.
        match self.identity.on_request(&policy, &mut request).await? {
            Admission::Proceed => {}
            // The SASL exchange is not a governed request: nothing to audit.
            Admission::Answer(reply) => return Ok((meta, Step::Answer(reply))),
            Admission::AnswerThenClose {
                frame: reply,
                refusal,
            } => {
                // audit: failed authentication, with which check failed.
                if let Some(trail) = proxy.audit.as_ref() {
                    let reason = match refusal {
                        Some(why) => format!("SASL {why}; connection closed"),
                        None => "SASL authentication failed; connection closed".to_string(),
                    };
                    trail.on_auth_failure(self.identity.caller(), &reason).await;
                }
                return Ok((meta, Step::AnswerThenClose(reply)));
            }
            Admission::Close { why, refusal } => {
                self.record_refusal(&meta, refusal).await;
                return Ok((meta, Step::Close(why)));
            }
        }
        let caller = Arc::clone(self.identity.caller());
        // policy: refusals are answered here, allowed requests continue
        // (perhaps trimmed).
        let action = self.gate.on_request(&caller, &policy, &mut request)?;
        // approvals: a NeedsApproval decision asks for an AccessApproval.
        if let Some(approvals) = &proxy.approvals {
            approvals.on_decisions(
                &policy,
                caller.principal.as_ref(),
                caller.break_glass.as_ref(),
                self.gate.decisions(),
            );
        }
        let fixup = match action {
            FrameAction::Forward { fixup } => fixup,
            FrameAction::Answer(reply) => {
                // audit: a refusal by policy is a record too.
                let refusal = self.gate.take_refusal();
                self.record_refusal(&meta, refusal).await;
                return Ok((meta, Step::Answer(reply)));
            }
            FrameAction::Silent => {
                let refusal = self.gate.take_refusal();
                self.record_refusal(&meta, refusal).await;
                return Ok((meta, Step::Drop));
            }
            FrameAction::Close(reason) => {
                let refusal = self.gate.take_refusal();
                self.record_refusal(&meta, refusal).await;
                return Ok((meta, Step::Close(reason)));
            }
        };
        // masking (Produce) and the acks=0 peek; exemptions follow the caller.
        let names = |id: &uuid::Uuid| proxy.topic_name_of(id);
        let masking = MaskingContext {
            set: proxy.masking.current(&proxy.gate.policy),
            topic_name: &names,
            clear: None,
        };
        let action = apis::on_request(&caller, &mut request, Some(&masking))
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
                self.gate.take_decisions();
                let refusal = Some(format!(
                    "{:?} refused: its records cannot be masked",
                    meta.api_key
                ));
                self.record_refusal(&meta, refusal).await;
                return Ok((meta, Step::Answer(reply)));
            }
        };
        // audit: summarise the request; a refusal is answered here, not forwarded.
        let report = self.gate_report(None);
        let audit = match proxy.audit.as_ref() {
            None => None,
            Some(trail) => match trail
                .on_request(
                    &caller,
                    &mut request,
                    expect_response,
                    &names,
                    &masked,
                    report,
                )
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
                caller,
                fixup,
                audit,
                masked,
            })
        });
        // Encoded once, if any stage changed the body; else the client's bytes.
        let frame = request.into_frame().map_err(StageError::Client)?;
        Ok((meta, Step::Forward { frame, carry }))
    }

    /// audit: who the caller is and what policy decided for the request just
    /// handled (empty when no audit trail runs, so the decisions are not
    /// cloned for nothing).
    fn gate_report(&mut self, refusal: Option<String>) -> GateReport {
        let decisions = self.gate.take_decisions();
        if self.proxy.audit.as_ref().is_none() {
            return GateReport::default();
        }
        GateReport {
            principal: self.identity.caller().principal.clone(),
            decisions,
            refusal,
        }
    }

    /// Record a refused request (answered, silent, or the connection closes).
    async fn record_refusal(&mut self, meta: &RequestMeta, refusal: Option<String>) {
        let report = self.gate_report(refusal);
        if let Some(trail) = self.proxy.audit.as_ref() {
            trail.on_refusal(self.identity.caller(), meta, report).await;
        }
    }
}

/// A response on its way to the client.
#[derive(Debug)]
pub enum Outgoing {
    /// The frame to write.
    Ready(Bytes),
    /// Written once its audit record is durable ([`release`]).
    Held(Box<(Response, Held)>),
}

/// The broker's answer to a forwarded request, through every stage in order.
pub async fn response(
    proxy: &Arc<Proxy>,
    meta: &RequestMeta,
    frame: Bytes,
    carry: Carry,
) -> Result<Outgoing, StageError> {
    let Carry {
        caller,
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
    // Break-glass with `unmasked: true`: those topics are read in clear.
    let policy_now = proxy.gate.policy.current();
    let clear = |topic: &str| {
        caller.principal.as_ref().is_some_and(|p| {
            policy_now.break_glass_unmasked(
                p,
                caller.break_glass.as_ref(),
                topic,
                chrono::Utc::now(),
            )
        })
    };
    let masking = MaskingContext {
        set: proxy.masking.current(&proxy.gate.policy),
        topic_name: &names,
        clear: (caller.break_glass.is_some() || policy_now.has_break_glass_grants())
            .then_some(&clear as &(dyn Fn(&str) -> bool + Sync)),
    };
    let learned = apis::on_response(&caller, &proxy.plan, &mut response, Some(&masking))
        .await
        .map_err(|e| {
            proxy.metrics.api(meta.api_key as i16).errors.inc();
            StageError::Broker(e)
        })?;
    // Listeners for every broker named must exist before the client reads this.
    proxy.learn(&learned);
    masked.extend(learned.masking);
    // audit: finish the record; in Closed mode the response waits for it to
    // be durable — in the connection's release queue, not here.
    if let (Some(inflight), Some(trail)) = (audit, proxy.audit.as_ref())
        && let Some(held) = trail
            .on_response(*inflight, &mut response, &names, &masked)
            .await
    {
        if held.is_pending() {
            return Ok(Outgoing::Held(Box::new((response, held))));
        }
        trail.release(held, &mut response).await;
    }
    // Encoded once, if any stage changed the body; else the broker's bytes.
    response
        .into_frame()
        .map(Outgoing::Ready)
        .map_err(StageError::Broker)
}

/// The frame of an [`Outgoing`] response, once its audit record is settled.
pub async fn release(proxy: &Proxy, outgoing: Outgoing) -> Result<Bytes, StageError> {
    match outgoing {
        Outgoing::Ready(frame) => Ok(frame),
        Outgoing::Held(held) => {
            let (mut response, held) = *held;
            if let Some(trail) = proxy.audit.as_ref() {
                trail.release(held, &mut response).await;
            }
            response.into_frame().map_err(StageError::Broker)
        }
    }
}
