//! The spool writer: one thread owns the files and the chain; callers hand it records.
//!
//! Group commit: the writer takes everything queued (up to `max_batch`), links and writes it,
//! then issues one `fdatasync` for the batch and completes every receipt. While a sync runs,
//! the next batch queues up, so the sync interval is bounded by one fsync and throughput
//! grows with load instead of paying one fsync per record.
//!
//! A failed write or sync rolls the segment back to its length before the batch and leaves
//! the chain where it was, so the spool never holds a half-batch or a gap; every receipt of
//! the batch gets the error. When writing works again, a `SpoolFailure` record states how
//! many records could not be spooled and why. The writer also reopens the directory on each
//! batch after a failure, so a spool that was unwritable at start recovers by itself.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::chain::{Chain, new_genesis};
use super::record::{AuditRecord, CheckpointRef, PodIdentity, RecordKind};
use super::segment::{self, Segment, segment_name};

/// Spool settings.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// A new segment starts once the current one has reached this size.
    pub segment_bytes: u64,
    /// At most this many records per fsync.
    pub max_batch: usize,
    /// Emit a `Checkpoint` record after this many records…
    pub checkpoint_every: u64,
    /// …or after this long, whichever comes first (only if records were written since).
    pub checkpoint_interval: Duration,
    /// Stamped on records the spool writes itself.
    pub pod: PodIdentity,
    /// Shipped segments are pruned down to this many newest ones (the local tail).
    pub keep_segments: usize,
    /// The spool's budget on disk: past it, appends fail (Closed refuses PHI,
    /// Open counts what it could not keep) until shipped segments are pruned.
    /// Below the volume's own limit, so a full spool never evicts the pod.
    pub max_bytes: u64,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            max_batch: 1024,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            pod: PodIdentity::default(),
            keep_segments: 4,
            max_bytes: u64::MAX,
        }
    }
}

/// Why a record could not be made durable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    #[error("audit spool {dir}: {message}")]
    Io { dir: String, message: String },
    #[error("audit record could not be serialized: {0}")]
    Serialize(String),
    #[error("the audit spool writer has stopped")]
    Closed,
}

/// Where a record landed once durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durable {
    pub seq: u64,
    pub hash: String,
}

/// Awaiting a receipt waits until the record is on disk (fsynced) — or its failure.
#[derive(Debug)]
pub struct Receipt {
    rx: oneshot::Receiver<Result<Durable, SpoolError>>,
}

impl Future for Receipt {
    type Output = Result<Durable, SpoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(SpoolError::Closed)))
    }
}

/// Health of the spool, shared with metrics and readiness.
#[derive(Debug, Default)]
pub struct SpoolHealth {
    healthy: AtomicBool,
    failed_records: AtomicU64,
    written_records: AtomicU64,
}

impl SpoolHealth {
    /// False after a failed batch until a batch succeeds again.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    /// Records that could not be spooled since start (a metric).
    pub fn failed_records(&self) -> u64 {
        self.failed_records.load(Ordering::Relaxed)
    }
    pub fn written_records(&self) -> u64 {
        self.written_records.load(Ordering::Relaxed)
    }
}

enum Msg {
    Append(AuditRecord, oneshot::Sender<Result<Durable, SpoolError>>),
    Close(oneshot::Sender<()>),
}

/// A cloneable handle to the spool writer.
#[derive(Clone, Debug)]
pub struct SpoolHandle {
    tx: mpsc::Sender<Msg>,
    health: Arc<SpoolHealth>,
    head: watch::Receiver<u64>,
    dir: PathBuf,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Append(..) => "Append",
            Msg::Close(..) => "Close",
        })
    }
}

