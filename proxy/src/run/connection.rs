//! One client connection: frames from the client go to its broker connection
//! as they arrive (pipelined); responses come back in request order, because
//! a broker answers one connection's requests in order. A queue of pending
//! requests tells the response side what each response answers (api key and
//! version, for decoding), and carries locally made answers in their place.

use super::apis::{self, RequestAction};
use super::audit_trail::{InFlight, OnRequest, Verdict};
use super::codec::{FrameCodec, FrameError, RequestMeta, length_prefix, peek_client_id};
use super::session::{Session, Target};
use super::state::Proxy;
use super::upstream::UpstreamError;
use crate::policy::conn::{ConnGate, FrameAction, GateError, ResponseFixup};
use bytes::Bytes;
use futures::StreamExt;
use kafka_protocol::messages::ApiKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

/// How many requests may wait for their responses on one connection.
/// librdkafka's default max.in.flight is 1,000,000 per connection but in
/// practice a handful; beyond this the proxy stops reading (backpressure).
const MAX_IN_FLIGHT: usize = 1024;
const IO_BUFFER: usize = 64 * 1024;

/// A request waiting for its response.
enum Pending {
    /// `fixup`: the policy gate's work on the response (refusals to merge in, topics to hide).
    Upstream {
        meta: RequestMeta,
        session: Arc<Session>,
        started: Instant,
        fixup: Option<ResponseFixup>,
        /// audit: the record to finish with the response.
        audit: Option<Box<InFlight>>,
        /// audit: what masking did to the request's records (applyTo: Produce).
        masked: Vec<crate::masking::wire::TopicMasking>,
    },
    Local {
        meta: RequestMeta,
        frame: Bytes,
        started: Instant,
    },
    /// An acks=0 Produce went upstream: the client expects no answer. A broker
    /// that answers anyway (tansu 0.6 does) must not make the proxy close the
    /// connection or hand the client a frame it never asked for.
    Unanswered { correlation_id: i32 },
}

/// How many acks=0 correlation ids are remembered for discarding a stray
/// answer. Spec-conforming brokers never answer, so the oldest are forgotten.
const MAX_UNANSWERED: usize = 1024;

fn correlation_id(frame: &Bytes) -> i32 {
    frame
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(i32::MIN)
}

/// Remember an acks=0 request's correlation id.
fn remember_unanswered(unanswered: &mut std::collections::VecDeque<i32>, id: i32) {
    if unanswered.len() == MAX_UNANSWERED {
        unanswered.pop_front();
    }
    unanswered.push_back(id);
}

/// Is `frame` a broker's answer to an acks=0 request? Then forget the id and drop it.
fn is_stray_answer(unanswered: &mut std::collections::VecDeque<i32>, frame: &Bytes) -> bool {
    let id = correlation_id(frame);
    match unanswered.iter().position(|&u| u == id) {
        Some(i) => {
            unanswered.remove(i);
            tracing::trace!(
                correlation_id = id,
                "dropping the broker's answer to an acks=0 Produce"
            );
            true
        }
        None => false,
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("client frame: {0}")]
    Client(FrameError),
    #[error("broker frame: {0}")]
    Broker(FrameError),
    #[error(
        "the broker closed the connection ({0} request(s) unanswered); closing the client so it reconnects"
    )]
    BrokerClosed(usize),
    #[error("broker answered correlation id {got} where {expected} was due")]
    OutOfOrder { expected: i32, got: i32 },
    #[error("the broker sent a response to no request")]
    Unsolicited,
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused: {0}")]
    Refused(String),
    #[error("policy gate: {0}")]
    Gate(#[from] GateError),
}

enum Ended {
    ClientClosed,
    Shutdown,
}

