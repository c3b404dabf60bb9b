//! A client frame (no length prefix) through the request gate: identity and
//! policy (`Identity`, `ConnGate`), the Produce masking stage, the frame as it would go
//! upstream. See `streamgate_fuzz::gate_input` for the input format.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    streamgate_fuzz::gate_input(streamgate_fuzz::preauth(), data);
});
