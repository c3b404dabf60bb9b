//! What all connections share: the address plan, the upstream settings, what
//! has been learned about the cluster (broker addresses, topic ids), metrics,
//! readiness and the shutdown signal. Also the per-broker listeners, which
//! are bound as soon as a broker is first seen — before the client receives
//! the response that points it there.

use super::addresses::AddressPlan;
use super::apis::Learned;
use super::connection;
use super::limits::ConnLimits;
use super::metrics::Metrics;
use super::target::Target;
use super::upstream::UpstreamConfig;
use crate::approval::ApprovalRequester;
use crate::audit::stage::AuditTrail;
use crate::masking::state::MaskingState;
use crate::policy::conn::GateShared;
use crate::policy::enforce::TopicNames;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug)]
pub struct Proxy {
    pub plan: AddressPlan,
    pub upstream: UpstreamConfig,
    pub metrics: Metrics,
    /// Set once the upstream answered ApiVersions and Metadata.
    pub ready: AtomicBool,
    pub shutdown: CancellationToken,
    /// Identity and policy, shared by every connection.
    pub gate: Arc<GateShared>,
    /// Asks for AccessApprovals on `NeedsApproval` (none: nowhere to ask).
    pub approvals: Option<Arc<ApprovalRequester>>,
    /// The audit trail (none: nothing is recorded).
    pub audit: Option<AuditTrail>,
    /// The MaskingRules in force (recompiled on policy reload).
    pub masking: MaskingState,
    /// Every connection task: shutdown waits for them (with a deadline).
    pub connections: TaskTracker,
    /// Connection, time and pre-authentication limits.
    pub limits: ConnLimits,
    /// One permit per client connection served ([`ConnLimits::max_connections`]).
    slots: Arc<Semaphore>,
    brokers: RwLock<HashMap<i32, String>>,
    listening: Mutex<HashSet<i32>>,
}

/// What the data path is built from, each piece made before it (see `crate::app`).
#[derive(Debug)]
pub struct Parts {
    pub plan: AddressPlan,
    pub upstream: UpstreamConfig,
    pub gate: Arc<GateShared>,
    pub approvals: Option<Arc<ApprovalRequester>>,
    pub audit: Option<AuditTrail>,
    pub masking: MaskingState,
    pub metrics: Metrics,
    pub limits: ConnLimits,
}

impl Proxy {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            plan,
            upstream,
            gate,
            approvals,
            audit,
            masking,
            metrics,
            limits,
        } = parts;
        Self {
            plan,
            upstream,
            metrics,
            ready: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            gate,
            approvals,
            audit,
            masking,
            connections: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            brokers: RwLock::default(),
            listening: Mutex::default(),
        }
    }

    /// Where broker `node_id` really lives (`host:port`), if known.
    pub fn broker_addr(&self, node_id: i32) -> Option<String> {
        self.brokers.read().ok()?.get(&node_id).cloned()
    }

    /// The topic name for a topic id learned from Metadata (Fetch v13+ carry
    /// ids): the one map, which the policy gate reads too.
    pub fn topic_name_of(&self, id: &uuid::Uuid) -> Option<String> {
        self.gate.topic_names.topic_name(id)
    }

    /// Record what a response taught us and make sure every broker it points
    /// to has a listener.
    pub fn learn(self: &Arc<Self>, learned: &Learned) {
        for b in &learned.brokers {
            let addr = if b.host.contains(':') {
                format!("[{}]:{}", b.host, b.port)
            } else {
                format!("{}:{}", b.host, b.port)
            };
            let known = self
                .brokers
                .read()
                .map(|m| m.get(&b.node_id) == Some(&addr))
                .unwrap_or(false);
            if !known && let Ok(mut m) = self.brokers.write() {
                tracing::info!(node_id = b.node_id, upstream = %addr, "learned broker address");
                m.insert(b.node_id, addr);
            }
            self.ensure_listener(b.node_id);
        }
        for (id, name) in &learned.topics {
            self.gate
                .topic_names
                .learn(uuid::Uuid::from_bytes(*id), name.0.to_string());
        }
    }

    /// Bind the loopback port for a broker (once) and accept on it.
    pub fn ensure_listener(self: &Arc<Self>, node_id: i32) {
        let Ok(mut listening) = self.listening.lock() else {
            return;
        };
        if listening.contains(&node_id) || self.shutdown.is_cancelled() {
            return;
        }
        let port = match self.plan.local_port(node_id) {
            Ok(p) => p,
            Err(reason) => {
                tracing::warn!(%reason, "not listening for this broker");
                return;
            }
        };
        let addr = SocketAddr::new(self.plan.listen_ip, port);
        match bind(addr) {
            Ok(listener) => {
                tracing::info!(node_id, %addr, "listening for broker");
                listening.insert(node_id);
                tokio::spawn(Arc::clone(self).accept_loop(listener, Target::Broker(node_id)));
            }
            Err(error) => {
                tracing::error!(node_id, %addr, %error, "cannot listen for broker; clients will not reach it")
            }
        }
    }

    /// Accept client connections until shutdown; one task per connection.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener, target: Target) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                        // Closed at once: the app sees a reset and retries,
                        // and no broker connection or buffer is spent on it.
                        self.metrics.connections_refused.inc();
                        tracing::warn!(%peer, max = self.limits.max_connections, "connection limit reached; closing the new connection");
                        drop(socket);
                        continue;
                    };
                    let _ = socket.set_nodelay(true);
                    self.metrics.connections_total.inc();
                    self.metrics.connections_active.inc();
                    let proxy = Arc::clone(&self);
                    self.connections.spawn(async move {
                        connection::serve(Arc::clone(&proxy), socket, peer, target).await;
                        proxy.metrics.connections_active.dec();
                        drop(slot);
                    });
                }
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Bind with SO_REUSEADDR semantics of the platform default (tokio sets it on Unix).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}
