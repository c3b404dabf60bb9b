//! SIGKILL a process that is spooling audit records under load; restart on the same spool:
//! nothing acknowledged as durable is lost, `audit verify` passes, the chain continues.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use streamgate_proxy::audit::{
    Audit, AuditDecision, AuditRecord, Operation, ResourceAccess, SpoolConfig, Subject,
};

/// Set in the child process: the spool directory it writes to until killed.
const CHILD_ENV: &str = "STREAMGATE_AUDIT_SIGKILL_CHILD";

fn config(dir: &std::path::Path) -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 256 * 1024,
        ..SpoolConfig::new(dir)
    }
}

fn request(i: u64) -> AuditRecord {
    AuditRecord::request("Produce", 9, Operation::Write)
        .subject(Subject::service_account(
            "system:serviceaccount:clinical:intake",
        ))
        .resource(ResourceAccess::partition(
            "patient-records",
            (i % 3) as i32,
            Some((i as i64, i as i64)),
            1,
            200,
        ))
        .decision(AuditDecision::Allow, "rule write-records")
}

/// The child: 8 concurrent writers, each printing "seq hash" once a record is durable.
fn child(dir: &str) -> ! {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let audit = Arc::new(Audit::with_spool(config(std::path::Path::new(dir))));
        let tasks: Vec<_> = (0..8u64)
            .map(|w| {
                let audit = Arc::clone(&audit);
                tokio::spawn(async move {
                    for i in 0.. {
                        let d = audit
                            .record_durable(request(w * 1_000_000 + i))
                            .await
                            .unwrap();
                        println!("{} {}", d.seq, d.hash);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    unreachable!("the parent kills this process")
}

#[test]
fn sigkill_during_load_loses_nothing_acknowledged_and_the_chain_continues() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_during_load_loses_nothing_acknowledged_and_the_chain_continues",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    for line in BufReader::new(proc.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let mut parts = line.split(' ');
        if let (Some(seq), Some(hash)) = (parts.next().and_then(|s| s.parse().ok()), parts.next()) {
            acknowledged.push((seq, hash.to_owned()));
        }
        if acknowledged.len() >= 3000 {
            break;
        }
    }
    proc.kill().unwrap(); // SIGKILL, mid-load
    proc.wait().unwrap();

    // Restart on the same spool and keep going.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let next = rt.block_on(async {
        let audit = Audit::with_spool(config(dir.path()));
        let d = audit.record_durable(request(0)).await.unwrap();
        for i in 1..10 {
            audit.record_durable(request(i)).await.unwrap();
        }
        audit.shutdown(Duration::from_secs(1)).await;
        d.seq
    });
    let max_ack = acknowledged.iter().map(|(s, _)| *s).max().unwrap();
    assert!(
        next > max_ack,
        "the chain continues after the last acknowledged record ({next} > {max_ack})"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_streamgate-proxy"))
        .args(["audit", "verify"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.ends_with(", OK\n"), "{stdout}");

    // Every record the child was told is durable is in the spool, unchanged.
    let mut on_disk = std::collections::HashMap::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                on_disk.insert(
                    v["seq"].as_u64().unwrap(),
                    v["hash"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
    for (seq, hash) in &acknowledged {
        assert_eq!(
            on_disk.get(seq),
            Some(hash),
            "acknowledged seq {seq} lost or changed"
        );
    }
}
