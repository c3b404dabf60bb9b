//! RFC 7628 OAUTHBEARER client initial response:
//! `gs2-header \x01 auth=Bearer <token> \x01 [key=value \x01]* \x01`,
//! where the GS2 header is `n,,` or `n,a=<authzid>,` (`y,…` is accepted too;
//! channel binding `p=…` is not supported by SASL over Kafka and is refused).
//! Pure parsing; the token is never part of an error message.
//!
//! Extensions (RFC 7628 §3.1: `key = 1*(ALPHA)`, `value = *(VCHAR / SP /
//! HTAB / CR / LF)`) other than `auth` are checked against that grammar and
//! otherwise ignored, except [`BREAK_GLASS_KEY`]: its value is the reason for
//! emergency access, held to `check_break_glass_reason` (one printable line).
//! The key has no dot: RFC 7628 keys are letters only, and librdkafka and the
//! Java client refuse anything else.

/// The extension invoking break-glass; its value is the reason.
pub const BREAK_GLASS_KEY: &str = "streamgateBreakGlass";

/// The parts of a client initial response the sidecar uses.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// The bearer token (a JWT); secret, so `Debug` hides it.
    pub token: String,
    /// The `a=` authorization identity, if the client sent one.
    pub authzid: Option<String>,
    /// The break-glass reason ([`BREAK_GLASS_KEY`]), if the client invoked it.
    pub break_glass: Option<String>,
}

impl std::fmt::Debug for ClientResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientResponse")
            .field("token", &"<redacted>")
            .field("authzid", &self.authzid)
            .field("break_glass", &self.break_glass)
            .finish()
    }
}

/// Why a client message is not a valid OAUTHBEARER initial response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OauthBearerError {
    #[error("OAUTHBEARER message is not UTF-8")]
    NotUtf8,
    #[error("OAUTHBEARER message has no valid GS2 header (expected `n,,` or `n,a=<authzid>,`)")]
    BadGs2Header,
    #[error("OAUTHBEARER channel binding is not supported")]
    ChannelBinding,
    #[error("OAUTHBEARER message is not terminated by \\x01\\x01")]
    NotTerminated,
    #[error("OAUTHBEARER message has a malformed key/value pair")]
    BadKeyValue,
    #[error("OAUTHBEARER message has no auth=Bearer <token>")]
    MissingAuth,
    #[error("OAUTHBEARER auth value is not `Bearer <token>`")]
    NotBearer,
    #[error(
        "OAUTHBEARER extension {0:?} has a value RFC 7628 does not allow (printable ASCII, space, tab, CR, LF)"
    )]
    BadExtensionValue(String),
    #[error("OAUTHBEARER extension {key:?} appears twice")]
    DuplicateExtension { key: String },
    #[error("OAUTHBEARER extension {BREAK_GLASS_KEY}: the reason {0}")]
    BadBreakGlassReason(String),
}

/// Parse a client initial response.
pub fn parse_client_response(msg: &[u8]) -> Result<ClientResponse, OauthBearerError> {
    let msg = std::str::from_utf8(msg).map_err(|_| OauthBearerError::NotUtf8)?;
    let (gs2, rest) = msg
        .split_once('\x01')
        .ok_or(OauthBearerError::BadGs2Header)?;
    let authzid = parse_gs2(gs2)?;
    // `rest` is `kv\x01kv\x01…\x01` (the final \x01 of the message follows the last pair's).
    let body = rest
        .strip_suffix('\x01')
        .ok_or(OauthBearerError::NotTerminated)?;
    if body.is_empty() {
        return Err(OauthBearerError::MissingAuth);
    }
    let body = body
        .strip_suffix('\x01')
        .ok_or(OauthBearerError::NotTerminated)?;
    let mut token = None;
    let mut break_glass = None;
    let mut seen: Vec<&str> = Vec::new();
    for pair in body.split('\x01') {
        let (key, value) = pair.split_once('=').ok_or(OauthBearerError::BadKeyValue)?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(OauthBearerError::BadKeyValue);
        }
        if seen.contains(&key) {
            return Err(OauthBearerError::DuplicateExtension { key: key.into() });
        }
        seen.push(key);
        if !value
            .bytes()
            .all(|b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            return Err(OauthBearerError::BadExtensionValue(key.into()));
        }
        if key == BREAK_GLASS_KEY {
            streamgate_crds::validation::check_break_glass_reason(value)
                .map_err(OauthBearerError::BadBreakGlassReason)?;
            break_glass = Some(value.to_string());
        } else if key == "auth" {
            let (scheme, tok) = value.split_once(' ').ok_or(OauthBearerError::NotBearer)?;
            let tok = tok.trim_matches(' ');
            if !scheme.eq_ignore_ascii_case("bearer") || tok.is_empty() {
                return Err(OauthBearerError::NotBearer);
            }
            token = Some(tok.to_string());
        }
    }
    Ok(ClientResponse {
        token: token.ok_or(OauthBearerError::MissingAuth)?,
        authzid,
        break_glass,
    })
}

