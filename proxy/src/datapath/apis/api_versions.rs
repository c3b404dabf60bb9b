//! ApiVersions: advertise only what both the broker offers and this proxy can
//! parse, so a client never picks a version the gate cannot decode. A request
//! newer than the proxy knows is answered locally with UNSUPPORTED_VERSION
//! (response header v0, body v0) — clients then retry with v0, as they do
//! against a real broker.

use crate::datapath::exchange::Response;
use crate::kafka::codec::{FrameError, RequestMeta, encode_response};
use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};
use kafka_protocol::protocol::Message;

use super::RequestAction;

/// Answer a too-new ApiVersions locally; forward the rest.
pub fn on_request(meta: &RequestMeta) -> RequestAction {
    let supported = ApiVersionsResponse::VERSIONS;
    if meta.api_version > supported.max {
        tracing::debug!(
            version = meta.api_version,
            "ApiVersions newer than the proxy parses: answering UNSUPPORTED_VERSION"
        );
        match unsupported_version(meta.correlation_id) {
            Ok(answer) => return RequestAction::Answer(answer),
            Err(error) => {
                tracing::warn!(%error, "could not encode the UNSUPPORTED_VERSION answer; forwarding")
            }
        }
    }
    RequestAction::Forward {
        expect_response: true,
        masked: Vec::new(),
    }
}

/// The broker's own answer to a too-new ApiVersions: error 35 and the
/// ApiVersions range, at v0 with header v0.
fn unsupported_version(correlation_id: i32) -> Result<Bytes, FrameError> {
    let range = ApiVersionsResponse::VERSIONS;
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::ApiVersions as i16)
                .with_min_version(range.min)
                .with_max_version(range.max),
        ]);
    encode_response(correlation_id, 0, &body, 0)
}

/// Intersect the broker's advertised ranges with what the proxy parses.
pub fn on_response(response: &mut Response) -> Result<(), FrameError> {
    if let ResponseKind::ApiVersions(versions) = response.body()? {
        intersect(versions);
        response.changed();
    }
    Ok(())
}

/// Keep only api keys the proxy knows, each narrowed to the versions it parses.
pub fn intersect(response: &mut ApiVersionsResponse) {
    response.api_keys.retain_mut(|entry| {
        let Ok(key) = ApiKey::try_from(entry.api_key) else {
            return false;
        };
        let ours = key.valid_versions();
        let both = ours.intersect(&kafka_protocol::protocol::VersionRange {
            min: entry.min_version,
            max: entry.max_version,
        });
        if both.is_empty() {
            return false;
        }
        entry.min_version = both.min;
        entry.max_version = both.max;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::apis::test_support::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    fn broker_offer() -> ApiVersionsResponse {
        let v = |key: i16, min, max| {
            ApiVersion::default()
                .with_api_key(key)
                .with_min_version(min)
                .with_max_version(max)
        };
        ApiVersionsResponse::default().with_api_keys(vec![
            v(ApiKey::Produce as i16, 0, 11),
            v(ApiKey::Fetch as i16, 0, 99),
            v(ApiKey::Metadata as i16, 0, 12),
            v(9999, 0, 3),
        ])
    }

    #[test]
    fn response_is_the_intersection_for_every_version() {
        for version in 0..=ApiVersionsResponse::VERSIONS.max {
            let meta = meta(ApiKey::ApiVersions, version);
            let frame = response_frame(&meta, &broker_offer());
            let out = through(&meta, frame, |r| {
                on_response(r).map(|()| Default::default())
            })
            .unwrap()
            .frame;
            let (corr, decoded): (i32, ApiVersionsResponse) = decode_response(&meta, &out);
            assert_eq!(corr, 99);
            let ranges: Vec<_> = decoded
                .api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version))
                .collect();
            // kafka-protocol follows Kafka 4.0, which dropped Produce v0-2 and Fetch v0-3.
            let produce = ApiKey::Produce.valid_versions();
            let fetch = ApiKey::Fetch.valid_versions();
            assert_eq!(
                ranges,
                vec![(0, produce.min, 11), (1, fetch.min, fetch.max), (3, 0, 12)],
                "v{version}"
            );
            assert!(
                produce.min > 0 && fetch.max < 99,
                "the proxy's own limits are applied"
            );
        }
    }

    #[test]
    fn too_new_request_is_answered_locally_with_unsupported_version_header_v0() {
        let meta = meta(ApiKey::ApiVersions, ApiVersionsResponse::VERSIONS.max + 1);
        let frame = request_frame(
            &RequestMeta {
                api_version: 3,
                ..meta.clone()
            },
            &ApiVersionsRequest::default(),
        );
        let Requested::Answer(answer) = request_through(&caller(), &meta, frame, None).unwrap()
        else {
            panic!("expected a local answer")
        };
        let v0 = RequestMeta {
            api_version: 0,
            ..meta
        };
        let (corr, decoded): (i32, ApiVersionsResponse) = decode_response(&v0, &answer);
        assert_eq!(corr, 99);
        assert_eq!(decoded.error_code, ResponseError::UnsupportedVersion.code());
        assert_eq!(decoded.api_keys[0].api_key, ApiKey::ApiVersions as i16);
    }

    #[test]
    fn a_brokers_unsupported_version_answer_is_read_in_the_v0_layout() {
        let asked = meta(ApiKey::ApiVersions, 4);
        let v0 = RequestMeta {
            api_version: 0,
            ..asked.clone()
        };
        let mut broker = broker_offer();
        broker.error_code = ResponseError::UnsupportedVersion.code();
        // The broker answers with header v0 and a v0 body.
        let frame = response_frame(&v0, &broker);
        let out = through(&asked, frame, |r| {
            on_response(r).map(|()| Default::default())
        })
        .unwrap()
        .frame;
        let (_, decoded): (i32, ApiVersionsResponse) = decode_response(&v0, &out);
        assert_eq!(decoded.error_code, ResponseError::UnsupportedVersion.code());
        assert_eq!(decoded.api_keys.len(), 3, "intersected in the v0 layout");
    }

    #[test]
    fn supported_request_is_forwarded_untouched() {
        let meta = meta(ApiKey::ApiVersions, 3);
        let frame = request_frame(&meta, &ApiVersionsRequest::default());
        let Requested::Forward {
            frame: out,
            expect_response: true,
            ..
        } = request_through(&caller(), &meta, frame.clone(), None).unwrap()
        else {
            panic!("expected forward")
        };
        assert_eq!(out, frame);
    }
}
