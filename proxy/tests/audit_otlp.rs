//! The OTLP shipper against a real collector (rotel): every record arrives, across a
//! collector outage and a shipper restart; duplicates only within the at-least-once window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::logs::LogExporter as _;
use streamgate_proxy::audit::otlp::{OtlpSink, resource};
use streamgate_proxy::audit::shipper::{Cursor, ShipperConfig};
use streamgate_proxy::audit::{
    Audit, AuditDecision, AuditRecord, Operation, PodIdentity, ResourceAccess, SpoolConfig, Subject,
};

const BATCH: usize = 25;

/// The rotel-agent binary: $STREAMGATE_ROTEL, or STREAMGATE_ROTEL in the peers file.
fn rotel_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("STREAMGATE_ROTEL") {
        return PathBuf::from(p);
    }
    let peers = std::env::var("HOME")
        .map(|h| format!("{h}/.cache/streamgate/peers.env"))
        .unwrap_or_default();
    if let Ok(text) = std::fs::read_to_string(&peers) {
        for line in text.lines() {
            let line = line.trim().trim_start_matches("export ");
            if let Some(v) = line.strip_prefix("STREAMGATE_ROTEL=") {
                return PathBuf::from(v.trim_matches('"'));
            }
        }
    }
    panic!(
        "rotel is missing: set STREAMGATE_ROTEL to the rotel-agent binary (pip install rotel; it is \
         site-packages/rotel/rotel-agent; needs libpython3.11) or provide it in {peers}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Rotel {
    child: Child,
}

impl Rotel {
    fn start(grpc: u16, http: u16, out: &Path) -> Self {
        let bin = rotel_binary();
        assert!(
            bin.exists(),
            "rotel is missing: {} does not exist",
            bin.display()
        );
        let child = Command::new(&bin)
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{grpc}"),
            ])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args([
                "--exporter",
                "blackhole",
                "--debug-log",
                "logs",
                "--debug-log-verbosity",
                "detailed",
            ])
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            assert!(Instant::now() < deadline, "rotel did not listen on {grpc}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }

    /// Graceful stop (SIGTERM), so what rotel acknowledged reaches its log.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// seq → how many times rotel printed it, over all its output files.
fn received(outputs: &[PathBuf]) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for out in outputs {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        for line in text.lines() {
            if let Some(rest) = line.split("streamgate.seq: Int(").nth(1)
                && let Some(n) = rest.split(')').next().and_then(|n| n.parse().ok())
            {
                *seen.entry(n).or_insert(0) += 1;
            }
        }
    }
    seen
}

