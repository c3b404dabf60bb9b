//! Peers for the data-path tests: a tansu broker, the proxy binary and the
//! client CLI (`e2e/clients/kclient.py`, kcat), each on free loopback ports and
//! stopped by PID when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CACHE: &str = "/root/.cache/streamgate";
/// tansu leads every partition from node 111.
pub const TANSU_NODE_ID: u16 = 111;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn peer(env: &str, fallback: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CACHE).join(fallback));
    assert!(
        path.exists(),
        "{} not found (set {env}; see e2e/README or test-peers.md)",
        path.display()
    );
    path
}

fn tansu_bin() -> PathBuf {
    peer("STREAMGATE_TANSU", "tansu/bin/tansu")
}

fn python() -> PathBuf {
    peer("STREAMGATE_PYTHON", "venv/bin/python")
}

fn kcat() -> PathBuf {
    peer("STREAMGATE_KCAT", "bin/kcat")
}

fn proxy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STREAMGATE_PROXY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    // The newest of the two builds, unless a profile is asked for: a stale
    // release binary must not shadow the debug one `cargo test` just built.
    let wanted = std::env::var("STREAMGATE_PROXY_PROFILE").ok();
    let newest = ["release", "debug"]
        .iter()
        .filter(|profile| wanted.as_deref().is_none_or(|w| w == **profile))
        .map(|profile| target.join(profile).join("streamgate-proxy"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    if let Some((_, p)) = newest {
        return p;
    }
    panic!(
        "no streamgate-proxy binary under {}: run `cargo build -p streamgate-proxy` first",
        target.display()
    );
}

/// The synthetic patient events (one JSON object per line).
pub fn patient_events() -> Vec<Vec<u8>> {
    let examples = workspace().join("examples/data/patient-events.jsonl");
    let path = if examples.exists() {
        examples
    } else {
        PathBuf::from("/work/shared/fixtures/patient-events.jsonl")
    };
    let text = std::fs::read(&path).unwrap();
    let lines: Vec<Vec<u8>> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert!(lines.len() >= 100, "{} has too few events", path.display());
    lines
}

/// A port that is free now, with `port + 1 + TANSU_NODE_ID` free as well.
fn free_proxy_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 60000 && TcpListener::bind(("127.0.0.1", port + 1 + TANSU_NODE_ID)).is_ok() {
            return port;
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    // SIGTERM first so the peer can shut down cleanly, then SIGKILL.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Memory,
    /// Data survives a broker restart.
    Sqlite,
}

pub struct Tansu {
    child: Child,
    pub port: u16,
    storage: Storage,
    dir: tempfile::TempDir,
}

impl Tansu {
    pub fn start(storage: Storage) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(port, storage, dir.path());
        let mut t = Self {
            child,
            port,
            storage,
            dir,
        };
        wait_for_port(port, "tansu", &mut t.child);
        t
    }

    fn spawn(port: u16, storage: Storage, dir: &Path) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let engine = match storage {
            Storage::Memory => "memory://tansu/".to_string(),
            Storage::Sqlite => "sqlite://tansu.db".to_string(),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .unwrap();
        Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &engine,
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "create topic {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop and start again on the same port and storage.
    pub fn restart(&mut self) {
        assert_eq!(
            self.storage,
            Storage::Sqlite,
            "only sqlite storage survives a restart"
        );
        stop(&mut self.child);
        self.child = Self::spawn(self.port, self.storage, self.dir.path());
        wait_for_port(self.port, "tansu (restarted)", &mut self.child);
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

pub struct Proxy {
    child: Child,
    pub port: u16,
    pub admin: u16,
    upstream: u16,
}

const ALLOW_ALL: &str = r#"apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {name: allow-all}
spec:
  identity: {workloadIdentity: true}
  rules:
    - name: everything
      subjects: [{kind: ServiceAccount, name: datapath-e2e}]
      topics: ["**"]
      operations: [Write, Read, Describe, Create, Admin]
"#;

/// A policy directory (made once per test process) allowing every operation
/// on every topic to the workload identity the data-path proxies run as.
fn allow_all_policy_dir() -> String {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("streamgate-datapath-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("allow-all.yaml"), ALLOW_ALL).unwrap();
        dir
    })
    .display()
    .to_string()
}

impl Proxy {
    pub fn start(broker: &Tansu) -> Self {
        let (port, admin) = (free_proxy_port(), free_port());
        let child = Self::spawn(port, admin, broker.port);
        let mut p = Self {
            child,
            port,
            admin,
            upstream: broker.port,
        };
        p.wait_ready();
        p
    }

    fn spawn(port: u16, admin: u16, upstream: u16) -> Child {
        Command::new(proxy_bin())
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .args([
                "--upstream",
                &format!("127.0.0.1:{upstream}"),
                "--shutdown-grace",
                "5s",
            ])
            // The proxy denies everything without a policy: these data-path
            // tests run as a workload whose policy allows everything.
            .args(["--policy-dir", &allow_all_policy_dir()])
            .env("STREAMGATE_SERVICE_ACCOUNT", "datapath-e2e")
            .env("STREAMGATE_POD_NAMESPACE", "e2e")
            // Each proxy its own audit spool (kept across restarts on the same port).
            .env(
                "STREAMGATE_AUDIT_DIR",
                std::env::temp_dir().join(format!(
                    "streamgate-datapath-audit-{}-{port}",
                    std::process::id()
                )),
            )
            .env(
                "RUST_LOG",
                std::env::var("STREAMGATE_PROXY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// GET an admin path: (status, body).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("proxy exited before it was ready: {status}");
            }
            if matches!(self.admin_get("/readyz"), Some((200, _))) {
                return;
            }
            assert!(Instant::now() < deadline, "proxy never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait for a clean exit, start again on the same ports.
    pub fn restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "proxy did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "proxy exits cleanly on SIGTERM: {status}");
        self.child = Self::spawn(self.port, self.admin, self.upstream);
        self.wait_ready();
    }

    pub fn assert_alive(&self) {
        let (status, _) = self
            .admin_get("/healthz")
            .expect("proxy admin port answers");
        assert_eq!(status, 200);
        let (_, metrics) = self.admin_get("/metrics").unwrap();
        assert!(
            metrics.contains("streamgate_proxy_requests_total{api=\"Fetch\"}"),
            "metrics count fetches"
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    Kcat,
    Confluent,
    KafkaPython,
    Aiokafka,
}

impl Lib {
    pub fn name(self) -> &'static str {
        match self {
            Lib::Kcat => "kcat",
            Lib::Confluent => "confluent",
            Lib::KafkaPython => "kafka-python",
            Lib::Aiokafka => "aiokafka",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    Zero,
    All,
}

impl Acks {
    pub fn name(self) -> &'static str {
        match self {
            Acks::Zero => "0",
            Acks::All => "all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn client_script() -> PathBuf {
    workspace().join("e2e/clients/kclient.py")
}

/// Run a command to completion with a deadline; returns stdout.
fn run_with_timeout(mut cmd: Command, stdin: Option<Vec<u8>>, what: &str) -> String {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_thread.join().unwrap();
    let stderr = err_thread.join().unwrap();
    match status {
        Some(s) if s.success() => stdout,
        Some(s) => panic!("{what} failed ({s}):\n{stderr}"),
        None => panic!("{what} timed out:\n{stderr}"),
    }
}

fn write_input(input: &[Vec<u8>]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for line in input {
        f.write_all(line).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
    f
}

/// Produce every input line (key = its index); returns how many were acknowledged.
pub fn produce(
    lib: Lib,
    bootstrap: &str,
    topic: &str,
    input: &[Vec<u8>],
    codec: Codec,
    acks: Acks,
) -> usize {
    let what = format!("{} produce to {topic}", lib.name());
    if lib == Lib::Kcat {
        let mut stdin = Vec::new();
        for (i, line) in input.iter().enumerate() {
            stdin.extend_from_slice(format!("{i}\t").as_bytes());
            stdin.extend_from_slice(line);
            stdin.push(b'\n');
        }
        let mut cmd = Command::new(kcat());
        cmd.args([
            "-P",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-K",
            "\t",
            "-z",
            codec.name(),
        ])
        .args([
            "-X",
            &format!("acks={}", acks.name()),
            "-X",
            "enable.idempotence=false",
        ]);
        run_with_timeout(cmd, Some(stdin), &what);
        return input.len();
    }
    let file = write_input(input);
    let mut cmd = Command::new(python());
    cmd.arg(client_script())
        .args([
            lib.name(),
            "produce",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
        ])
        .args([
            "--input",
            file.path().to_str().unwrap(),
            "--compression",
            codec.name(),
            "--acks",
            acks.name(),
        ]);
    let out = run_with_timeout(cmd, None, &what);
    assert!(
        out.lines().any(|l| l.starts_with("\"DONE")),
        "{what}: finished"
    );
    out.lines().filter(|l| l.starts_with('{')).count()
}

/// Consume up to `expect` records (from the start, or from the group's committed offsets).
pub fn consume(
    lib: Lib,
    bootstrap: &str,
    topic: &str,
    expect: usize,
    group: Option<&str>,
) -> Vec<Record> {
    consume_for(lib, bootstrap, topic, expect, group, 90)
}

/// `consume` with a time budget in seconds.
pub fn consume_for(
    lib: Lib,
    bootstrap: &str,
    topic: &str,
    expect: usize,
    group: Option<&str>,
    timeout_secs: u32,
) -> Vec<Record> {
    let what = format!("{} consume from {topic}", lib.name());
    if lib == Lib::Kcat {
        assert!(group.is_none(), "kcat is used without a group here");
        let mut cmd = Command::new(kcat());
        cmd.args([
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-c", &expect.to_string(), "-f", "%p\t%o\t%k\t%s\n"]);
        let out = run_with_timeout(cmd, None, &what);
        return out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut parts = l.splitn(4, '\t');
                Record {
                    partition: parts.next().unwrap().parse().unwrap(),
                    offset: parts.next().unwrap().parse().unwrap(),
                    key: parts.next().unwrap().as_bytes().to_vec(),
                    value: parts.next().unwrap().as_bytes().to_vec(),
                }
            })
            .collect();
    }
    let mut cmd = Command::new(python());
    cmd.arg(client_script())
        .args([
            lib.name(),
            "consume",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
        ])
        .args([
            "--expect",
            &expect.to_string(),
            "--timeout",
            &timeout_secs.to_string(),
        ]);
    if let Some(g) = group {
        cmd.args(["--group", g]);
    }
    let out = run_with_timeout(cmd, None, &what);
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(parse_record)
        .collect()
}

fn parse_record(line: &str) -> Record {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    Record {
        partition: v["partition"].as_i64().unwrap() as i32,
        offset: v["offset"].as_i64().unwrap(),
        key: unhex(v["key"].as_str().unwrap()),
        value: unhex(v["value"].as_str().unwrap()),
    }
}

/// A producer that sends the first `pause_after` records, then waits.
pub struct PausedProducer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    acked: usize,
    _input: tempfile::NamedTempFile,
}

impl PausedProducer {
    /// Returns once the first part is acknowledged.
    pub fn start(
        lib: Lib,
        bootstrap: &str,
        topic: &str,
        input: &[Vec<u8>],
        pause_after: usize,
    ) -> Self {
        let file = write_input(input);
        let mut child = Command::new(python())
            .arg(client_script())
            .args([
                lib.name(),
                "produce",
                "--bootstrap",
                bootstrap,
                "--topic",
                topic,
            ])
            .args([
                "--input",
                file.path().to_str().unwrap(),
                "--pause-after",
                &pause_after.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Self {
            child,
            stdin,
            lines,
            acked: 0,
            _input: file,
        };
        p.read_until("\"PAUSED\"");
        assert_eq!(
            p.acked, pause_after,
            "first part acknowledged before the pause"
        );
        p
    }

    fn read_until(&mut self, marker: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(CLIENT_TIMEOUT)
                .unwrap_or_else(|_| panic!("producer never printed {marker}"));
            if line.starts_with('{') {
                self.acked += 1;
            } else if line.starts_with(marker) {
                return line;
            }
        }
    }

    /// Let it send the rest; returns how many records were acknowledged in all.
    pub fn resume_and_finish(mut self) -> usize {
        self.stdin.write_all(b"go\n").unwrap();
        self.stdin.flush().unwrap();
        self.read_until("\"DONE");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "producer exit: {status}");
        self.acked
    }
}

impl Drop for PausedProducer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
