//! `streamgate-crdgen`: write the CRD YAML to `crds/` and `charts/streamgate/crds/`.
//!
//! `--check` writes nothing and exits non-zero when a committed file differs.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let targets: [PathBuf; 2] = [
        crate_dir.to_path_buf(),
        crate_dir.join("../charts/streamgate/crds"),
    ];
    let files = streamgate_crds::generate::render_all()?;
    let mut stale = Vec::new();
    for dir in &targets {
        if !check {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for (name, yaml) in &files {
            let path = dir.join(name);
            if check {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                    stale.push(path.display().to_string());
                }
            } else {
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "stale CRD files (run cargo run -p streamgate-crds --bin streamgate-crdgen): {}",
            stale.join(", ")
        );
    }
    Ok(())
}
