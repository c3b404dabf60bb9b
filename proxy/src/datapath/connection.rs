//! One client connection: frames from the client go to its broker connection
//! as they arrive (pipelined); responses come back in request order, because
//! a broker answers one connection's requests in order. A queue of pending
//! requests tells the response side what each response answers (api key and
//! version, for decoding), and carries locally made answers in their place.
//! Answers leave through a release queue, in order, each once its audit
//! record is durable, while the next answers are worked on.
//! What happens to a frame on its way is [`super::pipeline`]'s business.

use super::pipeline::{self, Carry, Pipeline, StageError, Step};
use super::state::Proxy;
use super::target::Target;
use super::upstream::UpstreamError;
use crate::kafka::codec::{FrameCodec, FrameError, RequestMeta, length_prefix};
use bytes::Bytes;
use futures::StreamExt;
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
    /// `carry`: what the stages need to finish with the response.
    Upstream {
        meta: RequestMeta,
        started: Instant,
        carry: Box<Carry>,
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
    #[error(transparent)]
    Stage(#[from] StageError),
}

enum Ended {
    ClientClosed,
    Shutdown,
}

pub async fn serve(proxy: Arc<Proxy>, client: TcpStream, peer: SocketAddr, target: Target) {
    // No broker connection for a client that has sent nothing: connecting
    // and going quiet must not cost the broker (or the gateway's credential)
    // a connection each.
    let first_bytes = proxy.limits.auth_timeout.min(proxy.limits.idle_timeout);
    let mut first = [0u8; 1];
    tokio::select! {
        // `peek`, not `readable`: readiness may be reported before a byte is there.
        peeked = client.peek(&mut first) => match peeked {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        },
        () = tokio::time::sleep(first_bytes) => {
            tracing::debug!(%peer, "no request within {}; closing", humantime::format_duration(first_bytes));
            return;
        }
        () = proxy.shutdown.cancelled() => return,
    }
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
    let requests = forward_requests(&proxy, Pipeline::new(&proxy, peer), client_r, broker_w, tx);
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
    mut pipeline: Pipeline<'_>,
    client: R,
    broker: W,
    pending: mpsc::Sender<Pending>,
) -> Result<Ended, ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = &proxy.limits;
    let mut authenticated = pipeline.is_authenticated();
    let frame_cap = |authenticated: bool| {
        if authenticated {
            proxy.upstream.max_frame
        } else {
            limits
                .pre_auth_max_frame_bytes
                .min(proxy.upstream.max_frame)
        }
    };
    let mut reader =
        FramedRead::with_capacity(client, FrameCodec::new(frame_cap(authenticated)), IO_BUFFER);
    let mut writer = BufWriter::with_capacity(IO_BUFFER, broker);
    let auth_deadline = tokio::time::Instant::now() + limits.auth_timeout;
    loop {
        let idle = tokio::time::sleep(limits.idle_timeout);
        let unauthenticated_until = async {
            if authenticated {
                std::future::pending::<()>().await
            }
            tokio::time::sleep_until(auth_deadline).await
        };
        let next = tokio::select! {
            biased;
            () = proxy.shutdown.cancelled() => {
                writer.flush().await?;
                return Ok(Ended::Shutdown);
            }
            next = reader.next() => next,
            () = idle => return Err(ConnError::Refused(format!(
                "no request for {}", humantime::format_duration(limits.idle_timeout)
            ))),
            () = unauthenticated_until => return Err(ConnError::Refused(format!(
                "not authenticated within {}", humantime::format_duration(limits.auth_timeout)
            ))),
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
        let (meta, step) = pipeline.request(frame).await?;
        if !authenticated && pipeline.is_authenticated() {
            authenticated = true;
            reader.decoder_mut().set_max_frame(frame_cap(true));
        }
        let entry = match step {
            Step::Forward { frame, carry } => {
                let entry = match carry {
                    Some(carry) => Pending::Upstream {
                        meta,
                        started,
                        carry,
                    },
                    None => Pending::Unanswered {
                        correlation_id: meta.correlation_id,
                    },
                };
                // Queued before the request is written, so the response side
                // always knows what an answer is for.
                if pending.send(entry).await.is_err() {
                    // The response side ended (broker gone); it reports why.
                    return Ok(Ended::ClientClosed);
                }
                writer
                    .write_all(&length_prefix(frame.len()).map_err(ConnError::Client)?)
                    .await?;
                writer.write_all(&frame).await?;
                None
            }
            Step::Answer(frame) => Some(Pending::Local {
                meta,
                frame,
                started,
            }),
            Step::AnswerThenClose(frame) => {
                let _ = pending
                    .send(Pending::Local {
                        meta,
                        frame,
                        started,
                    })
                    .await;
                writer.flush().await?;
                // The response side sends the answer, then the connection ends.
                return Ok(Ended::Shutdown);
            }
            Step::Drop => None,
            Step::Close(reason) => return Err(ConnError::Refused(reason)),
        };
        if let Some(entry) = entry
            && pending.send(entry).await.is_err()
        {
            return Ok(Ended::ClientClosed);
        }
        // Flush once the client has no further complete request buffered, so
        // pipelined requests go out in one write.
        if !holds_complete_frame(reader.read_buffer()) {
            writer.flush().await?;
        }
    }
}

/// How many answered responses may wait for their audit records before the
/// response side stops reading the broker: enough to keep the writer's group
/// commit busy, few enough to bound what is held in memory.
const MAX_HELD: usize = 16;

/// One response ready to leave, in order.
struct Outbound {
    meta: RequestMeta,
    started: Instant,
    outgoing: pipeline::Outgoing,
}

/// The response side: read the broker's answers in order and run them
/// through the stages; a second loop releases them to the client in the same
/// order, each once its audit record is durable — so the next answer is
/// worked on while the writer syncs the last one.
async fn forward_responses<R, W>(
    proxy: &Arc<Proxy>,
    broker: R,
    client: W,
    pending: mpsc::Receiver<Pending>,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel(MAX_HELD);
    let answers = answer_responses(proxy, broker, pending, tx);
    let releases = release_responses(proxy, client, rx);
    tokio::pin!(answers, releases);
    tokio::select! {
        // The answer side ended (its sender dropped with it): what it had
        // answered still goes out, then its error (a broker that closed) counts.
        answered = &mut answers => {
            let released = releases.await;
            answered.and(released)
        }
        released = &mut releases => released,
    }
}

async fn answer_responses<R>(
    proxy: &Arc<Proxy>,
    broker: R,
    mut pending: mpsc::Receiver<Pending>,
    out: mpsc::Sender<Outbound>,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
{
    let mut reader =
        FramedRead::with_capacity(broker, FrameCodec::new(proxy.upstream.max_frame), IO_BUFFER);
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
        let outbound = match entry {
            Pending::Unanswered { correlation_id } => {
                remember_unanswered(&mut unanswered, correlation_id);
                continue;
            }
            Pending::Local {
                meta,
                frame,
                started,
            } => Outbound {
                meta,
                started,
                outgoing: pipeline::Outgoing::Ready(frame),
            },
            Pending::Upstream {
                meta,
                started,
                carry,
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
                let outgoing = pipeline::response(proxy, &meta, frame, *carry).await?;
                Outbound {
                    meta,
                    started,
                    outgoing,
                }
            }
        };
        if out.send(outbound).await.is_err() {
            // The release side ended (client gone); it reports why.
            break;
        }
    }
    Ok(())
}

async fn release_responses<W>(
    proxy: &Arc<Proxy>,
    client: W,
    mut answered: mpsc::Receiver<Outbound>,
) -> Result<(), ConnError>
where
    W: AsyncWrite + Unpin,
{
    let mut writer = BufWriter::with_capacity(IO_BUFFER, client);
    while let Some(Outbound {
        meta,
        started,
        outgoing,
    }) = answered.recv().await
    {
        if matches!(outgoing, pipeline::Outgoing::Held(_)) {
            // This one waits for its record: what is already written must
            // not wait in the buffer with it.
            writer.flush().await?;
        }
        let frame = pipeline::release(proxy, outgoing).await?;
        writer
            .write_all(&length_prefix(frame.len()).map_err(ConnError::Broker)?)
            .await?;
        writer.write_all(&frame).await?;
        if answered.is_empty() {
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
