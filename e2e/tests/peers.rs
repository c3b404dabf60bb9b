//! The real peers start and talk to each other: a broker that clients can
//! produce to and consume from directly, an IdP that issues JWTs, and a
//! collector that listens. Every other e2e test builds on these.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use streamgate_e2e::*;

#[test]
fn broker_round_trips_records_with_kcat() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("peers-check", 1);
    let produced = check(
        &kcat(
            &["-P", "-b", &broker.addr(), "-t", "peers-check", "-p", "0"],
            Some(b"one\ntwo\nthree\n"),
        ),
        "kcat produce",
    );
    assert!(produced.is_empty());
    let consumed = check(
        &kcat(
            &[
                "-C",
                "-b",
                &broker.addr(),
                "-t",
                "peers-check",
                "-p",
                "0",
                "-o",
                "beginning",
                "-c",
                "3",
                "-e",
            ],
            None,
        ),
        "kcat consume",
    );
    assert_eq!(
        consumed.lines().collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
}

#[test]
fn idp_issues_jwts_for_its_clients() {
    let idp = Idp::start(300, None);
    let token = idp.token("intake-app");
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
}

#[test]
fn collector_listens_on_grpc_and_http() {
    let c = Collector::start();
    wait_for_port(c.http_port, Duration::from_secs(10)).unwrap();
}
