//! The `run` command as an operator meets it: refusals with reasons, the admin
//! port before and without an upstream, and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamgate-proxy"))
}

#[test]
fn a_non_loopback_listen_address_is_refused_with_the_reason() {
    let out = proxy()
        .args(["run", "--listen", "0.0.0.0:0", "--upstream", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loopback") && stderr.contains("--allow-non-loopback"),
        "{stderr}"
    );
}

#[test]
fn sasl_without_credentials_is_refused() {
    let out = proxy()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--upstream-sasl-mechanism",
            "SCRAM-SHA-512",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream-credentials"));
}

/// `run --upstream-tls` with no CA file, against a trust store given by the
/// standard `SSL_CERT_FILE`/`SSL_CERT_DIR` variables.
fn tls_without_ca_file(cert_file: &std::path::Path, cert_dir: &std::path::Path) -> Command {
    let mut cmd = proxy();
    cmd.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:1",
        "--upstream-tls",
    ])
    .env("SSL_CERT_FILE", cert_file)
    .env("SSL_CERT_DIR", cert_dir);
    cmd
}

#[test]
fn tls_without_a_ca_file_trusts_the_system_roots_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["broker.example".to_string()]).unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, ca.cert.pem()).unwrap();
    let mut child = tls_without_ca_file(&roots, dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Before this fix the sidecar exited at once ("needs --upstream-ca-file").
    std::thread::sleep(Duration::from_millis(1500));
    let exited = child.try_wait().unwrap();
    child.kill().ok();
    let out = child.wait_with_output().unwrap();
    assert!(
        exited.is_none(),
        "exited at start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_without_a_ca_file_and_an_empty_system_store_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = tls_without_ca_file(&empty, dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("system's trust store") && stderr.contains("--upstream-ca-file"),
        "{stderr}"
    );
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

#[tokio::test]
async fn admin_reports_health_but_not_readiness_without_an_upstream_and_sigterm_stops_it() {
    let (listen, admin, dead_upstream) = (free_port(), free_port(), free_port());
    let child = proxy()
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .args([
            "--upstream",
            &format!("127.0.0.1:{dead_upstream}"),
            "--shutdown-grace",
            "2s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A failed assertion must not leave the proxy running.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{admin}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(h) = get(&format!("{base}/healthz")).await {
            break h;
        }
        assert!(Instant::now() < deadline, "admin port never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health.0, 200);
    let ready = get(&format!("{base}/readyz")).await.unwrap();
    assert_eq!(
        ready.0, 503,
        "not ready while the upstream is unreachable: {}",
        ready.1
    );
    let metrics = get(&format!("{base}/metrics")).await.unwrap();
    assert!(
        metrics
            .1
            .contains("streamgate_proxy_client_connections_active"),
        "{}",
        metrics.1
    );

    // A client sending a request now is closed cleanly (no broker to forward
    // to; none is dialled before the client speaks), and the proxy lives on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // ApiVersions v0, correlation id 1, null client id.
    std::io::Write::write_all(
        &mut s,
        b"\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\xff\xff",
    )
    .unwrap();
    let mut buf = [0u8; 4];
    // Closed with the request unread: a FIN, or a reset for the unread bytes.
    let read = std::io::Read::read(&mut s, &mut buf);
    assert!(
        matches!(&read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "connection closed without a reply: {read:?}"
    );
    assert_eq!(get(&format!("{base}/healthz")).await.unwrap().0, 200);

    let started = Instant::now();
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGTERM did not stop the proxy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

/// An admin port that answers 503 `not_ready` times, then 200.
fn admin_becoming_ready(not_ready: usize) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf);
            let status = if i < not_ready {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = conn
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes());
        }
    });
    port
}

#[test]
fn wait_ready_returns_once_the_sidecar_is_ready_and_fails_after_its_timeout() {
    let port = admin_becoming_ready(3);
    let out = proxy()
        .args([
            "wait-ready",
            "--admin",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "20s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let never = admin_becoming_ready(usize::MAX);
    let out = proxy()
        .args([
            "wait-ready",
            "--admin",
            &format!("127.0.0.1:{never}"),
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not ready within"));
}
