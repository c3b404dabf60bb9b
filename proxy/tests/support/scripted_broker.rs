//! A scripted Kafka broker on `127.0.0.1:0`, driven by the test.
//!
//! It answers ApiVersions and Metadata by itself (naming its own address as
//! broker 0, so the proxy learns and maps it) and hands every other request
//! to the test through [`ScriptedBroker::recv`]. The test then decides what
//! the broker does — answer now, answer later, answer out of order, answer a
//! request that expects no answer (acks=0), or close the connection — which
//! is what makes the proxy's connection loop testable without a real broker.
//! Every frame received, answered by the broker or not, is recorded.
#![allow(dead_code)]

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc};

/// One request as the broker received it.
#[derive(Clone, Debug)]
pub struct Frame {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

impl Frame {
    fn parse(frame: Bytes) -> Self {
        let mut buf = frame;
        let api_key = ApiKey::try_from(i16::from_be_bytes([buf[0], buf[1]])).expect("api key");
        let version = i16::from_be_bytes([buf[2], buf[3]]);
        let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))
            .expect("request header");
        Self {
            api_key,
            version,
            header,
            body: buf,
        }
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }

    /// The request body, decoded.
    pub fn decode<M: Decodable>(&self) -> M {
        M::decode(&mut self.body.clone(), self.version).expect("request body")
    }
}

/// A request handed to the test, with the connection it came on.
pub struct Request {
    pub frame: Frame,
    pub conn: Conn,
}

impl Request {
    /// Answer this request now.
    pub async fn reply<M: Encodable>(&self, message: &M) {
        self.conn.reply(&self.frame, message).await;
    }
}

/// One connection from the proxy, as the test may act on it.
#[derive(Clone)]
pub struct Conn {
    writer: Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>,
    closed: Arc<Notify>,
}

impl Conn {
    /// Answer `to` (with its correlation id and version) with `message`.
    pub async fn reply<M: Encodable>(&self, to: &Frame, message: &M) {
        let frame = response(to, message);
        let mut guard = self.writer.lock().await;
        if let Some(w) = guard.as_mut() {
            // The proxy may have closed its side already; the test asserts on that.
            let _ = w.write_all(&frame).await;
        }
    }

    /// Write raw bytes (a hostile or broken broker).
    pub async fn write_raw(&self, bytes: &[u8]) {
        if let Some(w) = self.writer.lock().await.as_mut() {
            let _ = w.write_all(bytes).await;
        }
    }

    /// Close the connection (a broker going away mid-stream).
    pub async fn close(&self) {
        if let Some(mut w) = self.writer.lock().await.take() {
            let _ = w.shutdown().await;
        }
        self.closed.notify_one();
    }
}

/// Encode a response frame (length prefix included) answering `to`.
pub fn response<M: Encodable>(to: &Frame, message: &M) -> Bytes {
    let mut body = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(to.correlation_id())
        .encode(&mut body, to.api_key.response_header_version(to.version))
        .expect("response header");
    message
        .encode(&mut body, to.version)
        .expect("response body");
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out.freeze()
}

struct Shared {
    addr: SocketAddr,
    frames: Mutex<Vec<Frame>>,
    conns: Mutex<Vec<Conn>>,
    topics: Mutex<Vec<String>>,
}

/// The broker. Dropping it stops accepting (open connections live on until closed).
pub struct ScriptedBroker {
    shared: Arc<Shared>,
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedBroker {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl ScriptedBroker {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            addr,
            frames: Mutex::default(),
            conns: Mutex::default(),
            topics: Mutex::new(vec!["patient-events".into()]),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), tx));
        Self {
            shared,
            requests: tokio::sync::Mutex::new(rx),
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The next request the broker did not answer by itself.
    pub async fn recv(&self) -> Request {
        let mut requests = self.requests.lock().await;
        tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .expect("the broker received a request within 5 s")
            .expect("broker running")
    }

    /// Whether a request arrives within `wait` (for asserting that none does).
    pub async fn try_recv(&self, wait: Duration) -> Option<Request> {
        tokio::time::timeout(wait, self.requests.lock().await.recv())
            .await
            .ok()
            .flatten()
    }

    /// How many connections the proxy has opened to this broker.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().expect("conns").len()
    }

    /// Every frame received so far, in order, on all connections.
    pub fn frames(&self) -> Vec<Frame> {
        self.shared.frames.lock().expect("frames").clone()
    }

    /// Close every open connection, as a restarting broker does; it keeps accepting.
    pub async fn restart(&self) {
        let conns: Vec<Conn> = self.shared.conns.lock().expect("conns").drain(..).collect();
        for c in conns {
            c.close().await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
) {
    while let Ok((socket, _)) = listener.accept().await {
        let (mut reader, writer) = socket.into_split();
        let conn = Conn {
            writer: Arc::new(tokio::sync::Mutex::new(Some(writer))),
            closed: Arc::new(Notify::new()),
        };
        shared.conns.lock().expect("conns").push(conn.clone());
        let shared = Arc::clone(&shared);
        let requests = requests.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                let frame = tokio::select! {
                    () = conn.closed.notified() => return,
                    f = read_frame(&mut reader, &mut buf) => f,
                };
                let Some(frame) = frame else { return };
                let frame = Frame::parse(frame);
                shared.frames.lock().expect("frames").push(frame.clone());
                match frame.api_key {
                    ApiKey::ApiVersions => conn.reply(&frame, &api_versions()).await,
                    ApiKey::Metadata => {
                        let asked: MetadataRequest = frame.decode();
                        conn.reply(&frame, &metadata(&shared, &asked)).await
                    }
                    _ => {
                        let _ = requests.send(Request {
                            frame,
                            conn: conn.clone(),
                        });
                    }
                }
            }
        });
    }
}

async fn read_frame(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
) -> Option<Bytes> {
    loop {
        if buf.len() >= 4 {
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() >= 4 + len {
                buf.advance(4);
                return Some(buf.split_to(len).freeze());
            }
        }
        if reader.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn api_versions() -> ApiVersionsResponse {
    let keys = [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::ApiVersions,
        ApiKey::FindCoordinator,
    ];
    ApiVersionsResponse::default().with_api_keys(
        keys.into_iter()
            .map(|k| {
                let v = k.valid_versions();
                ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(v.min)
                    .with_max_version(v.max)
            })
            .collect(),
    )
}

/// Broker 0 at the broker's own address; the topics asked for (all known ones if none).
fn metadata(shared: &Shared, asked: &MetadataRequest) -> MetadataResponse {
    let names: Vec<String> = match &asked.topics {
        Some(t) if !t.is_empty() => t
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect(),
        _ => shared.topics.lock().expect("topics").clone(),
    };
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(0))
                .with_host(StrBytes::from_string(shared.addr.ip().to_string()))
                .with_port(i32::from(shared.addr.port())),
        ])
        .with_controller_id(BrokerId(0))
        .with_topics(
            names
                .into_iter()
                .map(|n| {
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n))))
                })
                .collect(),
        )
}
