//! Peers for the data-path tests, on the shared harness (`e2e/src/lib.rs`):
//! a tansu broker, the proxy binary under an allow-all policy, and the
//! client CLI (`e2e/clients/kclient.py`, kcat), stopped by PID when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use streamgate_e2e::Storage;
use streamgate_e2e::{ProxyOptions, peers, repo_root};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

fn workspace() -> PathBuf {
    repo_root()
}

fn python() -> PathBuf {
    peers().python.clone()
}

fn kcat() -> PathBuf {
    peers().kcat.clone()
}

/// The synthetic patient events (one JSON object per line).
pub fn patient_events() -> Vec<Vec<u8>> {
    let lines: Vec<Vec<u8>> = streamgate_e2e::fixture_lines("patient-events.jsonl")
        .into_iter()
        .map(String::into_bytes)
        .collect();
    assert!(
        lines.len() >= 100,
        "examples/data/patient-events.jsonl has too few events"
    );
    lines
}

/// The broker the data-path tests run against.
pub struct Tansu(streamgate_e2e::Broker);

impl Tansu {
    pub fn start(storage: Storage) -> Self {
        Self(streamgate_e2e::Broker::start(storage))
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.0.create_topic(name, partitions);
    }

    /// Stop and start again on the same port and storage.
    pub fn restart(&mut self) {
        assert_eq!(
            self.0.storage,
            Storage::Sqlite,
            "only sqlite storage survives a restart"
        );
        self.0.restart(Duration::ZERO);
    }
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
      groups: ["**"]
      transactionalIds: ["**"]
"#;

/// The proxy, running as a workload whose policy allows everything (without
/// a policy the proxy denies every request).
pub struct Proxy {
    inner: streamgate_e2e::Proxy,
    _policy: tempfile::TempDir,
}

impl Proxy {
    pub fn start(broker: &Tansu) -> Self {
        let policy = tempfile::tempdir().unwrap();
        std::fs::write(policy.path().join("allow-all.yaml"), ALLOW_ALL).unwrap();
        let opts = ProxyOptions {
            args: vec![
                "--shutdown-grace".into(),
                "5s".into(),
                "--policy-dir".into(),
                policy.path().display().to_string(),
            ],
            envs: vec![
                ("STREAMGATE_SERVICE_ACCOUNT".into(), "datapath-e2e".into()),
                ("STREAMGATE_POD_NAMESPACE".into(), "e2e".into()),
            ],
            no_wait: false,
        };
        let inner = streamgate_e2e::Proxy::start(&broker.0, opts);
        Self {
            inner,
            _policy: policy,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.inner.addr()
    }

    /// GET an admin path: (status, body).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        streamgate_e2e::http_get(self.inner.admin_port, path).ok()
    }

    /// SIGTERM, wait for a clean exit, start again on the same ports.
    pub fn restart(&mut self) {
        let code = self.inner.proc.terminate(Duration::from_secs(15));
        assert_eq!(
            code,
            Some(0),
            "proxy exits cleanly on SIGTERM:\n{}",
            self.inner.output()
        );
        self.inner.restart();
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
