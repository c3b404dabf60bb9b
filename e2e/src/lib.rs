//! The end-to-end harness: start the real peers (tansu broker, the
//! streamgate-proxy binary, the oidc-provider IdP, the rotel OTLP collector)
//! on free loopback ports, run real Kafka clients against them, and stop
//! everything when a test ends.
//!
//! Peers are installed by `.ci/install-peers.sh`, which writes their paths to
//! `$STREAMGATE_CACHE/peers.env`; `e2e/test.sh` sources it. A missing peer is
//! a test failure with a message saying how to install it — never a skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod kube;
pub mod pod;

/// Paths of the installed peers.
#[derive(Debug, Clone)]
pub struct Peers {
    pub tansu: PathBuf,
    pub python: PathBuf,
    pub kcat: PathBuf,
    pub rdkafka_perf: PathBuf,
    pub node: PathBuf,
    pub idp: PathBuf,
    pub rotel: PathBuf,
}

/// The peers, read once from the environment. Panics, naming every missing
/// peer and how to install it, when one is absent.
pub fn peers() -> &'static Peers {
    static PEERS: OnceLock<Peers> = OnceLock::new();
    PEERS.get_or_init(|| {
        let mut missing = Vec::new();
        let mut get = |var: &str| -> PathBuf {
            match std::env::var_os(var).map(PathBuf::from) {
                Some(p) if p.exists() => p,
                Some(p) => {
                    missing.push(format!("{var}={} (file does not exist)", p.display()));
                    PathBuf::new()
                }
                None => {
                    missing.push(format!("{var} (unset)"));
                    PathBuf::new()
                }
            }
        };
        let peers = Peers {
            tansu: get("STREAMGATE_TANSU"),
            python: get("STREAMGATE_PYTHON"),
            kcat: get("STREAMGATE_KCAT"),
            rdkafka_perf: get("STREAMGATE_RDKAFKA_PERF"),
            node: get("STREAMGATE_NODE"),
            idp: get("STREAMGATE_IDP"),
            rotel: get("STREAMGATE_ROTEL"),
        };
        if !missing.is_empty() {
            panic!(
                "end-to-end peers missing: {}.\nInstall them with `.ci/install-peers.sh` and \
                 `source ~/.cache/streamgate/peers.env` (or run `e2e/test.sh`, which does both).",
                missing.join(", ")
            );
        }
        peers
    })
}

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A file under `examples/`.
pub fn example(rel: &str) -> PathBuf {
    repo_root().join("examples").join(rel)
}