pub async fn serve(proxy: Arc<Proxy>, client: TcpStream, peer: SocketAddr, target: Target) {
    let session = Session::new(peer, target);
    let upstream = match target {
        Target::Bootstrap => proxy.upstream.connect_bootstrap().await,
        Target::Broker(node_id) => match proxy.broker_addr(node_id) {
            Some(addr) => proxy.upstream.connect(&addr).await,
            None => Err(UpstreamError::NoBootstrap(format!(
                "broker {node_id} is not known (yet)"
            ))),
        },
    };
    let upstream = match upstream {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%peer, ?target, %error, "cannot reach the broker; closing the client connection");
            return;
        }
    };
    tracing::debug!(%peer, ?target, "client connected");
    let (client_r, client_w) = client.into_split();
    let (broker_r, broker_w) = tokio::io::split(upstream);
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let requests = forward_requests(&proxy, session, client_r, broker_w, tx);
    let responses = forward_responses(&proxy, broker_r, client_w, rx);
    tokio::pin!(requests, responses);
    let outcome = tokio::select! {
        r = &mut requests => match r {
            Ok(Ended::Shutdown) => responses.await,
            Ok(Ended::ClientClosed) => Ok(()),
            Err(e) => Err(e),
        },
        r = &mut responses => r,
    };
    match outcome {
        Ok(()) => tracing::debug!(%peer, "client connection closed"),
        Err(error) => tracing::info!(%peer, ?target, %error, "closing client connection"),
    }
}

async fn forward_requests<R, W>(
    proxy: &Proxy,
    session: Session,
    client: R,
    broker: W,
    pending: mpsc::Sender<Pending>,
) -> Result<Ended, ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut session = Arc::new(session);
    let mut gate = ConnGate::new(Arc::clone(&proxy.gate));
    let mut reader =
        FramedRead::with_capacity(client, FrameCodec::new(proxy.upstream.max_frame), IO_BUFFER);
    let mut writer = BufWriter::with_capacity(IO_BUFFER, broker);
    loop {
        let next = tokio::select! {
            biased;
            () = proxy.shutdown.cancelled() => {
                writer.flush().await?;
                return Ok(Ended::Shutdown);
            }
            next = reader.next() => next,
        };
        let Some(frame) = next else {
            return Ok(Ended::ClientClosed);
        };
        let frame = frame.map_err(|e| {
            proxy.metrics.api(-1).errors.inc();
            ConnError::Client(e)
        })?;
        let started = Instant::now();
        proxy.metrics.bytes_in.inc_by(frame.len() as u64 + 4);
        if gate.sasl().expects_raw_token() {
            // SaslHandshake v0: a bare token frame with no Kafka header; the
            // answer is an empty frame, or the connection closes.
            let meta = RequestMeta {
                api_key: ApiKey::SaslAuthenticate,
                api_version: 0,
                correlation_id: -1,
            };
            match gate.on_request(frame).await? {
                FrameAction::Answer(reply) => {
                    if pending
                        .send(Pending::Local {
                            meta,
                            frame: reply,
                            started,
                        })
                        .await
                        .is_err()
                    {
                        return Ok(Ended::ClientClosed);
                    }
                    continue;
                }
                other => return Err(ConnError::Refused(format!("{other:?}"))),
            }
        }
        let meta = match RequestMeta::peek(&frame) {
            Ok(m) => m,
            Err(e) => {
                proxy.metrics.api(-1).errors.inc();
                return Err(ConnError::Client(e));
            }
        };
        let api = proxy.metrics.api(meta.api_key as i16);
        api.requests.inc();
        if meta.request_header_version() >= 1 {
            let client_id = peek_client_id(&frame);
            if session.client_id.as_deref() != client_id {
                Arc::make_mut(&mut session).observe_client_id(client_id);
            }
        }
        // Identity and policy first: SASL is answered here, refusals are
        // answered locally, allowed requests continue (perhaps trimmed).
        let (frame, fixup) = match gate.on_request(frame).await? {
            FrameAction::Forward { frame, fixup } => (frame, fixup),
            FrameAction::Answer(reply) => {
                let principal = gate.sasl().session().map(|s| s.principal.name.clone());
                if session.principal != principal {
                    Arc::make_mut(&mut session).principal = principal;
                }
                // audit: a refusal by policy is a record too.
                if let Some(trail) = proxy.audit.get() {
                    trail
                        .on_refusal(&session, &meta, verdict(proxy, &mut gate))
                        .await;
                }
                if pending
                    .send(Pending::Local {
                        meta,
                        frame: reply,
                        started,
                    })
                    .await
                    .is_err()
                {
                    return Ok(Ended::ClientClosed);
                }
                continue;
            }
            FrameAction::AnswerThenClose(reply) => {
                // audit: failed authentication.
                if let Some(trail) = proxy.audit.get() {
                    trail
                        .on_auth_failure(&session, "SASL authentication failed; connection closed")
                        .await;
                }
                let _ = pending
                    .send(Pending::Local {
                        meta,
                        frame: reply,
                        started,
                    })
                    .await;
                writer.flush().await?;
                // The response side sends the answer, then the connection ends.
                return Ok(Ended::Shutdown);
            }
            FrameAction::Silent => continue,
            FrameAction::Close(reason) => return Err(ConnError::Refused(reason)),
        };
        if matches!(meta.api_key, ApiKey::Produce | ApiKey::Fetch) {
            // masking: exemptions follow the authenticated principal.
            let subject = gate.principal(&proxy.gate.policy.current());
            if session.subject != subject {
                Arc::make_mut(&mut session).subject = subject;
            }
        }
        let names = |id: &uuid::Uuid| proxy.topic_name_of(id);
        let masking = apis::MaskingContext {
            set: proxy.masking.current(&proxy.gate.policy),
            topic_name: &names,
        };
        let action = apis::on_request(&session, &meta, frame, Some(&masking)).map_err(|e| {
            api.errors.inc();
            ConnError::Client(e)
        })?;
        match action {
            RequestAction::Forward {
                frame,
                expect_response,
                masked,
            } => {
                // audit: summarise the request; a refusal is answered here, not forwarded.
                let verdict = verdict(proxy, &mut gate);
                let audit =
                    match audit_request(proxy, &session, &meta, &frame, expect_response, verdict)
                        .await
                    {
                        Ok(audit) => audit,
                        Err(reply) => {
                            if !reply.is_empty()
                                && pending
                                    .send(Pending::Local {
                                        meta,
                                        frame: reply,
                                        started,
                                    })
                                    .await
                                    .is_err()
                            {
                                return Ok(Ended::ClientClosed);
                            }
                            if !holds_complete_frame(reader.read_buffer()) {
                                writer.flush().await?;
                            }
                            continue;
                        }
                    };
                let entry = if expect_response {
                    Pending::Upstream {
                        meta,
                        session: Arc::clone(&session),
                        started,
                        fixup,
                        audit,
                        masked,
                    }
                } else {
                    Pending::Unanswered {
                        correlation_id: meta.correlation_id,
                    }
                };
                if pending.send(entry).await.is_err() {
                    // The response side ended (broker gone); it reports why.
                    return Ok(Ended::ClientClosed);
                }
                writer
                    .write_all(&length_prefix(frame.len()).map_err(ConnError::Client)?)
                    .await?;
                writer.write_all(&frame).await?;
            }
            RequestAction::Answer(frame) => {
                if pending
                    .send(Pending::Local {
                        meta,
                        frame,
                        started,
                    })
                    .await
                    .is_err()
                {
                    return Ok(Ended::ClientClosed);
                }
            }
        }
        // Flush once the client has no further complete request buffered, so
        // pipelined requests go out in one write.
        if !holds_complete_frame(reader.read_buffer()) {
            writer.flush().await?;
        }
    }
}

