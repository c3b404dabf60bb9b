//! The audit trail: every governed request recorded,
//! durable, tamper-evident, shipped as OTLP logs and Kubernetes Events.
//!
//! - `record`   — the record type and its builder (what the data path fills in)
//! - `chain`    — the SHA-256 hash chain and its verifier (pure)
//! - `segment`  — spool files: naming, recovery scan, reading/tailing
//! - `spool`    — the writer thread: group fsync, failure handling, checkpoints
//! - `shipper`  — the cursor-based at-least-once delivery loop
//! - `otlp`     — OTLP logs sink (opentelemetry-otlp)
//! - `events`   — Kubernetes Events sink (kube-runtime's Recorder), per-minute aggregation
//! - `verify`, `export`, `cli` — `streamgate-proxy audit verify|export`
//! - `stage`    — the data path's audit stage: one record per governed request (failureMode)
//! - `summary`  — what a Produce/Fetch carried, from the batch headers (pure)
//! - `policy_reloads` — policy reloads (applied, rejected, in force at start) as records
//!
//! The data path uses [`Audit`]: construct it with [`Audit::start`] from [`AuditArgs`]
//! (flattened into the run command), then for each governed request build an
//! [`AuditRecord`] and call [`Audit::record_with`] with the policy's `failureMode`.
//!
//! Dependencies used here and why: `sha2`/`hex` (the chain), `rand` (genesis), `chrono`
//! (RFC 3339 times), `base64` (Full-mode payloads), `opentelemetry*` (OTLP logs), `kube`
//! + `k8s-openapi` (Events), `tokio-util` (cancellation of shippers), `humantime` (flags).

pub mod anchors;
pub mod chain;
pub mod cli;
pub mod digest;
pub mod disclosures;
pub mod events;
pub mod export;
pub mod matcher;
pub mod otlp;
pub mod policy_reloads;
pub mod prune;
pub mod record;
pub mod replay;
pub mod segment;
pub mod shipper;
pub mod spool;
pub mod stage;
pub mod summary;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streamgate_crds::FailureMode;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use record::{
    AuditDecision, AuditRecord, MaskingSummary, Operation, PodIdentity, PolicyRef, RecordKind,
    ResourceAccess, Subject,
};
pub use spool::{Durable, Receipt, SpoolConfig, SpoolError, SpoolHandle, SpoolHealth};

