//! The spool as the collector's buffer: shipped segments pruned down to a
//! local tail, a budget it never grows past, and verification that still
//! holds (and still catches a forgery) after pruning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use streamgate_proxy::audit::anchors::{Witnessed, records_in_copy};
use streamgate_proxy::audit::prune::{self, MARKER};
use streamgate_proxy::audit::record::{AuditRecord, Operation};
use streamgate_proxy::audit::segment;
use streamgate_proxy::audit::shipper::Cursor;
use streamgate_proxy::audit::spool::{SpoolConfig, SpoolHandle};
use streamgate_proxy::audit::verify::{Verdict, verify_dir};

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 2000,
        max_batch: 2,
        keep_segments: 2,
        checkpoint_interval: Duration::from_secs(3600),
        ..SpoolConfig::new(dir)
    }
}

async fn write(spool: &SpoolHandle, n: usize) -> Vec<Result<u64, String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let receipt = spool
            .append(AuditRecord::request("Produce", 9, Operation::Write))
            .await
            .unwrap();
        out.push(receipt.await.map(|d| d.seq).map_err(|e| e.to_string()));
    }
    out
}

fn all_lines(dir: &Path) -> String {
    segment::read_lines(dir)
        .unwrap()
        .map(|l| format!("{}\n", l.unwrap().2))
        .collect()
}

fn verdict(dir: &Path, anchors: Option<&Witnessed>) -> Verdict {
    verify_dir(dir, anchors, 0, |_| {}).unwrap()
}

#[tokio::test]
async fn shipped_segments_are_pruned_to_the_local_tail_and_what_is_left_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SpoolHandle::start(config(dir.path()));
    write(&spool, 30).await;
    // What the collector holds: the first 30 records, acknowledged.
    let copy = all_lines(dir.path());
    Cursor::new(dir.path(), "otlp").store(30).unwrap();
    write(&spool, 30).await;
    spool.close().await;

    let marker = prune::read_marker(dir.path())
        .unwrap()
        .expect("segments were pruned");
    assert!(marker.seq <= 30, "only shipped records go: {marker:?}");
    assert!(marker.genesis.is_some());
    let segments = segment::list_segments(dir.path()).unwrap();
    assert_eq!(segments[0].first_seq, marker.seq + 1);
    match verdict(dir.path(), None) {
        Verdict::Intact(r) => {
            assert_eq!(r.first_seq, Some(marker.seq + 1));
            assert_eq!(r.last_seq, Some(60), "every unshipped record is still here");
        }
        other => panic!("{other:?}"),
    }
    let witnessed = Witnessed::from_records(&records_in_copy(&copy).unwrap()).unwrap();
    assert!(matches!(
        verdict(dir.path(), Some(&witnessed)),
        Verdict::Intact(_)
    ));

    // A restart continues the chain under the same name.
    let spool = SpoolHandle::start(config(dir.path()));
    write(&spool, 1).await;
    spool.close().await;
    assert!(matches!(
        verdict(dir.path(), Some(&witnessed)),
        Verdict::Intact(_)
    ));

    // A forged marker (say, to hide pruned records that were never shipped)
    // does not match what the collector holds.
    let forged = serde_json::json!({
        "genesis": marker.genesis, "seq": marker.seq,
        "hash": format!("sha256:{}", "0".repeat(64)),
    });
    std::fs::write(dir.path().join(MARKER), forged.to_string()).unwrap();
    assert!(
        matches!(
            verdict(dir.path(), Some(&witnessed)),
            Verdict::Unanchored { .. }
        ),
        "a forged marker is caught against the anchors"
    );
}

#[tokio::test]
async fn nothing_is_pruned_without_a_shipper() {
    let dir = tempfile::tempdir().unwrap();
    let spool = SpoolHandle::start(config(dir.path()));
    write(&spool, 60).await;
    spool.close().await;
    assert!(prune::read_marker(dir.path()).unwrap().is_none());
    assert_eq!(segment::list_segments(dir.path()).unwrap()[0].first_seq, 1);
}

#[tokio::test]
async fn a_full_spool_refuses_records_stays_in_budget_and_says_how_many_once_shipping_frees_room() {
    let dir = tempfile::tempdir().unwrap();
    let max = 6000;
    let spool = SpoolHandle::start(SpoolConfig {
        max_bytes: max,
        keep_segments: 1,
        ..config(dir.path())
    });
    let results = write(&spool, 40).await;
    let refused = results.iter().filter(|r| r.is_err()).count();
    assert!(refused > 0, "the budget was reached");
    let first_error = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(first_error.contains("the spool is full"), "{first_error}");
    assert!(prune::spool_bytes(dir.path()).unwrap() <= max);
    assert!(!spool.health().is_healthy());

    // The collector acknowledges everything written: room again.
    let last = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .max()
        .copied()
        .unwrap();
    Cursor::new(dir.path(), "otlp").store(last).unwrap();
    let after = write(&spool, 1).await;
    assert!(after[0].is_ok(), "{after:?}");
    spool.close().await;
    assert!(prune::spool_bytes(dir.path()).unwrap() <= max);
    let note = all_lines(dir.path())
        .lines()
        .filter(|l| l.contains("\"kind\":\"SpoolFailure\""))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(note.len(), 1, "{note:?}");
    assert!(
        note[0].contains(&format!("{refused} audit records could not be spooled")),
        "the trail says how many records it could not keep: {}",
        note[0]
    );
    assert!(matches!(verdict(dir.path(), None), Verdict::Intact(_)));
}
