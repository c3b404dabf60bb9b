//! The HTTPS admission server: axum routes served over a rustls listener.
//!
//! TLS handshakes run in their own tasks, so a slow or broken client never
//! holds up the accept loop; finished connections are handed to axum.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use streamgate_crds::AccessApproval;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::handlers::{self, WebhookState};
use super::lookup::ClusterLookup;

/// Paths the webhook configurations in the chart point at.
pub const PATH_INJECT: &str = "/inject-pod";
pub const PATH_STAMP_APPROVAL: &str = "/mutate-accessapproval";
pub const PATH_VALIDATE_APPROVAL: &str = "/validate-accessapproval";
pub const PATH_GUARD_POD: &str = "/validate-pod";

/// The admission routes.
pub fn router<L: ClusterLookup>(state: Arc<WebhookState<L>>) -> Router {
    Router::new()
        .route(
            PATH_INJECT,
            post(|State(s): State<Arc<WebhookState<L>>>, Json(r): Json<AdmissionReview<Pod>>| async move {
                Json(handlers::to_wire(handlers::mutate_pod(&s, r).await))
            }),
        )
        .route(
            PATH_GUARD_POD,
            post(|State(s): State<Arc<WebhookState<L>>>, Json(r): Json<AdmissionReview<Pod>>| async move {
                Json(handlers::to_wire(handlers::validate_pod(&s, r).await))
            }),
        )
        .route(
            PATH_STAMP_APPROVAL,
            post(
                |State(s): State<Arc<WebhookState<L>>>, Json(r): Json<AdmissionReview<AccessApproval>>| async move {
                    Json(handlers::to_wire(handlers::mutate_approval(&s, r).await))
                },
            ),
        )
        .route(
            PATH_VALIDATE_APPROVAL,
            post(
                |State(s): State<Arc<WebhookState<L>>>, Json(r): Json<AdmissionReview<AccessApproval>>| async move {
                    Json(handlers::to_wire(handlers::validate_approval(&s, r).await))
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// A listener yielding finished TLS connections.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    break;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "webhook TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "webhook TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(conn) = self.ready.recv().await {
                return conn;
            }
            // The acceptor task ended (cannot happen while we hold the
            // receiver's sender side alive); wait instead of spinning.
            std::future::pending::<()>().await;
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serve the admission routes over TLS until the future is dropped.
pub async fn serve<L: ClusterLookup>(
    tcp: TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<WebhookState<L>>,
) -> std::io::Result<()> {
    let listener = TlsListener::new(tcp, config)?;
    axum::serve(listener, router(state)).await
}

/// Serve any routes (admission plus the sidecar session endpoint) over TLS.
pub async fn serve_router(
    tcp: TcpListener,
    config: Arc<rustls::ServerConfig>,
    routes: Router,
) -> std::io::Result<()> {
    let listener = TlsListener::new(tcp, config)?;
    axum::serve(listener, routes).await
}