impl SpoolHandle {
    /// Start the writer thread. Never fails: if the directory is unusable, every append
    /// reports the error (so `Closed` policies refuse and `Open` ones continue) until it
    /// becomes usable.
    pub fn start(config: SpoolConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.max_batch.max(1) * 4);
        let health = Arc::new(SpoolHealth {
            healthy: AtomicBool::new(true),
            ..SpoolHealth::default()
        });
        let (head_tx, head) = watch::channel(0);
        let dir = config.dir.clone();
        let writer = Writer::new(config, Arc::clone(&health), head_tx);
        let spawned = std::thread::Builder::new()
            .name("audit-spool".into())
            .spawn(move || writer.run(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "audit spool writer thread could not start");
            health.healthy.store(false, Ordering::Relaxed);
        }
        Self {
            tx,
            health,
            head,
            dir,
        }
    }

    /// Queue a record; the receipt resolves once it is durable.
    pub async fn append(&self, record: AuditRecord) -> Result<Receipt, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(record, tx))
            .await
            .map_err(|_| SpoolError::Closed)?;
        Ok(Receipt { rx })
    }

    /// Queue a record without waiting for channel space (for non-async callers); fails
    /// with `Closed` if the queue is full or the writer stopped.
    pub fn try_append(&self, record: AuditRecord) -> Result<Receipt, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Msg::Append(record, tx))
            .map_err(|_| SpoolError::Closed)?;
        Ok(Receipt { rx })
    }

    /// Flush, stop the writer and wait for it.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub fn health(&self) -> &Arc<SpoolHealth> {
        &self.health
    }

    /// The highest durable seq, updated after every sync (shippers wait on it).
    pub fn durable_head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// An open segment being appended to.
struct OpenSegment {
    first_seq: u64,
    file: File,
    len: u64,
}

/// Records that could not be spooled, reported once writing works again.
struct FailureNote {
    records: u64,
    since: String,
    error: String,
}

struct Writer {
    config: SpoolConfig,
    health: Arc<SpoolHealth>,
    head: watch::Sender<u64>,
    chain: Option<Chain>,
    segment: Option<OpenSegment>,
    failure: Option<FailureNote>,
    /// Lifecycle records produced by the spool itself (recovery), written first.
    own: Vec<AuditRecord>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Bytes the segments hold (kept up to date: checked on every batch).
    bytes: u64,
}

type Batch = Vec<(
    AuditRecord,
    Option<oneshot::Sender<Result<Durable, SpoolError>>>,
)>;