async fn forward_responses<R, W>(
    proxy: &Arc<Proxy>,
    broker: R,
    client: W,
    mut pending: mpsc::Receiver<Pending>,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader =
        FramedRead::with_capacity(broker, FrameCodec::new(proxy.upstream.max_frame), IO_BUFFER);
    let mut writer = BufWriter::with_capacity(IO_BUFFER, client);
    let mut unanswered = std::collections::VecDeque::new();
    loop {
        // While nothing is pending, still watch the broker: if it goes away
        // (restart), close the client now so it reconnects at once.
        // Biased: a response is only read unsolicited when no request is
        // pending (the entry is queued before its request is written).
        let entry = tokio::select! {
            biased;
            entry = pending.recv() => entry,
            unexpected = reader.next() => match unexpected {
                None => return Err(ConnError::BrokerClosed(0)),
                Some(Err(e)) => return Err(ConnError::Broker(e)),
                Some(Ok(frame)) if is_stray_answer(&mut unanswered, &frame) => continue,
                Some(Ok(_)) => return Err(ConnError::Unsolicited),
            },
        };
        let Some(entry) = entry else { break };
        let (meta, frame, started) = match entry {
            Pending::Unanswered { correlation_id } => {
                remember_unanswered(&mut unanswered, correlation_id);
                continue;
            }
            Pending::Local {
                meta,
                frame,
                started,
            } => (meta, frame, started),
            Pending::Upstream {
                meta,
                session,
                started,
                fixup,
                audit,
                masked,
            } => {
                let frame = loop {
                    match reader.next().await {
                        Some(Ok(f)) if is_stray_answer(&mut unanswered, &f) => continue,
                        Some(Ok(f)) => break f,
                        Some(Err(e)) => return Err(ConnError::Broker(e)),
                        None => return Err(ConnError::BrokerClosed(1 + pending.len())),
                    }
                };
                let got = correlation_id(&frame);
                if got != meta.correlation_id {
                    return Err(ConnError::OutOfOrder {
                        expected: meta.correlation_id,
                        got,
                    });
                }
                let frame = match &fixup {
                    Some(fixup) => fixup.apply(frame)?,
                    None => frame,
                };
                let names = |id: &uuid::Uuid| proxy.topic_name_of(id);
                let masking = apis::MaskingContext {
                    set: proxy.masking.current(&proxy.gate.policy),
                    topic_name: &names,
                };
                let mut masked = masked;
                let frame = if apis::rewrites_response(&meta, Some(&masking)) {
                    let rewritten =
                        apis::on_response(&session, &proxy.plan, &meta, frame, Some(&masking))
                            .map_err(|e| {
                                proxy.metrics.api(meta.api_key as i16).errors.inc();
                                ConnError::Broker(e)
                            })?;
                    // Listeners for every broker named must exist before the client reads this.
                    proxy.learn(&rewritten);
                    masked.extend(rewritten.masking);
                    rewritten.frame
                } else {
                    frame
                };
                // audit: finish the record; in Closed mode this waits until it is durable.
                let frame = match (audit, proxy.audit.get()) {
                    (Some(inflight), Some(trail)) => {
                        trail
                            .on_masked_response(
                                *inflight,
                                &meta,
                                frame,
                                &|id| proxy.topic_name_of(id),
                                &masked,
                            )
                            .await
                    }
                    _ => frame,
                };
                (meta, frame, started)
            }
        };
        writer
            .write_all(&length_prefix(frame.len()).map_err(ConnError::Broker)?)
            .await?;
        writer.write_all(&frame).await?;
        if pending.is_empty() {
            writer.flush().await?;
        }
        proxy.metrics.bytes_out.inc_by(frame.len() as u64 + 4);
        proxy
            .metrics
            .api(meta.api_key as i16)
            .latency
            .observe(started.elapsed().as_secs_f64());
    }
    writer.flush().await?;
    Ok(())
}