/// The proxy binary the tests drive: `STREAMGATE_PROXY_BIN` when set, else
/// the one `cargo test --workspace` just built next to the test binaries
/// (the proxy package's integration tests make cargo build it first).
pub fn proxy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STREAMGATE_PROXY_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>/streamgate-proxy
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join("streamgate-proxy");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p streamgate-proxy` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `count` free ports that are also consecutive-free enough to be used as
/// `base`, `base + 1 + offset` (the proxy's broker ports): returns a base
/// port `p` such that `p` and `p + 1 + node_id` are both free.
pub fn free_proxy_port(node_id: u16) -> u16 {
    for _ in 0..200 {
        let p = free_port();
        if p > 60000 - node_id {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 1 + node_id)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair for the proxy");
}

/// Wait until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

/// A child process killed when dropped; its stdout+stderr go to a log file.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Spawn `cmd` with output captured to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Proc> {
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.into(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Send a signal (`TERM`, `KILL`, `STOP`, `CONT`) via kill(1).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM, then wait up to `timeout` for exit; returns the exit status
    /// code (None when killed by a signal or still running, then SIGKILLed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        if let Some(c) = self.child.as_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return st.code();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
        None
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the broker stores data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Fast; lost on restart.
    Memory,
    /// Survives a broker restart.
    Sqlite,
}

/// A real tansu broker on a free loopback port.
pub struct Broker {
    pub port: u16,
    pub storage: Storage,
    pub dir: tempfile::TempDir,
    proc: Proc,
}

/// tansu leads every partition from this node id.
pub const TANSU_NODE_ID: u16 = 111;

impl Broker {
    pub fn start(storage: Storage) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let proc = Self::spawn(&dir, port, storage, 0);
        Broker {
            port,
            storage,
            dir,
            proc,
        }
    }

    fn spawn(dir: &tempfile::TempDir, port: u16, storage: Storage, generation: u32) -> Proc {
        let url = format!("tcp://127.0.0.1:{port}");
        let engine = match storage {
            Storage::Memory => "memory://tansu/".to_string(),
            Storage::Sqlite => "sqlite://tansu.db".to_string(),
        };
        let mut cmd = Command::new(&peers().tansu);
        cmd.current_dir(dir.path())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &engine]);
        let proc = Proc::spawn(
            "tansu",
            cmd,
            dir.path().join(format!("tansu-{generation}.log")),
        )
        .unwrap();
        if let Err(e) = wait_for_port(port, Duration::from_secs(30)) {
            panic!("tansu did not start: {e}\n{}", proc.output());
        }
        proc
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Create a topic with the tansu CLI.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&peers().tansu)
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
            "tansu topic create {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop and start the broker on the same port (data kept with Sqlite).
    pub fn restart(&mut self, down_for: Duration) {
        self.proc.kill();
        std::thread::sleep(down_for);
        self.proc = Self::spawn(&self.dir, self.port, self.storage, 1);
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// The streamgate-proxy binary, running `run` against a broker.
pub struct Proxy {
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub proc: Proc,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    generation: u32,
}

/// Options for starting the proxy.
#[derive(Default, Clone)]
pub struct ProxyOptions {
    /// Extra command-line arguments after `run --listen … --upstream … --admin …`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub envs: Vec<(String, String)>,
    /// Don't wait for `/readyz` (for tests of startup failures).
    pub no_wait: bool,
}

impl Proxy {
    /// Start the proxy in front of `broker` and wait until `/readyz` answers 200.
    pub fn start(broker: &Broker, opts: ProxyOptions) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_proxy_port(TANSU_NODE_ID);
        let admin_port = free_port();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--upstream".into(),
            broker.addr(),
            "--admin".into(),
            format!("127.0.0.1:{admin_port}"),
            // The test IdP (`Idp`) serves plain http; a real issuer is https.
            "--allow-insecure-issuers".into(),
        ];
        args.extend(opts.args.iter().cloned());
        let proc = Self::spawn_proc(&args, &opts.envs, dir.path(), 0);
        let mut p = Proxy {
            port,
            admin_port,
            dir,
            proc,
            args,
            envs: opts.envs,
            generation: 0,
        };
        if !opts.no_wait {
            p.wait_ready(Duration::from_secs(30));
        }
        p
    }

    fn spawn_proc(args: &[String], envs: &[(String, String)], dir: &Path, generation: u32) -> Proc {
        let mut cmd = Command::new(proxy_bin());
        cmd.args(args);
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        // Each proxy gets its own audit spool (tests may override with --audit-dir or the env).
        cmd.env("STREAMGATE_AUDIT_DIR", dir.join("audit"));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Proc::spawn(
            "streamgate-proxy",
            cmd,
            dir.join(format!("proxy-{generation}.log")),
        )
        .unwrap()
    }

    /// Wait until `/readyz` returns 200; panics with the proxy's log otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.proc.is_running() {
                panic!(
                    "streamgate-proxy exited during startup:\n{}",
                    self.proc.output()
                );
            }
            if let Ok((200, _)) = http_get(self.admin_port, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "streamgate-proxy not ready after {timeout:?}:\n{}",
            self.proc.output()
        );
    }

    /// Restart with the same arguments (same ports), e.g. after a SIGKILL.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.generation += 1;
        self.proc = Self::spawn_proc(&self.args, &self.envs, self.dir.path(), self.generation);
        self.wait_ready(Duration::from_secs(30));
    }

    /// `127.0.0.1:port` — what clients bootstrap from.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// GET a path on the admin port.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_port, path).unwrap()
    }

    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// A minimal GET to a loopback admin port: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The real OIDC provider (oidc-provider on node).
pub struct Idp {
    pub port: u16,
    pub dir: tempfile::TempDir,
    proc: Proc,
}

/// The IdP's audience for Kafka tokens.
pub const IDP_AUDIENCE: &str = "urn:kafka:proxy";

impl Idp {
    /// Start with a token TTL in seconds and an optional private JWK set file.
    pub fn start(token_ttl_secs: u64, jwks_file: Option<&Path>) -> Idp {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let proc = Self::spawn(&dir, port, token_ttl_secs, jwks_file);
        Idp { port, dir, proc }
    }

    fn spawn(dir: &tempfile::TempDir, port: u16, ttl: u64, jwks: Option<&Path>) -> Proc {
        let mut cmd = Command::new(&peers().node);
        cmd.arg(&peers().idp)
            .env("PORT", port.to_string())
            .env("AUDIENCE", IDP_AUDIENCE)
            .env("TOKEN_TTL", ttl.to_string());
        if let Some(j) = jwks {
            cmd.env("JWKS_FILE", j);
        }
        let proc = Proc::spawn(
            "oidc-provider",
            cmd,
            dir.path().join(format!("idp-{}.log", free_port())),
        )
        .unwrap();
        if let Err(e) = wait_for_port(port, Duration::from_secs(30)) {
            panic!("oidc-provider did not start: {e}\n{}", proc.output());
        }
        proc
    }

    /// Restart on the same port with other settings (e.g. rotated keys).
    pub fn restart(&mut self, token_ttl_secs: u64, jwks_file: Option<&Path>) {
        self.proc.kill();
        self.proc = Self::spawn(&self.dir, self.port, token_ttl_secs, jwks_file);
    }

    /// `http://127.0.0.1:port` — the issuer.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// A client-credentials access token (a JWT) for `client_id` (secret `<id>-secret`).
    pub fn token(&self, client_id: &str) -> String {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{client_id}:{client_id}-secret").as_bytes());
        let mut resp = ureq::post(self.token_url())
            .header("Authorization", format!("Basic {basic}"))
            .send_form([("grant_type", "client_credentials"), ("scope", "kafka")])
            .unwrap();
        let mut body = String::new();
        resp.body_mut()
            .as_reader()
            .read_to_string(&mut body)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_string()
    }

    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// The real OTLP collector (rotel), printing every log record it receives.
