//! Not a fuzz target: writes the seed corpora and exits (from libFuzzer's
//! initialisation hook, before any input runs). It is built like the targets,
//! so it shares their build, and `fuzz/run.sh` runs it when `fuzz/corpus` is
//! missing: `SEEDS_DIR=fuzz/corpus <target dir>/<triple>/release/seeds`.
#![no_main]
// The init hook exits, so the (empty) target body is unreachable.
#![allow(unreachable_code)]
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        let dir = std::env::var_os("SEEDS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "corpus".into());
        for (target, n) in streamgate_fuzz::seeds::write_all(&dir) {
            println!("{target}: {n} seeds");
        }
        std::process::exit(0);
    },
    |_data: &[u8]| {}
);