impl Writer {
    fn new(config: SpoolConfig, health: Arc<SpoolHealth>, head: watch::Sender<u64>) -> Self {
        Self {
            config,
            health,
            head,
            chain: None,
            segment: None,
            failure: None,
            own: Vec::new(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            bytes: 0,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "audit spool writer runtime could not start");
                self.health.healthy.store(false, Ordering::Relaxed);
                return;
            }
        };
        if let Err(e) = self.open() {
            self.fail(0, &e);
        }
        rt.block_on(async move {
            loop {
                let wait = self
                    .config
                    .checkpoint_interval
                    .saturating_sub(self.last_checkpoint.elapsed());
                let first =
                    match tokio::time::timeout(wait.max(Duration::from_millis(1)), rx.recv()).await
                    {
                        Ok(Some(msg)) => msg,
                        Ok(None) => break,
                        Err(_) => {
                            self.maybe_checkpoint(true);
                            continue;
                        }
                    };
                let mut batch: Batch = Vec::new();
                let mut close = None;
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Append(rec, tx) => batch.push((rec, Some(tx))),
                        Msg::Close(ack) => {
                            close = Some(ack);
                            break;
                        }
                    }
                    if batch.len() < self.config.max_batch {
                        next = rx.try_recv().ok();
                    }
                }
                self.write_batch(batch);
                self.maybe_checkpoint(false);
                if let Some(ack) = close {
                    let _ = ack.send(());
                    break;
                }
            }
        });
    }

    /// Remove segments every shipper has delivered (beyond the local tail).
    fn prune_shipped(&mut self) {
        let dir = &self.config.dir;
        let pruned = super::prune::shipped_by_all(dir).and_then(|floor| match floor {
            Some(shipped) => super::prune::prune(dir, self.config.keep_segments, shipped),
            None => Ok(0),
        });
        match pruned {
            Ok(0) => {}
            Ok(freed) => {
                self.bytes = self.bytes.saturating_sub(freed);
                tracing::debug!(freed, "audit spool: shipped segments pruned");
            }
            Err(e) => tracing::warn!(error = %e, "audit spool: pruning shipped segments failed"),
        }
    }

    /// Recover the directory and open the segment to append to.
    fn open(&mut self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.config.dir)?;
        let recovery = segment::recover(&self.config.dir)?;
        self.bytes = super::prune::spool_bytes(&self.config.dir)?;
        if let Some(torn) = &recovery.torn {
            tracing::warn!(
                segment = %torn.segment.display(), bytes = torn.bytes, moved_to = %torn.moved_to.display(),
                "audit spool: torn final line found on start, moved aside"
            );
            self.own.push(
                AuditRecord::event(
                    RecordKind::SpoolRecovered,
                    format!(
                        "torn final line in {}: {} bytes moved to {}",
                        file_name(&torn.segment),
                        torn.bytes,
                        file_name(&torn.moved_to)
                    ),
                )
                .with_pod(&self.config.pod),
            );
        }
        let chain = match recovery.head {
            Some((seq, hash)) => {
                Chain::resume(seq, hash, recovery.genesis.clone()).ok_or_else(|| {
                    std::io::Error::other(format!(
                        "the spool's last record claims seq {seq}: the chain cannot continue \
                     (no real chain gets there; move the spool aside and verify it)"
                    ))
                })?
            }
            None => Chain::start(new_genesis()),
        };
        let segment = match recovery.segment {
            Some((Segment { first_seq, path }, len)) => OpenSegment {
                first_seq,
                file: OpenOptions::new().append(true).open(path)?,
                len,
            },
            None => self.create_segment(chain.next_seq())?,
        };
        // Shippers may deliver what an earlier run left durable on disk.
        self.head.send_replace(chain.next_seq() - 1);
        self.chain = Some(chain);
        self.segment = Some(segment);
        Ok(())
    }

    fn create_segment(&self, first_seq: u64) -> std::io::Result<OpenSegment> {
        let path = self.config.dir.join(segment_name(first_seq));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        // The new name must survive a crash too.
        File::open(&self.config.dir)?.sync_all()?;
        Ok(OpenSegment {
            first_seq,
            file,
            len,
        })
    }

    fn write_batch(&mut self, mut batch: Batch) {
        if batch.is_empty() {
            return;
        }
        if (self.chain.is_none() || self.segment.is_none())
            && let Err(e) = self.open()
        {
            self.fail_batch(batch, &e);
            return;
        }
        let mut prefix: Batch = self.own.drain(..).map(|r| (r, None)).collect();
        if let Some(note) = &self.failure {
            prefix.push((
                AuditRecord::event(
                    RecordKind::SpoolFailure,
                    format!(
                        "{} audit records could not be spooled since {}: {}",
                        note.records, note.since, note.error
                    ),
                )
                .with_pod(&self.config.pod),
                None,
            ));
        }
        if !prefix.is_empty() {
            prefix.append(&mut batch);
            batch = prefix;
        }
        match self.write_records(&mut batch) {
            Ok(last) => {
                self.failure = None;
                self.health.healthy.store(true, Ordering::Relaxed);
                self.health
                    .written_records
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.since_checkpoint += batch.len() as u64;
                // The head moves first: whoever holds a receipt may look at
                // it (and a shipper may ship) as soon as the receipt completes.
                let _ = self.head.send(last);
                for (rec, tx) in batch {
                    if let Some(tx) = tx {
                        let _ = tx.send(Ok(Durable {
                            seq: rec.seq,
                            hash: rec.hash,
                        }));
                    }
                }
            }
            Err(e) => {
                // Our own records stay queued for the next attempt; callers get the error.
                let callers: Batch = batch
                    .into_iter()
                    .filter_map(|(rec, tx)| match tx {
                        Some(tx) => Some((rec, Some(tx))),
                        None if rec.kind == RecordKind::SpoolFailure => None,
                        None => {
                            self.own.push(rec);
                            None
                        }
                    })
                    .collect();
                self.fail_batch(callers, &e);
            }
        }
    }

    /// Link, write and sync; on error, roll the file and the chain back.
    fn write_records(&mut self, batch: &mut Batch) -> std::io::Result<u64> {
        let (Some(chain), Some(_)) = (self.chain.as_ref(), self.segment.as_ref()) else {
            return Err(std::io::Error::other("spool not open"));
        };
        let mut chain = chain.clone();
        if self
            .segment
            .as_ref()
            .is_some_and(|s| s.len >= self.config.segment_bytes && s.first_seq < chain.next_seq())
        {
            self.segment = Some(self.create_segment(chain.next_seq())?);
            // A segment just completed: the shippers may be past it.
            self.prune_shipped();
        }
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for (rec, _) in batch.iter_mut() {
            if rec.kind == RecordKind::SidecarStop {
                // The stop record witnesses the final head, so an anchor
                // outside the pod shows where the chain ended.
                rec.checkpoint = Some(head_of(&chain));
            }
            // Digests are computed here, off the connections' tasks: the
            // writer works while they go on with the next request.
            rec.finish_payload();
            let line = chain.link(rec).map_err(std::io::Error::other)?;
            chain.commit(rec);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        if self.bytes + buf.len() as u64 > self.config.max_bytes {
            self.prune_shipped();
            if self.bytes + buf.len() as u64 > self.config.max_bytes {
                return Err(std::io::Error::other(format!(
                    "the spool is full ({} of {} bytes, records not yet shipped)",
                    self.bytes, self.config.max_bytes
                )));
            }
        }
        let segment = self
            .segment
            .as_mut()
            .ok_or_else(|| std::io::Error::other("spool not open"))?;
        let result = segment
            .file
            .write_all(&buf)
            .and_then(|()| segment.file.sync_data());
        if let Err(e) = result {
            // Best effort: cut whatever part of the batch reached the file.
            let _ = segment.file.set_len(segment.len);
            self.segment = None;
            return Err(e);
        }
        segment.len += buf.len() as u64;
        self.bytes += buf.len() as u64;
        let last = chain.next_seq() - 1;
        self.chain = Some(chain);
        Ok(last)
    }

    fn fail_batch(&mut self, batch: Batch, error: &std::io::Error) {
        self.fail(batch.len() as u64, error);
        let err = SpoolError::Io {
            dir: self.config.dir.display().to_string(),
            message: error.to_string(),
        };
        for (_, tx) in batch {
            if let Some(tx) = tx {
                let _ = tx.send(Err(err.clone()));
            }
        }
    }

    fn fail(&mut self, records: u64, error: &std::io::Error) {
        tracing::error!(dir = %self.config.dir.display(), error = %error, records, "audit spool write failed");
        self.health.healthy.store(false, Ordering::Relaxed);
        self.health
            .failed_records
            .fetch_add(records, Ordering::Relaxed);
        let note = self.failure.get_or_insert_with(|| FailureNote {
            records: 0,
            since: super::record::format_time(chrono::Utc::now()),
            error: error.to_string(),
        });
        note.records += records;
    }

    /// Witness the head every `checkpoint_every` records or `checkpoint_interval`.
    fn maybe_checkpoint(&mut self, timer: bool) {
        let due = self.since_checkpoint >= self.config.checkpoint_every
            || (self.since_checkpoint > 0
                && (timer || self.last_checkpoint.elapsed() >= self.config.checkpoint_interval));
        if timer {
            self.last_checkpoint = Instant::now();
        }
        let Some(chain) = self.chain.as_ref().filter(|_| due) else {
            return;
        };
        let head = head_of(chain);
        let mut rec = AuditRecord::event(
            RecordKind::Checkpoint,
            format!("chain head seq {}", head.seq),
        )
        .with_pod(&self.config.pod);
        rec.checkpoint = Some(head);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.write_batch(vec![(rec, None)]);
        // The checkpoint itself is not counted towards the next one.
        self.since_checkpoint = 0;
    }
}

