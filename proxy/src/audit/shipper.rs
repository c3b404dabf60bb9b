//! The shipper loop shared by the OTLP and Kubernetes Events shippers: follow the spool
//! from the last acknowledged seq, hand batches to a sink, persist the cursor, retry with
//! backoff while the sink is down.
//!
//! Delivery is **at-least-once**: the cursor is stored after the sink acknowledged a batch,
//! so a crash (or a lost acknowledgement) between the two re-sends that batch — at most one
//! batch (`batch` records) per restart or outage. Consumers deduplicate on `streamgate.seq`
//! (with `streamgate.hash`, the pair identifies a record exactly).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::segment::Tail;

/// Where a sink's deliveries go.
pub trait Sink: Send {
    /// Deliver records (in seq order). An error means "not delivered, retry later".
    fn deliver(&mut self, records: &[Value]) -> impl Future<Output = Result<(), String>> + Send;

    /// Called when the spool has nothing new (and once more, with `last = true`, on
    /// shutdown): time-based work such as closing aggregation windows.
    fn idle(&mut self, _last: bool) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The seq that may be stored as acknowledged once everything up to `delivered` was
    /// handed over (a sink that still holds some records in memory returns less).
    fn ack_floor(&self, delivered: u64) -> u64 {
        delivered
    }
}

/// Shipper timing.
#[derive(Clone, Debug)]
pub struct ShipperConfig {
    pub batch: usize,
    /// How often to look at the spool when no in-process writer notifies us.
    pub poll: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Where this shipper reports how far behind it is (the evidence shipper
    /// does: failureMode Closed depends on it).
    pub progress: Option<Arc<ShipProgress>>,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            batch: 512,
            poll: Duration::from_millis(500),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            progress: None,
        }
    }
}

/// How far a shipper is behind the spool: the time of the oldest durable
/// record it has not delivered yet. Lock-free, read on every PHI request.
#[derive(Debug, Default)]
pub struct ShipProgress {
    /// Milliseconds since the epoch of the oldest undelivered record; 0 when
    /// everything durable was delivered.
    oldest_undelivered_ms: AtomicU64,
}

impl ShipProgress {
    /// `record` is the oldest the shipper holds undelivered.
    fn behind_since(&self, record: &Value) {
        let ms = record
            .get("time")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .unwrap_or_else(now_ms)
            .max(1);
        self.oldest_undelivered_ms.store(ms, Ordering::Relaxed);
    }

    fn caught_up(&self) {
        self.oldest_undelivered_ms.store(0, Ordering::Relaxed);
    }

    /// How long the oldest undelivered record has waited (zero when caught up).
    pub fn lag(&self) -> Duration {
        match self.oldest_undelivered_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(now_ms().saturating_sub(since)),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a shipper stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("audit shipper cursor {path}: {source}")]
    Cursor {
        path: String,
        source: std::io::Error,
    },
    #[error("audit shipper reading {dir}: {source}")]
    Read { dir: String, source: std::io::Error },
}

/// The persisted "acknowledged up to seq N" of one shipper: `<dir>/<name>.cursor`.
#[derive(Clone, Debug)]
pub struct Cursor {
    path: PathBuf,
}

impl Cursor {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            path: dir.join(format!("{name}.cursor")),
        }
    }

    /// The acknowledged seq (0 when nothing was ever shipped).
    pub fn load(&self) -> Result<u64, ShipError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|e| self.err(std::io::Error::other(format!("not a seq: {e}")))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Store atomically (write, fsync, rename).
    pub fn store(&self, seq: u64) -> Result<(), ShipError> {
        let tmp = self.path.with_extension("cursor.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{seq}")?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| self.err(e))
    }

    fn err(&self, source: std::io::Error) -> ShipError {
        ShipError::Cursor {
            path: self.path.display().to_string(),
            source,
        }
    }
}

/// Ship the spool in `dir` to `sink` until `shutdown`; then deliver what is left (as long as
/// the sink accepts it) and return the last acknowledged seq. `head`, when the writer runs
/// in this process, bounds reading to durable records and wakes the shipper on new ones.
pub async fn run<S: Sink>(
    dir: &Path,
    name: &str,
    mut sink: S,
    config: ShipperConfig,
    mut head: Option<watch::Receiver<u64>>,
    shutdown: CancellationToken,
) -> Result<u64, ShipError> {
    let cursor = Cursor::new(dir, name);
    let mut acked = cursor.load()?;
    let mut tail = Tail::new(dir, acked + 1);
    let mut backoff = config.backoff_initial;
    let mut pending: Vec<Value> = Vec::new();
    tracing::info!(
        shipper = name,
        from_seq = acked + 1,
        "audit shipper started"
    );
    loop {
        let draining = shutdown.is_cancelled();
        if pending.is_empty() {
            let up_to = head.as_ref().map_or(u64::MAX, |h| *h.borrow());
            pending = tail
                .read(config.batch, up_to)
                .map_err(|source| ShipError::Read {
                    dir: dir.display().to_string(),
                    source,
                })?;
        }
        if let Some(progress) = &config.progress {
            match pending.first() {
                Some(oldest) => progress.behind_since(oldest),
                None => progress.caught_up(),
            }
        }
        if pending.is_empty() {
            sink.idle(draining).await;
            acked = store_floor(&cursor, &sink, tail.next_seq() - 1, acked)?;
            if draining {
                return Ok(acked);
            }
            let wake = async {
                match head.as_mut() {
                    Some(h) => {
                        if h.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep(config.poll) => {}
                () = shutdown.cancelled() => {}
            }
            continue;
        }
        match sink.deliver(&pending).await {
            Ok(()) => {
                let last = pending
                    .last()
                    .and_then(|v| v.get("seq"))
                    .and_then(Value::as_u64)
                    .unwrap_or(acked);
                pending.clear();
                backoff = config.backoff_initial;
                acked = store_floor(&cursor, &sink, last, acked)?;
            }
            Err(error) => {
                tracing::warn!(shipper = name, %error, retry_in = ?backoff, "audit shipper: delivery failed, will retry");
                if draining {
                    return Ok(acked);
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => {}
                }
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

fn store_floor<S: Sink>(
    cursor: &Cursor,
    sink: &S,
    delivered: u64,
    acked: u64,
) -> Result<u64, ShipError> {
    let floor = sink.ack_floor(delivered);
    if floor > acked {
        cursor.store(floor)?;
        return Ok(floor);
    }
    Ok(acked)
}