pub struct Collector {
    pub grpc_port: u16,
    pub http_port: u16,
    pub dir: tempfile::TempDir,
    proc: Proc,
    generation: u32,
    exporter: Vec<String>,
}

impl Collector {
    pub fn start() -> Collector {
        Self::start_with(&[])
    }

    /// `exporter`: rotel flags choosing where logs go (none: printed, for
    /// [`Collector::output`]).
    fn start_with(exporter: &[String]) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let (grpc_port, http_port) = (free_port(), free_port());
        let proc = Self::spawn_with(&dir, grpc_port, http_port, 0, exporter);
        Collector {
            grpc_port,
            http_port,
            dir,
            proc,
            generation: 0,
            exporter: exporter.to_vec(),
        }
    }

    /// The environment that points a sidecar's OTLP log shipping here (gRPC).
    pub fn otel_env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.grpc_endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
        ]
    }

    /// A collector that keeps what it receives where the pod cannot reach
    /// it: each batch of logs as OTLP JSON in `topic` on `broker` (rotel's
    /// Kafka exporter) — the auditor's copy.
    pub fn start_exporting_to(broker: &Broker, topic: &str) -> Collector {
        Self::start_with(&[
            "--exporter".to_string(),
            "kafka".into(),
            "--kafka-exporter-brokers".into(),
            broker.addr(),
            "--kafka-exporter-logs-topic".into(),
            topic.into(),
            "--kafka-exporter-format".into(),
            "json".into(),
        ])
    }

    fn spawn_with(
        dir: &tempfile::TempDir,
        grpc: u16,
        http: u16,
        generation: u32,
        exporter: &[String],
    ) -> Proc {
        let mut cmd = Command::new(&peers().rotel);
        cmd.arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")]);
        if exporter.is_empty() {
            cmd.args([
                "--exporter",
                "blackhole",
                "--debug-log",
                "logs",
                "--debug-log-verbosity",
                "detailed",
            ]);
        } else {
            cmd.args(exporter);
        }
        let proc = Proc::spawn(
            "rotel",
            cmd,
            dir.path().join(format!("rotel-{generation}.out")),
        )
        .unwrap();
        if let Err(e) = wait_for_port(grpc, Duration::from_secs(30)) {
            panic!("rotel did not start: {e}\n{}", proc.output());
        }
        proc
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    pub fn start_again(&mut self) {
        self.generation += 1;
        self.proc = Self::spawn_with(
            &self.dir,
            self.grpc_port,
            self.http_port,
            self.generation,
            &self.exporter,
        );
    }

    /// Everything every run of the collector printed.
    pub fn output(&self) -> String {
        let mut all = String::new();
        for g in 0..=self.generation {
            all.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("rotel-{g}.out")))
                    .unwrap_or_default(),
            );
        }
        all
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// Run a Python client script from `e2e/clients/` with the venv's python.
pub fn python_client(script: &str, args: &[&str]) -> Output {
    let path = repo_root().join("e2e").join("clients").join(script);
    assert!(path.exists(), "client script {} missing", path.display());
    Command::new(&peers().python)
        .arg(path)
        .args(args)
        .output()
        .unwrap()
}

/// Run kcat (linked against librdkafka ≥ 2.16) with `args`, feeding `stdin`.
pub fn kcat(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(&peers().kcat)
        .args(args)
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
        let mut si = child.stdin.take().unwrap();
        si.write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Assert a command succeeded, showing its output otherwise.
pub fn check(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Lines of a JSON-lines file under `examples/data/`.
pub fn fixture_lines(name: &str) -> Vec<String> {
    let p = example(&format!("data/{name}"));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The planted PHI strings of the fixtures (`examples/data/phi-values.json`).
pub fn phi_values() -> Vec<String> {
    let p = example("data/phi-values.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut out = Vec::new();
    collect_strings(&v, &mut out);
    out
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}
