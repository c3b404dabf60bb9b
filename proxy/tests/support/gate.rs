//! The identity and policy stages driven frame by frame, as the pipeline
//! drives them: identity first (SASL answered, the caller named), then the
//! policy gate with that caller.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use streamgate_proxy::datapath::exchange::Request;
use streamgate_proxy::identity::sasl::SaslServer;
use streamgate_proxy::identity::stage::{Admission, Identity};
use streamgate_proxy::kafka::codec::RequestMeta;
use streamgate_proxy::policy::conn::{self, ConnGate, GateShared, ResponseFixup};
use streamgate_proxy::policy::enforce::TopicDecision;

/// What the two stages decided for one client frame.
#[derive(Debug)]
pub enum FrameAction {
    Forward { fixup: Option<ResponseFixup> },
    Answer(Bytes),
    AnswerThenClose(Bytes),
    Silent,
    Close(String),
}

/// One client connection's identity and policy state.
#[derive(Debug)]
pub struct Conn {
    shared: Arc<GateShared>,
    identity: Identity,
    gate: ConnGate,
}

impl Conn {
    pub fn new(shared: Arc<GateShared>) -> Self {
        let peer = SocketAddr::from(([127, 0, 0, 1], 50000));
        Conn {
            identity: Identity::new(Arc::clone(&shared.identity), peer),
            gate: ConnGate::new(Arc::clone(&shared)),
            shared,
        }
    }

    /// The SASL state (KIP-368 session expiry, principal).
    pub fn sasl(&self) -> &SaslServer {
        self.identity.sasl()
    }

    /// The per-topic decisions of the last request.
    pub fn take_decisions(&mut self) -> Vec<TopicDecision> {
        self.gate.take_decisions()
    }
}

fn admitted(a: Admission) -> Option<FrameAction> {
    match a {
        Admission::Proceed => None,
        Admission::Answer(b) => Some(FrameAction::Answer(b)),
        Admission::AnswerThenClose { frame, .. } => Some(FrameAction::AnswerThenClose(frame)),
        Admission::Close { why, .. } => Some(FrameAction::Close(why)),
    }
}

/// One client frame through identity and policy: what they decided, and the
/// request as it would go upstream (trimmed where policy trimmed it).
pub async fn on_frame(conn: &mut Conn, frame: Bytes) -> (FrameAction, Bytes) {
    let policy = conn.shared.policy.current();
    if conn.identity.expects_raw_token() {
        let action = admitted(conn.identity.on_raw_token(&policy, &frame).await);
        return (action.expect("a raw token is answered"), Bytes::new());
    }
    // A frame that is not a request of a known API closes the connection.
    let meta = match RequestMeta::peek(&frame) {
        Ok(meta) => meta,
        Err(e) => return (FrameAction::Close(e.to_string()), Bytes::new()),
    };
    let mut request = Request::new(meta, frame);
    let admission = conn.identity.on_request(&policy, &mut request).await;
    if let Some(action) = admitted(admission.expect("identity")) {
        return (action, request.into_frame().expect("encode"));
    }
    let caller = Arc::clone(conn.identity.caller());
    let action = match conn
        .gate
        .on_request(&caller, &policy, &mut request)
        .expect("gate")
    {
        conn::FrameAction::Forward { fixup } => FrameAction::Forward { fixup },
        conn::FrameAction::Answer(b) => FrameAction::Answer(b),
        conn::FrameAction::Silent => FrameAction::Silent,
        conn::FrameAction::Close(why) => FrameAction::Close(why),
    };
    (action, request.into_frame().expect("encode"))
}