/// Audit flags, flattened into `streamgate-proxy run`.
#[derive(Clone, Debug, clap::Args)]
pub struct AuditArgs {
    /// Directory of the audit spool (an emptyDir or a PVC in the pod).
    #[arg(
        long = "audit-dir",
        env = streamgate_crds::contract::ENV_AUDIT_DIR,
        default_value = "/var/run/streamgate/audit"
    )]
    pub audit_dir: PathBuf,
    /// Start a new spool segment once the current one reaches this many bytes
    /// (also the unit of pruning).
    #[arg(long = "audit-segment-bytes", env = streamgate_crds::contract::ENV_AUDIT_SEGMENT_BYTES, default_value_t = 16 * 1024 * 1024)]
    pub audit_segment_bytes: u64,
    /// Keep this many newest segments on the pod once shipped; older shipped
    /// ones are pruned (never an unshipped record).
    #[arg(long = "audit-keep-segments", env = streamgate_crds::contract::ENV_AUDIT_KEEP_SEGMENTS, default_value_t = 4)]
    pub audit_keep_segments: usize,
    /// The spool's budget in bytes: past it, appends fail until shipped
    /// segments are pruned (Closed refuses PHI; Open carries on and records
    /// how many records it could not keep). Stays under the volume's limit so
    /// a full spool never gets the pod evicted.
    #[arg(long = "audit-max-spool-bytes", env = streamgate_crds::contract::ENV_AUDIT_MAX_SPOOL_BYTES, default_value_t = streamgate_crds::contract::DEFAULT_MAX_SPOOL_BYTES)]
    pub audit_max_spool_bytes: u64,
    /// Write a checkpoint record (seq, hash of the head) after this many records…
    #[arg(
        long = "audit-checkpoint-every",
        env = streamgate_crds::contract::ENV_AUDIT_CHECKPOINT_EVERY,
        default_value_t = 10_000
    )]
    pub audit_checkpoint_every: u64,
    /// …or after this long (e.g. `60s`, `5m`).
    #[arg(long = "audit-checkpoint-interval", env = streamgate_crds::contract::ENV_AUDIT_CHECKPOINT_INTERVAL, default_value = "60s", value_parser = humantime::parse_duration)]
    pub audit_checkpoint_interval: Duration,
    /// Ship to OTLP: `true`, `false`; default: when OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT is set.
    #[arg(long = "audit-otlp", env = streamgate_crds::contract::ENV_AUDIT_OTLP)]
    pub audit_otlp: Option<bool>,
    /// Publish Kubernetes Events: `true`, `false`; default: when running in a cluster.
    #[arg(long = "audit-events", env = streamgate_crds::contract::ENV_AUDIT_EVENTS)]
    pub audit_events: Option<bool>,
    /// This pod's name (downward API).
    #[arg(long = "audit-pod-name", env = streamgate_crds::contract::ENV_POD_NAME)]
    pub audit_pod_name: Option<String>,
    /// This pod's namespace (downward API).
    #[arg(long = "audit-pod-namespace", env = streamgate_crds::contract::ENV_POD_NAMESPACE)]
    pub audit_pod_namespace: Option<String>,
    /// This pod's ServiceAccount (downward API).
    #[arg(long = "audit-service-account", env = streamgate_crds::contract::ENV_SERVICE_ACCOUNT)]
    pub audit_service_account: Option<String>,
    /// This pod's UID (downward API), for Events' `regarding`.
    #[arg(long = "audit-pod-uid", env = streamgate_crds::contract::ENV_POD_UID)]
    pub audit_pod_uid: Option<String>,
}

impl AuditArgs {
    /// Defaults with the given spool directory (tests, embedding).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            audit_dir: dir.into(),
            audit_segment_bytes: 16 * 1024 * 1024,
            audit_keep_segments: 4,
            audit_max_spool_bytes: streamgate_crds::contract::DEFAULT_MAX_SPOOL_BYTES,
            audit_checkpoint_every: 10_000,
            audit_checkpoint_interval: Duration::from_secs(60),
            audit_otlp: Some(false),
            audit_events: Some(false),
            audit_pod_name: None,
            audit_pod_namespace: None,
            audit_service_account: None,
            audit_pod_uid: None,
        }
    }

    pub fn pod(&self) -> PodIdentity {
        PodIdentity {
            pod: self.audit_pod_name.clone(),
            namespace: self.audit_pod_namespace.clone(),
            service_account: self.audit_service_account.clone(),
        }
    }

    pub fn spool_config(&self) -> SpoolConfig {
        SpoolConfig {
            segment_bytes: self.audit_segment_bytes,
            checkpoint_every: self.audit_checkpoint_every.max(1),
            checkpoint_interval: self.audit_checkpoint_interval,
            pod: self.pod(),
            keep_segments: self.audit_keep_segments,
            max_bytes: self.audit_max_spool_bytes,
            ..SpoolConfig::new(&self.audit_dir)
        }
    }
}

/// A record on its way to durability ([`Audit::commit_with`]).
#[derive(Debug)]
pub enum Commit {
    /// Nothing to wait for: queued under Open, or already failed.
    Settled(Result<(), AuditError>),
    /// Closed: durable when the receipt completes (and the collector keeps up).
    Durable {
        receipt: Receipt,
        max_ship_lag: Duration,
    },
}

impl Commit {
    /// Whether waiting can still change the outcome.
    pub fn is_pending(&self) -> bool {
        matches!(self, Commit::Durable { .. })
    }
}

/// Why a record does not count as durable: the caller refuses the request (failureMode
/// Closed). The message is safe to show a client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("audit record could not be made durable: {0}")]
    Spool(#[from] SpoolError),
    /// The record is on the local disk, but the record of evidence — the
    /// collector — is further behind than the policy allows.
    #[error(
        "audit shipping to the collector lags {}s behind (maxShipLag {}s): PHI requests are refused until it catches up",
        lag.as_secs(),
        max.as_secs()
    )]
    ShipLag { lag: Duration, max: Duration },
}

