//! The in-process data-path harness: a [`ScriptedBroker`], the proxy started
//! in-process through its library API ([`Sidecar`]), and a raw Kafka
//! [`Client`] that speaks frames, so a test sees exactly what the proxy sends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod scripted_broker;

use bytes::{Buf, Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
pub use scripted_broker::ScriptedBroker;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;
use streamgate_proxy::identity::workload::Workload;
use streamgate_proxy::{App, Environment, RunArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the data path may do, to the pod's own ServiceAccount.
pub const ALLOW_ALL: &str = r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: allow-all}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: everything
      subjects: [{kind: ServiceAccount, name: "*"}]
      topics: ["**"]
      operations: [Write, Read, Describe, Create, Admin]
      groups: ["**"]
      transactionalIds: ["**"]
  audit: {payload: Digest, failureMode: Closed}
"#;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

/// The proxy, running in this process against a [`ScriptedBroker`].
pub struct Sidecar {
    pub listen: SocketAddr,
    pub audit_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// What a test changes about the sidecar.
#[derive(Default)]
pub struct Options<'a> {
    /// Manifests (YAML, `---`-separated) for the policy directory; default [`ALLOW_ALL`].
    pub manifests: Option<&'a str>,
    /// Point the audit spool at a file, so no record can be made durable.
    pub broken_audit: bool,
    /// More `run` flags (e.g. limits).
    pub args: Vec<String>,
}

impl Sidecar {
    pub async fn start(broker: &ScriptedBroker, options: Options<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(
            policies.join("manifests.yaml"),
            options.manifests.unwrap_or(ALLOW_ALL),
        )
        .unwrap();
        let audit_dir = dir.path().join("audit");
        if options.broken_audit {
            std::fs::write(&audit_dir, b"not a directory").unwrap();
        }
        let listen = SocketAddr::from(([127, 0, 0, 1], free_proxy_port()));
        let base = [
            "streamgate-proxy".to_string(),
            format!("--listen={listen}"),
            format!("--upstream={}", broker.addr()),
            "--admin=127.0.0.1:0".into(),
            "--node-id-max=0".into(),
            "--shutdown-grace=5s".into(),
            format!("--policy-dir={}", policies.display()),
            format!("--approvals-dir={}", dir.path().join("approvals").display()),
            format!("--audit-dir={}", audit_dir.display()),
            "--audit-otlp=false".into(),
            "--audit-events=false".into(),
            // As the e2e harness: a test IdP serves plain http.
            "--allow-insecure-issuers".into(),
        ];
        let cli = Cli::try_parse_from(base.into_iter().chain(options.args)).unwrap();
        let app = App::build(&cli.run, Environment::with_workload(workload()))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Self {
            listen,
            audit_dir,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// What SIGTERM does: stop accepting, drain, stop.
    pub fn terminate(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Wait until the proxy has stopped (after [`Sidecar::terminate`]).
    pub async fn stopped(&mut self) {
        self.terminate();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the proxy stops within 10 s")
                .unwrap()
                .unwrap();
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.listen).await
    }

    /// The audit records written so far (call after [`Sidecar::stopped`] to see them all).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        streamgate_proxy::audit::segment::read_lines(&self.audit_dir)
            .map(|lines| {
                lines
                    .map(|l| serde_json::from_str(&l.unwrap().2).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The pod the sidecar serves: ServiceAccount `intake` in `clinical`.
pub fn workload() -> Workload {
    Workload {
        service_account: "intake".into(),
        pod_name: Some("intake-1".into()),
        namespace: "clinical".into(),
        labels: BTreeMap::new(),
    }
}

/// A port `p` with `p + 1` (broker 0's stand-in) free as well.
fn free_proxy_port() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// A Kafka client that speaks raw frames.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// One request frame, length prefix included (concatenate several to pipeline).
    pub fn frame<M: Encodable>(key: ApiKey, version: i16, correlation_id: i32, req: &M) -> Bytes {
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("harness")))
            .encode(&mut body, key.request_header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        let mut out = BytesMut::new();
        out.extend_from_slice(&(body.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
        out.freeze()
    }

    pub async fn send<M: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        req: &M,
    ) {
        self.write(&Self::frame(key, version, correlation_id, req))
            .await;
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response frame, or `None` when the proxy closed the connection.
    pub async fn next_frame(&mut self) -> Option<Bytes> {
        let read = async {
            loop {
                if self.buf.len() >= 4 {
                    let len =
                        i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                            as usize;
                    if self.buf.len() >= 4 + len {
                        self.buf.advance(4);
                        return Some(self.buf.split_to(len).freeze());
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the proxy answered or closed within 5 s")
    }

    /// The next response, decoded as an answer to `key` at `version`: (correlation id, body).
    pub async fn recv<M: Decodable>(&mut self, key: ApiKey, version: i16) -> (i32, M) {
        let mut frame = self
            .next_frame()
            .await
            .expect("a response, not a closed connection");
        let header =
            ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        (
            header.correlation_id,
            M::decode(&mut frame, version).unwrap(),
        )
    }

    /// Whether the proxy closed the connection (within 5 s).
    pub async fn closed(&mut self) -> bool {
        self.next_frame().await.is_none()
    }
}

/// The audit records of one API.
pub fn records_of<'a>(records: &'a [serde_json::Value], api: &str) -> Vec<&'a serde_json::Value> {
    records.iter().filter(|r| r["api"] == api).collect()
}
