//! The pure core: one base64 token + the IdP's certificates + a clock →
//! a principal, or the reason it was refused. No IO.
//!
//! Order: size → base64 → no DTD → shape (exactly one Assertion, at the root
//! or directly under a root Response; no EncryptedAssertion) → XML-DSig by
//! samael/xmlsec1 (every Signature in the document must verify with a
//! metadata certificate; SHA-2 algorithms only) → re-parse *only* the bytes
//! the signature covered (xmlsec's pre-digest) → the signed element's ID must
//! be the Assertion's (or the root Response's that holds it) → issuer →
//! audience → NotBefore/NotOnOrAfter → bearer SubjectConfirmationData
//! expiry → subject and groups.
//!
//! Signature wrapping (XSW) is defeated twice over: claims are read from the
//! pre-digest (what was hashed, not what sits next to it), and a document
//! with a second assertion, or whose signed element is not the one assertion
//! in it, is refused outright rather than "repaired".
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use libxml::tree::Node;
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use samael::schema::{Assertion, Response};
use streamgate_crds::SubjectKind;
use streamgate_crds::matching::Principal;

use super::{SamlConfig, SamlError};

/// Assertions are a few KiB; anything this large is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 256 * 1024;

const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// SHA-1 is not accepted: collisions are practical.
const ALLOWED_ALGORITHMS: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// An assertion that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub principal: Principal,
    /// The earliest of the assertion's NotOnOrAfter and its bearer
    /// confirmation's, seconds since the epoch (KIP-368 session end).
    pub expires_at: u64,
    /// The assertion's ID (the one-time-use cache key).
    pub id: String,
}

/// The decoded document and what its (unverified) shape says: used only to
/// pick the IdP and to cross-check the signed element, never as claims.
#[derive(Debug)]
pub struct Inspected {
    pub xml: String,
    /// The one assertion's ID.
    pub assertion_id: String,
    /// The root Response's ID, when the root is a Response.
    pub response_id: Option<String>,
    /// The assertion's Issuer text, unverified: it selects the IdP whose
    /// certificates then must verify it.
    pub issuer_hint: Option<String>,
}

fn engine(alphabet: &base64::alphabet::Alphabet) -> GeneralPurpose {
    GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// base64 (RFC 4648 §4) or base64url (§5, RFC 7522's encoding), padded or not.
fn decode(token: &str) -> Result<Vec<u8>, SamlError> {
    let compact: String = token.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let alphabet = if compact.contains(['-', '_']) {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    engine(alphabet)
        .decode(compact.as_bytes())
        .map_err(|_| SamlError::Malformed("not base64"))
}

fn is_el(node: &Node, ns: &str, name: &str) -> bool {
    node.get_name() == name && node.get_namespace().is_some_and(|n| n.get_href() == ns)
}

/// Every element below (and including) `node` with local name `name` in `ns`.
fn count_elements(node: &Node, ns: &str, name: &str) -> usize {
    let here = usize::from(is_el(node, ns, name));
    here + node
        .get_child_elements()
        .iter()
        .map(|c| count_elements(c, ns, name))
        .sum::<usize>()
}

/// Decode the token and check its shape (see the module doc).
pub fn inspect(token: &str) -> Result<Inspected, SamlError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(SamlError::Malformed("token too large"));
    }
    let bytes = decode(token)?;
    let xml = String::from_utf8(bytes).map_err(|_| SamlError::Malformed("not UTF-8 XML"))?;
    // SAML forbids DTDs; refusing them up front also rules out entity
    // expansion tricks before any parser sees the document.
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return Err(SamlError::Malformed("a DTD is not allowed"));
    }
    let doc = libxml::parser::Parser::default()
        .parse_string(&xml)
        .map_err(|_| SamlError::Malformed("not well-formed XML"))?;
    let root = doc
        .get_root_element()
        .ok_or(SamlError::Malformed("no root element"))?;
    if count_elements(&root, NS_ASSERTION, "EncryptedAssertion") > 0 {
        return Err(SamlError::Unsupported("encrypted assertions"));
    }
    let assertions = count_elements(&root, NS_ASSERTION, "Assertion");
    if assertions != 1 {
        return Err(SamlError::Wrapping(format!(
            "the token holds {assertions} assertions; exactly one is accepted"
        )));
    }
    let (assertion, response_id) = if is_el(&root, NS_ASSERTION, "Assertion") {
        (root.clone(), None)
    } else if is_el(&root, NS_PROTOCOL, "Response") {
        let a = root
            .get_child_elements()
            .into_iter()
            .find(|c| is_el(c, NS_ASSERTION, "Assertion"))
            .ok_or_else(|| {
                SamlError::Wrapping("the Response's assertion is not its direct child".into())
            })?;
        let id = root
            .get_attribute("ID")
            .ok_or(SamlError::Malformed("the Response has no ID"))?;
        (a, Some(id))
    } else {
        return Err(SamlError::Malformed(
            "the root is neither a SAML Assertion nor a Response",
        ));
    };
    let assertion_id = assertion
        .get_attribute("ID")
        .ok_or(SamlError::Malformed("the Assertion has no ID"))?;
    let issuer_hint = assertion
        .get_child_elements()
        .into_iter()
        .find(|c| is_el(c, NS_ASSERTION, "Issuer"))
        .map(|i| i.get_content().trim().to_string());
    Ok(Inspected {
        xml,
        assertion_id,
        response_id,
        issuer_hint,
    })
}