/// The audit trail of one sidecar. Cheap to share (`Arc<Audit>`); all methods take `&self`.
#[derive(Debug)]
pub struct Audit {
    spool: SpoolHandle,
    pod: PodIdentity,
    shutdown: CancellationToken,
    shippers: Mutex<Vec<JoinHandle<()>>>,
    /// The shipper to the record of evidence (OTLP), when one runs.
    evidence: std::sync::OnceLock<Arc<shipper::ShipProgress>>,
    /// Whether the current lag past `maxShipLag` has been recorded (Open mode
    /// records each crossing, not each request).
    lag_recorded: std::sync::atomic::AtomicBool,
}

impl Audit {
    /// Start the spool writer and the configured shippers, and record `SidecarStart`.
    /// Never fails on an unusable spool: records then fail (Closed refuses, Open reports)
    /// until the directory works. Fails only if a shipper is asked for and cannot be built.
    pub async fn start(args: &AuditArgs) -> anyhow::Result<Arc<Self>> {
        Self::start_with(args, None).await
    }

    /// [`Self::start`] with the kube client Events go through (the sidecar
    /// session's, as `streamgate-sidecar`); `None`: the in-cluster default.
    pub async fn start_with(
        args: &AuditArgs,
        kube: Option<kube::Client>,
    ) -> anyhow::Result<Arc<Self>> {
        let audit = Arc::new(Self::with_spool(args.spool_config()));
        let want_otlp = args.audit_otlp.unwrap_or_else(otlp::configured_in_env);
        if want_otlp {
            let exporter = otlp::exporter_from_env(&audit.pod)
                .map_err(|e| anyhow::anyhow!("OTLP exporter: {e}"))?;
            audit
                .spawn_evidence_shipper(
                    "otlp",
                    otlp::OtlpSink::new(exporter),
                    shipper::ShipperConfig::default(),
                )
                .await;
        }
        let want_events = args
            .audit_events
            .unwrap_or_else(|| std::env::var_os("KUBERNETES_SERVICE_HOST").is_some());
        if want_events {
            let client = match kube {
                Some(c) => Ok(c),
                None => kube::Client::try_default().await,
            };
            match client {
                Ok(client) => {
                    let sink =
                        events::EventsSink::new(client, &audit.pod, args.audit_pod_uid.clone());
                    audit.spawn_shipper("events", sink).await;
                }
                // Asked for explicitly: a configuration error. Auto-detected: Events are a
                // signal, not the record — run without them and say so.
                Err(e) if args.audit_events == Some(true) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "audit: no Kubernetes client, Events disabled")
                }
            }
        }
        let start = AuditRecord::event(
            RecordKind::SidecarStart,
            format!("streamgate-proxy {} started", env!("CARGO_PKG_VERSION")),
        );
        if let Err(e) = audit.record_durable(start).await {
            tracing::error!(error = %e, "audit: SidecarStart could not be recorded");
        }
        Ok(audit)
    }

    /// An audit trail with only the spool (no shippers, no start record).
    pub fn with_spool(config: SpoolConfig) -> Self {
        let pod = config.pod.clone();
        Self {
            spool: SpoolHandle::start(config),
            pod,
            shutdown: CancellationToken::new(),
            shippers: Mutex::new(Vec::new()),
            evidence: std::sync::OnceLock::new(),
            lag_recorded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ship to the record of evidence through `sink`, tracking its lag for `maxShipLag`.
    pub async fn spawn_evidence_shipper<S: shipper::Sink + 'static>(
        &self,
        name: &'static str,
        sink: S,
        mut config: shipper::ShipperConfig,
    ) {
        let progress = self.evidence.get_or_init(Default::default).clone();
        config.progress = Some(progress);
        self.spawn_shipper_with(name, sink, config).await;
    }

    /// How far the evidence shipper is behind; `None` without one.
    pub fn ship_lag(&self) -> Option<Duration> {
        self.evidence.get().map(|p| p.lag())
    }

    /// Is shipping further behind than `max`? Each crossing of the bound (and
    /// each recovery) is itself a record, so an Open-mode sidecar that carried
    /// on leaves the evidence of how long it ran unshipped.
    pub async fn check_ship_lag(&self, max: Duration) -> Result<(), AuditError> {
        use std::sync::atomic::Ordering;
        let lag = self.ship_lag().unwrap_or_default();
        let over = lag > max;
        // Read before writing: every PHI request of every connection asks,
        // and the answer almost never changes — no shared write per request.
        if over != self.lag_recorded.load(Ordering::Relaxed)
            && over != self.lag_recorded.swap(over, Ordering::Relaxed)
        {
            let reason = if over {
                format!(
                    "audit shipping lags {}s behind the collector (maxShipLag {}s)",
                    lag.as_secs(),
                    max.as_secs()
                )
            } else {
                format!("audit shipping caught up (maxShipLag {}s)", max.as_secs())
            };
            tracing::warn!("{reason}");
            self.record(AuditRecord::event(RecordKind::SpoolFailure, reason))
                .await;
        }
        if over {
            return Err(AuditError::ShipLag { lag, max });
        }
        Ok(())
    }

    /// Run a shipper over this spool until shutdown.
    pub async fn spawn_shipper<S: shipper::Sink + 'static>(&self, name: &'static str, sink: S) {
        self.spawn_shipper_with(name, sink, shipper::ShipperConfig::default())
            .await;
    }

    /// [`Audit::spawn_shipper`] with explicit batch size and timings.
    pub async fn spawn_shipper_with<S: shipper::Sink + 'static>(
        &self,
        name: &'static str,
        sink: S,
        config: shipper::ShipperConfig,
    ) {
        let dir = self.spool.dir().to_path_buf();
        let head = Some(self.spool.durable_head());
        let token = self.shutdown.child_token();
        let task = tokio::spawn(async move {
            if let Err(e) = shipper::run(&dir, name, sink, config, head, token).await {
                tracing::error!(shipper = name, error = %e, "audit shipper stopped");
            }
        });
        self.shippers.lock().await.push(task);
    }

    /// Where the sidecar runs (stamped on every record).
    pub fn pod(&self) -> &PodIdentity {
        &self.pod
    }

    /// Record without waiting for durability (failureMode Open, or non-PHI events). A
    /// failure is reported by the writer (error log, health flag, a SpoolFailure record
    /// once the spool works again).
    pub async fn record(&self, record: AuditRecord) {
        if let Err(e) = self.spool.append(record.with_pod(&self.pod)).await {
            tracing::error!(error = %e, "audit record dropped");
        }
    }

    /// Record and wait until the record is fsynced (failureMode Closed: release the
    /// response only on `Ok`; on `Err` refuse the request).
    pub async fn record_durable(&self, record: AuditRecord) -> Result<Durable, AuditError> {
        let receipt = self.spool.append(record.with_pod(&self.pod)).await?;
        Ok(receipt.await?)
    }

    /// Record per the policy's failure mode: `Closed` waits for durability and returns the
    /// error to turn into a refusal; `Open` queues the record and always returns `Ok`.
    /// `Closed` also needs the collector within `max_ship_lag`; `Open` only
    /// records a crossing of it.
    pub async fn record_with(
        &self,
        mode: FailureMode,
        max_ship_lag: Duration,
        record: AuditRecord,
    ) -> Result<(), AuditError> {
        match mode {
            FailureMode::Closed => {
                self.record_durable(record).await?;
                self.check_ship_lag(max_ship_lag).await
            }
            FailureMode::Open => {
                self.record(record).await;
                let _ = self.check_ship_lag(max_ship_lag).await;
                Ok(())
            }
        }
    }

    /// [`Audit::record_with`] without the wait: the record is queued now and
    /// the returned [`Commit`] resolves when it is durable (Closed), so the
    /// caller can go on with the next response while the writer syncs —
    /// responses are released as their receipts complete, in order.
    pub async fn commit_with(
        &self,
        mode: FailureMode,
        max_ship_lag: Duration,
        record: AuditRecord,
    ) -> Commit {
        match mode {
            FailureMode::Closed => match self.spool.append(record.with_pod(&self.pod)).await {
                Ok(receipt) => Commit::Durable {
                    receipt,
                    max_ship_lag,
                },
                Err(e) => Commit::Settled(Err(e.into())),
            },
            FailureMode::Open => {
                self.record(record).await;
                let _ = self.check_ship_lag(max_ship_lag).await;
                Commit::Settled(Ok(()))
            }
        }
    }

    /// Wait for a [`Commit`]: `Ok` once its record is durable and the
    /// collector is within `maxShipLag`.
    pub async fn settle(&self, commit: Commit) -> Result<(), AuditError> {
        match commit {
            Commit::Settled(result) => result,
            Commit::Durable {
                receipt,
                max_ship_lag,
            } => {
                receipt.await?;
                self.check_ship_lag(max_ship_lag).await
            }
        }
    }

    /// Queue a record from synchronous code (does not wait for channel space: under
    /// extreme backpressure the record is dropped and reported).
    pub fn try_record(&self, record: AuditRecord) -> Option<Receipt> {
        match self.spool.try_append(record.with_pod(&self.pod)) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "audit record dropped");
                None
            }
        }
    }

    /// Spool health (metrics, readiness).
    pub fn health(&self) -> &Arc<SpoolHealth> {
        self.spool.health()
    }

    pub fn spool(&self) -> &SpoolHandle {
        &self.spool
    }

    /// Record `SidecarStop`, flush, stop the writer, and give shippers up to `grace` to
    /// deliver what is left (the rest is delivered after the next start).
    pub async fn shutdown(&self, grace: Duration) {
        let stop = AuditRecord::event(RecordKind::SidecarStop, "streamgate-proxy stopping");
        if let Err(e) = self.record_durable(stop).await {
            tracing::error!(error = %e, "audit: SidecarStop could not be recorded");
        }
        self.spool.close().await;
        self.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> = self.shippers.lock().await.drain(..).collect();
        for mut task in tasks {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                tracing::warn!(
                    "audit shipper did not finish within the grace period; it resumes from its cursor next start"
                );
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_refuses_and_open_continues_when_the_spool_is_unwritable() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("spool");
        std::fs::write(&dir, b"a file, not a directory").unwrap();
        let audit = Audit::with_spool(SpoolConfig::new(&dir));
        let rec = || AuditRecord::request("Fetch", 13, Operation::Read);
        let err = audit
            .record_with(FailureMode::Closed, Duration::from_secs(60), rec())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("audit record could not be made durable: audit spool"),
            "{err}"
        );
        audit
            .record_with(FailureMode::Open, Duration::from_secs(60), rec())
            .await
            .unwrap();
        audit.shutdown(Duration::from_secs(1)).await;
        assert!(!audit.health().is_healthy());
        assert!(audit.health().failed_records() >= 2);
    }

    #[tokio::test]
    async fn start_and_shutdown_bracket_the_trail() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = AuditArgs::new(dir.path());
        args.audit_pod_name = Some("intake-5d8f7-abcde".into());
        args.audit_pod_namespace = Some("clinical".into());
        let audit = Audit::start(&args).await.unwrap();
        let d = audit
            .record_durable(
                AuditRecord::request("Produce", 9, Operation::Write)
                    .decision(AuditDecision::Allow, "rule w"),
            )
            .await
            .unwrap();
        assert_eq!(d.seq, 2);
        audit.shutdown(Duration::from_secs(1)).await;
        let recs: Vec<AuditRecord> = segment::read_lines(dir.path())
            .unwrap()
            .map(|l| serde_json::from_str(&l.unwrap().2).unwrap())
            .collect();
        let kinds: Vec<RecordKind> = recs.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            vec![
                RecordKind::SidecarStart,
                RecordKind::Request,
                RecordKind::SidecarStop
            ]
        );
        assert!(
            recs.iter()
                .all(|r| r.pod.as_deref() == Some("intake-5d8f7-abcde")
                    && r.namespace.as_deref() == Some("clinical"))
        );
    }
}
