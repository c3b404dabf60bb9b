//! The connection gate driven frame by frame, as the pipeline drives it.

use bytes::Bytes;
use streamgate_proxy::datapath::exchange::Request;
use streamgate_proxy::kafka::codec::RequestMeta;
use streamgate_proxy::policy::conn::{ConnGate, FrameAction};

/// One client frame through the gate: what it decided, and the request as
/// it would go upstream (trimmed where policy trimmed it).
pub async fn on_frame(conn: &mut ConnGate, frame: Bytes) -> (FrameAction, Bytes) {
    if conn.sasl().expects_raw_token() {
        return (conn.on_raw_token(&frame).await, Bytes::new());
    }
    // A frame that is not a request of a known API closes the connection.
    let meta = match RequestMeta::peek(&frame) {
        Ok(meta) => meta,
        Err(e) => return (FrameAction::Close(e.to_string()), Bytes::new()),
    };
    let mut request = Request::new(meta, frame);
    let action = conn.on_request(&mut request).await.expect("gate");
    (action, request.into_frame().expect("encode"))
}