/// Verify `token` against the IdP certificates `certs` at `now`.
pub fn verify(
    token: &str,
    certs: &[CertificateDer],
    cfg: &SamlConfig,
    now: DateTime<Utc>,
) -> Result<VerifiedAssertion, SamlError> {
    let inspected = inspect(token)?;
    verify_inspected(&inspected, certs, cfg, now)
}

/// [`verify`] after [`inspect`].
pub fn verify_inspected(
    inspected: &Inspected,
    certs: &[CertificateDer],
    cfg: &SamlConfig,
    now: DateTime<Utc>,
) -> Result<VerifiedAssertion, SamlError> {
    if certs.is_empty() {
        return Err(SamlError::MetadataUnavailable(
            "the IdP metadata lists no signing certificate".into(),
        ));
    }
    // Only what xmlsec hashed comes back: the signed element, canonical,
    // with its own enveloped Signature removed.
    let signed = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        &inspected.xml,
        certs,
        ReduceMode::PreDigest,
        Some(ALLOWED_ALGORITHMS),
    )
    .map_err(|_| SamlError::BadSignature)?;
    let assertion = signed_assertion(&signed, inspected, cfg)?;
    check_assertion(&assertion, cfg, now)
}

/// The assertion, parsed from the signed bytes only; the signed element must
/// be the one assertion of the token (or the root Response holding it).
fn signed_assertion(
    signed: &str,
    inspected: &Inspected,
    cfg: &SamlConfig,
) -> Result<Assertion, SamlError> {
    // The document must outlive its nodes (they point into it).
    let doc = libxml::parser::Parser::default()
        .parse_string(signed)
        .map_err(|_| SamlError::Malformed("the signed content is not XML"))?;
    let root = doc
        .get_root_element()
        .ok_or(SamlError::Malformed("the signed content is not XML"))?;
    let signed_id = root.get_attribute("ID");
    if is_el(&root, NS_ASSERTION, "Assertion") {
        if signed_id.as_deref() != Some(inspected.assertion_id.as_str()) {
            return Err(SamlError::Wrapping(
                "the signature covers another element than the assertion used".into(),
            ));
        }
        return signed
            .parse::<Assertion>()
            .map_err(|_| SamlError::Malformed("assertion schema"));
    }
    if is_el(&root, NS_PROTOCOL, "Response") {
        if signed_id.is_none() || signed_id != inspected.response_id {
            return Err(SamlError::Wrapping(
                "the signature covers another Response than the token's".into(),
            ));
        }
        let response = signed
            .parse::<Response>()
            .map_err(|_| SamlError::Malformed("response schema"))?;
        let status = response
            .status
            .as_ref()
            .and_then(|s| s.status_code.value.as_deref());
        if status != Some(SUCCESS) {
            return Err(SamlError::NotSuccess);
        }
        if let Some(issuer) = response.issuer.as_ref().and_then(|i| i.value.as_deref())
            && issuer.trim() != cfg.issuer
        {
            return Err(SamlError::WrongIssuer);
        }
        let assertion = response
            .assertion
            .ok_or_else(|| SamlError::Wrapping("the signed Response holds no assertion".into()))?;
        if assertion.id != inspected.assertion_id {
            return Err(SamlError::Wrapping(
                "the signed Response holds another assertion than the one used".into(),
            ));
        }
        return Ok(assertion);
    }
    Err(SamlError::Wrapping(
        "the signature covers neither an Assertion nor a Response".into(),
    ))
}