/// The head of `chain` as a checkpoint names it.
fn head_of(chain: &Chain) -> CheckpointRef {
    CheckpointRef {
        seq: chain.next_seq().saturating_sub(1),
        hash: chain.head_hash().to_owned(),
        genesis: chain.genesis().map(str::to_owned),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::Verifier;
    use crate::audit::record::Operation;

    fn config(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            checkpoint_interval: Duration::from_secs(3600),
            ..SpoolConfig::new(dir)
        }
    }

    fn fetch() -> AuditRecord {
        AuditRecord::request("Fetch", 13, Operation::Read)
    }

    /// Append `n` records made by `record`, each awaited until durable.
    async fn append_durable(spool: &SpoolHandle, n: usize, record: impl Fn() -> AuditRecord) {
        for _ in 0..n {
            spool.append(record()).await.unwrap().await.unwrap();
        }
    }

    fn records(dir: &Path) -> Vec<AuditRecord> {
        segment::read_lines(dir)
            .unwrap()
            .map(|l| serde_json::from_str(&l.unwrap().2).unwrap())
            .collect()
    }

    fn verify_dir(dir: &Path) -> crate::audit::chain::VerifyReport {
        let mut v = Verifier::new();
        for line in segment::read_lines(dir).unwrap() {
            let (_, _, line) = line.unwrap();
            v.push_line(&line).unwrap();
        }
        v.finish()
    }

    fn kinds(dir: &Path) -> Vec<RecordKind> {
        records(dir).into_iter().map(|r| r.kind).collect()
    }

    #[tokio::test]
    async fn records_become_durable_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolHandle::start(config(dir.path()));
        let mut receipts = Vec::new();
        for _ in 0..100 {
            receipts.push(spool.append(fetch()).await.unwrap());
        }
        for (i, r) in receipts.into_iter().enumerate() {
            assert_eq!(r.await.unwrap().seq, i as u64 + 1);
        }
        assert_eq!(*spool.durable_head().borrow(), 100);
        spool.close().await;
        assert_eq!(verify_dir(dir.path()).records, 100);
    }

    #[tokio::test]
    async fn segments_roll_and_chain_spans_them() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolHandle::start(SpoolConfig {
            segment_bytes: 2000,
            max_batch: 4,
            ..config(dir.path())
        });
        append_durable(&spool, 60, || {
            AuditRecord::request("Produce", 9, Operation::Write)
        })
        .await;
        spool.close().await;
        let segments = segment::list_segments(dir.path()).unwrap();
        assert!(segments.len() > 3, "{segments:?}");
        assert_eq!(segments[0].first_seq, 1);
        assert_eq!(verify_dir(dir.path()).last_seq, Some(60));
    }

    #[tokio::test]
    async fn restart_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let spool = SpoolHandle::start(config(dir.path()));
            append_durable(&spool, 5, fetch).await;
            spool.close().await;
        }
        let report = verify_dir(dir.path());
        assert_eq!((report.records, report.last_seq), (15, Some(15)));
    }

    #[tokio::test]
    async fn durable_head_covers_records_of_an_earlier_run() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolHandle::start(config(dir.path()));
        append_durable(&spool, 5, fetch).await;
        spool.close().await;
        // A restarted sidecar: shippers must see the backlog before anything new is written.
        let spool = SpoolHandle::start(config(dir.path()));
        let mut head = spool.durable_head();
        tokio::time::timeout(Duration::from_secs(5), head.wait_for(|h| *h == 5))
            .await
            .unwrap()
            .unwrap();
        spool.close().await;
    }

    #[tokio::test]
    async fn torn_final_line_is_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolHandle::start(config(dir.path()));
        append_durable(&spool, 5, fetch).await;
        spool.close().await;
        // What a SIGKILL in the middle of a write leaves behind.
        let seg = &segment::list_segments(dir.path()).unwrap()[0];
        let mut f = OpenOptions::new().append(true).open(&seg.path).unwrap();
        f.write_all(b"{\"seq\":6,\"time\":\"2026-11-").unwrap();
        drop(f);

        let spool = SpoolHandle::start(config(dir.path()));
        let d = spool
            .append(AuditRecord::event(RecordKind::SidecarStart, "again"))
            .await
            .unwrap()
            .await
            .unwrap();
        spool.close().await;
        assert_eq!(d.seq, 7, "seq 6 is the recovery record");
        assert_eq!(verify_dir(dir.path()).last_seq, Some(7));
        assert_eq!(kinds(dir.path())[5], RecordKind::SpoolRecovered);
        let torn: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".torn"))
            .collect();
        assert_eq!(torn.len(), 1);
        assert_eq!(
            std::fs::read(&torn[0]).unwrap(),
            b"{\"seq\":6,\"time\":\"2026-11-"
        );
    }

    #[tokio::test]
    async fn unwritable_dir_fails_every_receipt_then_recovers_with_a_failure_record() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("spool");
        // A file where the directory should be: create_dir_all fails (even as root).
        std::fs::write(&dir, b"not a dir").unwrap();
        let spool = SpoolHandle::start(config(&dir));
        let err = spool.append(fetch()).await.unwrap().await.unwrap_err();
        assert!(matches!(err, SpoolError::Io { .. }), "{err}");
        assert!(!spool.health().is_healthy());
        assert_eq!(spool.health().failed_records(), 1);

        std::fs::remove_file(&dir).unwrap();
        let d = spool.append(fetch()).await.unwrap().await.unwrap();
        spool.close().await;
        assert!(spool.health().is_healthy());
        assert_eq!(d.seq, 2, "seq 1 reports the failure");
        assert_eq!(
            kinds(&dir),
            vec![RecordKind::SpoolFailure, RecordKind::Request]
        );
        verify_dir(&dir);
    }

    #[tokio::test]
    async fn a_quiet_spool_checkpoints_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolHandle::start(SpoolConfig {
            checkpoint_interval: Duration::from_millis(200),
            ..config(dir.path())
        });
        append_durable(&spool, 3, fetch).await;
        let mut head = spool.durable_head();
        tokio::time::timeout(Duration::from_secs(5), head.wait_for(|h| *h >= 4))
            .await
            .unwrap()
            .unwrap();
        // Several intervals with nothing new: no further checkpoint.
        tokio::time::sleep(Duration::from_millis(700)).await;
        spool.close().await;
        let records = records(dir.path());
        // On a slow machine the appends may straddle an interval, so a
        // checkpoint can fall between them; what must hold is: the last
        // record is a checkpoint of the last request, and no checkpoint
        // follows another (none while nothing new was written).
        let is_checkpoint = |r: &AuditRecord| r.kind == RecordKind::Checkpoint;
        assert_eq!(records.iter().filter(|r| !is_checkpoint(r)).count(), 3);
        let last = records.last().unwrap();
        assert!(is_checkpoint(last), "{records:?}");
        let last_request = records.iter().rposition(|r| !is_checkpoint(r)).unwrap();
        assert_eq!(
            last_request,
            records.len() - 2,
            "exactly one checkpoint after the last request"
        );
        assert_eq!(
            last.checkpoint.as_ref().unwrap().seq,
            records[last_request].seq
        );
        assert!(
            records
                .windows(2)
                .all(|w| !(is_checkpoint(&w[0]) && is_checkpoint(&w[1]))),
            "no checkpoint while nothing new was written: {records:?}"
        );
    }

    #[tokio::test]
    async fn checkpoints_witness_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolHandle::start(SpoolConfig {
            checkpoint_every: 10,
            max_batch: 1,
            ..config(dir.path())
        });
        append_durable(&spool, 25, fetch).await;
        spool.close().await;
        let records = records(dir.path());
        let checkpoints: Vec<&AuditRecord> = records
            .iter()
            .filter(|r| r.kind == RecordKind::Checkpoint)
            .collect();
        assert_eq!(checkpoints.len(), 2);
        let cp = checkpoints[0].checkpoint.as_ref().unwrap();
        assert_eq!(cp.seq, 10);
        assert_eq!(cp.hash, records[9].hash);
        verify_dir(dir.path());
    }
}
