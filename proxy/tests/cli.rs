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
fn sasl_without_credentials_and_tls_without_ca_are_refused() {
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
    let out = proxy()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--upstream-tls",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream-ca-file"));
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

#[tokio::test]
async fn admin_reports_health_but_not_readiness_without_an_upstream_and_sigterm_stops_it() {
    let (listen, admin, dead_upstream) = (free_port(), free_port(), free_port());
    let mut child = proxy()
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
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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

    // A client connecting now is closed cleanly (no broker to forward to), and the proxy lives on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4];
    assert!(
        matches!(std::io::Read::read(&mut s, &mut buf), Ok(0)),
        "connection closed without a reply"
    );
    assert_eq!(get(&format!("{base}/healthz")).await.unwrap().0, 200);

    let started = Instant::now();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
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