fn parse_gs2(gs2: &str) -> Result<Option<String>, OauthBearerError> {
    let mut parts = gs2.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let authz = parts.next().ok_or(OauthBearerError::BadGs2Header)?;
    let tail = parts.next().ok_or(OauthBearerError::BadGs2Header)?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(OauthBearerError::ChannelBinding),
        _ => return Err(OauthBearerError::BadGs2Header),
    }
    if !tail.is_empty() {
        return Err(OauthBearerError::BadGs2Header);
    }
    match authz {
        "" => Ok(None),
        a => a
            .strip_prefix("a=")
            .filter(|s| !s.is_empty())
            .map(|s| Some(s.replace("=2C", ",").replace("=3D", "=")))
            .ok_or(OauthBearerError::BadGs2Header),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_clients_send() {
        let r = parse_client_response(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01").unwrap();
        assert_eq!(r.token, "abc.def.ghi");
        assert_eq!(r.authzid, None);
        // librdkafka sends the principal as authzid and extensions as extra pairs.
        let r = parse_client_response(
            b"n,a=alice@example.com,\x01host=h\x01auth=bearer tok\x01port=9092\x01\x01",
        )
        .unwrap();
        assert_eq!(r.token, "tok");
        assert_eq!(r.authzid.as_deref(), Some("alice@example.com"));
        let r = parse_client_response(b"n,a=a=2Cb,\x01auth=Bearer t\x01\x01").unwrap();
        assert_eq!(r.authzid.as_deref(), Some("a,b"));
    }

    #[test]
    fn malformed_messages_have_clear_errors() {
        use OauthBearerError::*;
        let cases: &[(&[u8], OauthBearerError)] = &[
            (b"", BadGs2Header),
            (b"\xff\xfe", NotUtf8),
            (b"x,,\x01auth=Bearer t\x01\x01", BadGs2Header),
            (b"n,b=x,\x01auth=Bearer t\x01\x01", BadGs2Header),
            (b"n\x01auth=Bearer t\x01\x01", BadGs2Header),
            (b"p=tls-unique,,\x01auth=Bearer t\x01\x01", ChannelBinding),
            (b"n,,\x01auth=Bearer t\x01", NotTerminated),
            (b"n,,\x01auth=Bearer t", NotTerminated),
            (b"n,,\x01\x01", MissingAuth),
            (b"n,,\x01\x01\x01", BadKeyValue),
            (b"n,,\x01host=x\x01\x01", MissingAuth),
            (b"n,,\x01auth=Basic dXNlcg==\x01\x01", NotBearer),
            (b"n,,\x01auth=Bearer \x01\x01", NotBearer),
            (b"n,,\x01auth=Bearertok\x01\x01", NotBearer),
            (b"n,,\x01noequals\x01\x01", BadKeyValue),
        ];
        for (msg, want) in cases {
            assert_eq!(
                parse_client_response(msg).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn the_break_glass_extension_carries_a_reason_held_to_rfc_7628() {
        let r = parse_client_response(
            b"n,,\x01auth=Bearer t\x01streamgateBreakGlass=ED trauma bay 3, patient unconscious\x01\x01",
        )
        .unwrap();
        assert_eq!(
            r.break_glass.as_deref(),
            Some("ED trauma bay 3, patient unconscious")
        );
        assert_eq!(
            parse_client_response(b"n,,\x01auth=Bearer t\x01\x01")
                .unwrap()
                .break_glass,
            None
        );
        use OauthBearerError::*;
        let bad = |msg: &[u8]| parse_client_response(msg).unwrap_err();
        // The dotted key the RFC does not allow (keys are letters only).
        assert_eq!(
            bad(b"n,,\x01auth=Bearer t\x01streamgate.breakglass=x\x01\x01"),
            BadKeyValue
        );
        // A value outside VCHAR/SP/HTAB/CR/LF (here UTF-8 and NUL).
        assert_eq!(
            bad(
                "n,,\x01auth=Bearer t\x01streamgateBreakGlass=Notaufnahme Zimmer Ä\x01\x01"
                    .as_bytes()
            ),
            BadExtensionValue("streamgateBreakGlass".into())
        );
        assert_eq!(
            bad(b"n,,\x01auth=Bearer t\x01other=a\x00b\x01\x01"),
            BadExtensionValue("other".into())
        );
        // Allowed by the RFC, refused for a reason: blank, multi-line, too long.
        for reason in ["", "   ", "line one\r\nline two", &"x".repeat(300)] {
            let msg = format!("n,,\x01auth=Bearer t\x01streamgateBreakGlass={reason}\x01\x01");
            let err = bad(msg.as_bytes());
            assert!(matches!(err, BadBreakGlassReason(_)), "{reason:?}: {err}");
            assert!(err.to_string().contains("streamgateBreakGlass"), "{err}");
        }
        assert_eq!(
            bad(
                b"n,,\x01auth=Bearer t\x01streamgateBreakGlass=a\x01streamgateBreakGlass=b\x01\x01"
            ),
            DuplicateExtension {
                key: "streamgateBreakGlass".into()
            }
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let r = parse_client_response(b"n,,\x01auth=Bearer secret-token\x01\x01").unwrap();
        assert!(!format!("{r:?}").contains("secret-token"));
    }
}
