//! A broker's response frame for Fetch or Produce through the response path
//! with masking on: the policy's fixup (for a trimmed request), the exchange's
//! decode (lenient for Fetch v12-15), `mask_fetch_response`, the frame for
//! the client.
//!
//! Input: `[selector, version, frame...]`. `selector` bit 0: Fetch (0) or
//! Produce (1); bit 1: a masked reader (0) or an exempt one (1); bit 2: the
//! request was trimmed by policy, so its `ResponseFixup` runs first.
//! `version` is taken modulo the API's version range. `frame` is the
//! response header and body, without the length prefix.
#![no_main]
use std::sync::OnceLock;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchResponse, ProduceResponse};
use kafka_protocol::protocol::Message;
use libfuzzer_sys::fuzz_target;
use streamgate_fuzz::*;
use streamgate_proxy::kafka::codec::RequestMeta;
use streamgate_proxy::policy::conn::ResponseFixup;

/// Fixups of requests that named `patient-events` and `secret-ledger` (the
/// latter cut out by policy): by name (old versions) and by id (v13+).
struct Fixups {
    fetch_by_name: Option<ResponseFixup>,
    fetch_by_id: Option<ResponseFixup>,
    produce_by_name: Option<ResponseFixup>,
    produce_by_id: Option<ResponseFixup>,
}

fn fixups() -> &'static Fixups {
    static F: OnceLock<Fixups> = OnceLock::new();
    F.get_or_init(|| {
        let records = record_batch(&[PHI_VALUES[0].as_bytes()], COMPRESSIONS[0]);
        let fetch = |v| {
            fixup_for(request_frame(ApiKey::Fetch, v, 1, &fetch_request(&TOPICS)).expect("fetch"))
        };
        let produce = |v| {
            fixup_for(
                request_frame(
                    ApiKey::Produce,
                    v,
                    1,
                    &produce_request(&TOPICS, -1, &records),
                )
                .expect("produce"),
            )
        };
        Fixups {
            fetch_by_name: fetch(12),
            fetch_by_id: fetch(13),
            produce_by_name: produce(9),
            produce_by_id: produce(13),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let [selector, version, frame @ ..] = data else {
        return;
    };
    let (api_key, range) = if selector & 1 == 0 {
        (ApiKey::Fetch, FetchResponse::VERSIONS)
    } else {
        (ApiKey::Produce, ProduceResponse::VERSIONS)
    };
    let span = (range.max - range.min + 1) as u8;
    let api_version = range.min + i16::from(version % span);
    let principal = if selector & 2 == 0 {
        reader()
    } else {
        clinician()
    };
    let fixups = fixups();
    let fixup = match (selector & 4 != 0, api_key, api_version >= 13) {
        (false, ..) => None,
        (true, ApiKey::Fetch, false) => fixups.fetch_by_name.as_ref(),
        (true, ApiKey::Fetch, true) => fixups.fetch_by_id.as_ref(),
        (true, _, false) => fixups.produce_by_name.as_ref(),
        (true, _, true) => fixups.produce_by_id.as_ref(),
    };
    let meta = RequestMeta {
        api_key,
        api_version,
        correlation_id: 7,
    };
    let frame = Bytes::copy_from_slice(frame);
    if let Ok(out) = response_path(&meta, frame.clone(), fixup, &principal) {
        if out != frame {
            check_response(&meta, &out);
        }
    }
});