/// audit: `Ok(record to finish with the response)`, or `Err(refusal frame)` (empty: say nothing).
async fn audit_request(
    proxy: &Proxy,
    session: &Session,
    meta: &RequestMeta,
    frame: &Bytes,
    expect_response: bool,
    verdict: Verdict,
) -> Result<Option<Box<InFlight>>, Bytes> {
    let Some(trail) = proxy.audit.get() else {
        return Ok(None);
    };
    let names = |id: &uuid::Uuid| proxy.topic_name_of(id);
    match trail
        .on_request(session, meta, frame, expect_response, &names, verdict)
        .await
    {
        OnRequest::Done => Ok(None),
        OnRequest::Await(inflight) => Ok(Some(inflight)),
        OnRequest::Refuse(reply) => Err(reply),
    }
}

/// audit: who the gate saw and what it decided for the request just handled
/// (empty when no audit trail runs, so the gate's work is not cloned for nothing).
fn verdict(proxy: &Proxy, gate: &mut ConnGate) -> Verdict {
    let decisions = gate.take_decisions();
    if proxy.audit.get().is_none() {
        return Verdict::default();
    }
    Verdict {
        principal: gate.principal(&proxy.gate.policy.current()),
        decisions,
    }
}

/// Whether a read buffer already holds at least one whole frame.
fn holds_complete_frame(buf: &[u8]) -> bool {
    match buf.get(..4) {
        Some(p) => {
            let len = i32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            usize::try_from(len)
                .map(|n| buf.len() >= 4 + n)
                .unwrap_or(true)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::holds_complete_frame;

    #[test]
    fn complete_frame_detection() {
        assert!(!holds_complete_frame(&[0, 0]));
        assert!(!holds_complete_frame(&[0, 0, 0, 2, 9]));
        assert!(holds_complete_frame(&[0, 0, 0, 2, 9, 9]));
    }
}
