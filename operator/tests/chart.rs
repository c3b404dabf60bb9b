//! The Helm chart lints (strict), renders and validates offline: runs
//! tests/chart_check.py with the project's Python ($STREAMGATE_PYTHON, from
//! `source ~/.cache/streamgate/peers.env`; it has helm-python-sdk and
//! kubernetes-validate). Fails loudly when that Python is missing: an
//! unchecked chart is not a passing chart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use streamgate_operator::webhook::server;

#[test]
fn chart_lints_renders_and_validates() {
    let python = std::env::var("STREAMGATE_PYTHON").unwrap_or_else(|_| {
        panic!(
            "STREAMGATE_PYTHON is not set: run `source ~/.cache/streamgate/peers.env` (written by .ci/install-peers.sh), \
             or point it at a python with `pip install helm-python-sdk kubernetes-validate pyyaml`"
        )
    });
    let probe = Command::new(&python)
        .args(["-c", "import helm_python, kubernetes_validate, yaml"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        probe.status.success(),
        "{python} lacks helm-python-sdk / kubernetes-validate / pyyaml: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = manifest.join("../charts/streamgate");
    let out = Command::new(&python)
        .arg(manifest.join("tests/chart_check.py"))
        .arg(&chart)
        .env("STREAMGATE_PATH_INJECT", server::PATH_INJECT)
        .env("STREAMGATE_PATH_STAMP", server::PATH_STAMP_APPROVAL)
        .env("STREAMGATE_PATH_VALIDATE", server::PATH_VALIDATE_APPROVAL)
        .env("STREAMGATE_PATH_GUARD", server::PATH_GUARD_POD)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chart check failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        6,
        "{stdout}"
    );
}