fn secs(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

/// Issuer, audience, validity window, bearer confirmation, subject, groups.
fn check_assertion(
    a: &Assertion,
    cfg: &SamlConfig,
    now: DateTime<Utc>,
) -> Result<VerifiedAssertion, SamlError> {
    if a.version != "2.0" {
        return Err(SamlError::Malformed("not a SAML 2.0 assertion"));
    }
    if a.issuer.value.as_deref().map(str::trim) != Some(cfg.issuer.as_str()) {
        return Err(SamlError::WrongIssuer);
    }
    let skew = chrono::Duration::from_std(cfg.clock_skew).unwrap_or_default();
    let conditions = a
        .conditions
        .as_ref()
        .ok_or(SamlError::Missing("Conditions"))?;
    // Every AudienceRestriction must name us (SAML core §2.5.1.4); at least one is required.
    let restrictions = conditions
        .audience_restrictions
        .as_deref()
        .unwrap_or_default();
    if restrictions.is_empty()
        || !restrictions
            .iter()
            .all(|r| r.audience.iter().any(|aud| aud.trim() == cfg.audience))
    {
        return Err(SamlError::WrongAudience);
    }
    if conditions.not_before.is_some_and(|nb| now + skew < nb) {
        return Err(SamlError::NotYetValid);
    }
    let not_on_or_after = conditions
        .not_on_or_after
        .ok_or(SamlError::Missing("Conditions NotOnOrAfter"))?;
    if now - skew >= not_on_or_after {
        return Err(SamlError::Expired);
    }
    let subject = a.subject.as_ref().ok_or(SamlError::Missing("Subject"))?;
    // A bearer confirmation bounds how long the assertion may be presented.
    let bearer_until = subject
        .subject_confirmations
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|c| c.method.as_deref() == Some(BEARER))
        .filter_map(|c| c.subject_confirmation_data.as_ref())
        .filter(|d| d.not_before.is_none_or(|nb| now + skew >= nb))
        .filter_map(|d| d.not_on_or_after)
        .max()
        .ok_or(SamlError::Missing(
            "a bearer SubjectConfirmation with SubjectConfirmationData NotOnOrAfter",
        ))?;
    if now - skew >= bearer_until {
        return Err(SamlError::ConfirmationExpired);
    }
    let name = match &cfg.subject_attribute {
        None => subject
            .name_id
            .as_ref()
            .map(|n| n.value.trim().to_string())
            .ok_or(SamlError::Missing("Subject NameID"))?,
        Some(attr) => attribute_values(a, attr)
            .into_iter()
            .next()
            .ok_or_else(|| SamlError::MissingAttribute(attr.clone()))?,
    };
    if name.is_empty() {
        return Err(SamlError::Missing("a non-empty subject"));
    }
    Ok(VerifiedAssertion {
        principal: Principal {
            kind: SubjectKind::User,
            name,
            namespace: None,
            groups: attribute_values(a, &cfg.groups_attribute),
            // check_assertion compared the signed Issuer with exactly this.
            issuer: Some(cfg.issuer.clone()),
        },
        expires_at: secs(not_on_or_after.min(bearer_until)),
        id: a.id.clone(),
    })
}

/// The non-empty values of the attribute named (Name or FriendlyName) `name`.
fn attribute_values(a: &Assertion, name: &str) -> Vec<String> {
    a.attribute_statements
        .as_deref()
        .unwrap_or_default()
        .iter()
        .flat_map(|s| s.attributes.iter())
        .filter(|attr| {
            attr.name.as_deref() == Some(name) || attr.friendly_name.as_deref() == Some(name)
        })
        .flat_map(|attr| attr.values.iter())
        .filter_map(|v| v.value.as_deref().map(str::trim))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}