async fn wait_for(outputs: &[PathBuf], last: u64, timeout: Duration) -> BTreeMap<u64, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = received(outputs);
        if (1..=last).all(|s| seen.contains_key(&s)) {
            return seen;
        }
        if Instant::now() > deadline {
            let missing: Vec<u64> = (1..=last)
                .filter(|s| !seen.contains_key(s))
                .take(20)
                .collect();
            let head: String = std::fs::read_to_string(&outputs[0])
                .unwrap_or_default()
                .chars()
                .take(3000)
                .collect();
            panic!("records missing at the collector: {missing:?}…\nrotel output starts:\n{head}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod() -> PodIdentity {
    PodIdentity {
        pod: Some("intake-5d8f7-abcde".into()),
        namespace: Some("clinical".into()),
        service_account: Some("intake".into()),
    }
}

fn grpc_sink(port: u16) -> OtlpSink<opentelemetry_otlp::LogExporter> {
    let mut exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    exporter.set_resource(&resource(&pod()));
    OtlpSink::new(exporter)
}

fn shipper_config() -> ShipperConfig {
    ShipperConfig {
        batch: BATCH,
        poll: Duration::from_millis(100),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        progress: None,
    }
}

fn audit(dir: &Path) -> Audit {
    Audit::with_spool(SpoolConfig {
        checkpoint_every: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        pod: pod(),
        ..SpoolConfig::new(dir)
    })
}

fn request(i: u64) -> AuditRecord {
    AuditRecord::request("Fetch", 13, Operation::Read)
        .subject(Subject::user(
            "alice@example.com",
            vec!["clinicians".into()],
            None,
        ))
        .client(Some("reader".into()), "127.0.0.1:53422")
        .resource(ResourceAccess::partition(
            "patient-records",
            0,
            Some((i as i64 * 10, i as i64 * 10 + 9)),
            10,
            1000,
        ))
        .decision(AuditDecision::Allow, "rule read-records")
}

async fn write(audit: &Audit, range: std::ops::RangeInclusive<u64>, pace: Duration) {
    for i in range {
        let d = audit.record_durable(request(i)).await.unwrap();
        assert_eq!(d.seq, i);
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_the_collector_across_an_outage_and_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let spool = work.path().join("spool");
    let (grpc, http) = (free_port(), free_port());
    let outputs: Vec<PathBuf> = (1..=3)
        .map(|i| work.path().join(format!("rotel-{i}.out")))
        .collect();

    // Phase 1: collector up while records are written.
    let rotel = Rotel::start(grpc, http, &outputs[0]);
    let a = Arc::new(audit(&spool));
    a.spawn_shipper_with("otlp", grpc_sink(grpc), shipper_config())
        .await;
    write(&a, 1..=150, Duration::from_millis(2)).await;
    wait_for(&outputs, 150, Duration::from_secs(30)).await;

    // Phase 2: stop the collector during a load; records keep being written.
    let writer = {
        let a = Arc::clone(&a);
        tokio::spawn(async move { write(&a, 151..=400, Duration::from_millis(4)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    rotel.stop();
    writer.await.unwrap();
    let during = received(&outputs);
    assert!(
        !(1..=400).all(|s| during.contains_key(&s)),
        "the outage must have held some records back"
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // the shipper retries with backoff meanwhile

    // Phase 3: the collector comes back; everything arrives.
    let rotel = Rotel::start(grpc, http, &outputs[1]);
    let seen = wait_for(&outputs, 400, Duration::from_secs(60)).await;
    a.shutdown(Duration::from_secs(10)).await;
    let stop_seq = 401; // SidecarStop, delivered during the shutdown grace period
    wait_for(&outputs, stop_seq, Duration::from_secs(30)).await;
    assert_eq!(Cursor::new(&spool, "otlp").load().unwrap(), stop_seq);
    let dups: Vec<(u64, usize)> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    assert!(
        dups.len() <= BATCH,
        "at-least-once: at most one batch resent per outage, got {dups:?}"
    );
    assert!(dups.iter().all(|(_, n)| *n == 2), "{dups:?}");
    rotel.stop();

    // Phase 4: a new sidecar process on the same spool resumes from the cursor.
    let rotel = Rotel::start(grpc, http, &outputs[2]);
    let a = audit(&spool);
    a.spawn_shipper_with("otlp", grpc_sink(grpc), shipper_config())
        .await;
    write(&a, 402..=410, Duration::ZERO).await;
    wait_for(&outputs, 410, Duration::from_secs(30)).await;
    a.shutdown(Duration::from_secs(10)).await;
    rotel.stop();
    let third = received(&outputs[2..]);
    assert_eq!(
        third.keys().next(),
        Some(&402),
        "resumed after the acknowledged seq, nothing older resent"
    );

    // What an OTLP receiver sees: resource and semantic attributes, the record as body.
    let text = std::fs::read_to_string(&outputs[0]).unwrap();
    for needle in [
        "service.name: Str(streamgate-proxy)",
        "k8s.pod.name: Str(intake-5d8f7-abcde)",
        "k8s.namespace.name: Str(clinical)",
        "messaging.system: Str(kafka)",
        "messaging.destination.name: Str(patient-records)",
        "messaging.operation.type: Str(receive)",
        "enduser.id: Str(alice@example.com)",
        "streamgate.decision: Str(Allow)",
        "\"seq\":1,",
    ] {
        assert!(
            text.contains(needle),
            "rotel output lacks {needle:?}:\n{}",
            &text[..text.len().min(3000)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_transport_delivers_too() {
    let work = tempfile::tempdir().unwrap();
    let spool = work.path().join("spool");
    let (grpc, http) = (free_port(), free_port());
    let out = work.path().join("rotel.out");
    let rotel = Rotel::start(grpc, http, &out);
    let mut exporter = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://127.0.0.1:{http}/v1/logs"))
        .build()
        .unwrap();
    exporter.set_resource(&resource(&pod()));
    let a = audit(&spool);
    a.spawn_shipper_with("otlp", OtlpSink::new(exporter), shipper_config())
        .await;
    write(&a, 1..=30, Duration::ZERO).await;
    wait_for(std::slice::from_ref(&out), 30, Duration::from_secs(30)).await;
    a.shutdown(Duration::from_secs(5)).await;
    rotel.stop();
}

/// Set in a child process: run `Audit::start` configured only by the environment.
const ENV_CHILD: &str = "STREAMGATE_AUDIT_OTLP_ENV_CHILD";

#[test]
fn standard_otel_env_vars_configure_the_shipper() {
    if let Ok(dir) = std::env::var(ENV_CHILD) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut args = streamgate_proxy::audit::AuditArgs::new(dir);
            args.audit_otlp = None; // auto: on because OTEL_EXPORTER_OTLP_*ENDPOINT is set
            args.audit_pod_name = std::env::var("STREAMGATE_POD_NAME").ok();
            let audit = Audit::start(&args).await.unwrap();
            write(&audit, 2..=6, Duration::ZERO).await; // seq 1 is SidecarStart
            audit.shutdown(Duration::from_secs(10)).await; // seq 7 is SidecarStop
        });
        std::process::exit(0);
    }
    let work = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let out = work.path().join("rotel.out");
    let rotel = Rotel::start(grpc, http, &out);
    let cases = [
        (
            "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc}"),
            "pod-grpc",
        ),
        (
            "http/protobuf",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            format!("http://127.0.0.1:{http}/v1/logs"),
            "pod-http",
        ),
    ];
    for (round, (protocol, var, endpoint, pod)) in cases.iter().enumerate() {
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "standard_otel_env_vars_configure_the_shipper",
                "--nocapture",
            ])
            .env(ENV_CHILD, work.path().join(pod))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env(var, endpoint)
            .env("STREAMGATE_POD_NAME", pod)
            .status()
            .unwrap();
        assert!(status.success(), "{protocol}: child failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = received(std::slice::from_ref(&out));
            if (1..=7).all(|s| seen.get(&s) == Some(&(round + 1))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{protocol}: seq 1..=7 not all delivered once more: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.contains(&format!("k8s.pod.name: Str({pod})")),
            "{protocol}: resource lacks the pod"
        );
    }
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("streamgate.kind: Str(SidecarStart)")
            && text.contains("streamgate.kind: Str(SidecarStop)")
    );
    rotel.stop();
}
