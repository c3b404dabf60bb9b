//! A partition's `records` bytes through the record-batch rewriter
//! (`masking::batch::mask_records`), as a Fetch response (a truncated last
//! batch is dropped) and as a Produce request (it is refused), with the JSON
//! rule and with the Text rule.
//!
//! The input is run as it is, and once more with every batch's CRC32C fixed
//! up (libFuzzer cannot forge checksums; without this nearly every mutation
//! stops at the CRC check).
//!
//! Checked: whatever the rewriter returns is itself a well-formed record set
//! (masking it again in the strict Produce mode succeeds), so no malformed or
//! half-masked batch ever reaches a client or a broker.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamgate_proxy::masking::{Trailing, mask_records};

fn run(records: &Bytes) {
    for plan in streamgate_fuzz::plans() {
        for trailing in [Trailing::Drop, Trailing::Reject] {
            let Ok((out, _counts)) = mask_records(plan, records, trailing) else {
                continue;
            };
            if out != *records {
                if let Err(e) = mask_records(plan, &out, Trailing::Reject) {
                    panic!("masked record set is not well-formed ({trailing:?}): {e}");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    run(&Bytes::copy_from_slice(data));
    if let Some(fixed) = streamgate_fuzz::fix_crcs(data) {
        run(&Bytes::from(fixed));
    }
});
