//! IdP metadata (SAML metadata 2.0): the entity's signing certificates.
//!
//! Only what verification needs is read: the `EntityDescriptor` whose
//! `entityID` is the configured issuer (the root, or one inside an
//! `EntitiesDescriptor`), and the X.509 certificates of its
//! `IDPSSODescriptor`'s `KeyDescriptor`s meant for signing (`use="signing"`
//! or no `use`). Several certificates are normal during a key rotation; any
//! of them may sign. Metadata is trusted as configured (a file the operator
//! mounted, or an https URL), so its own signature is not required.
use base64::Engine as _;
use libxml::tree::Node;
use samael::crypto::CertificateDer;

use super::SamlError;

const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";

fn is_el(node: &Node, ns: &str, name: &str) -> bool {
    node.get_name() == name && node.get_namespace().is_some_and(|n| n.get_href() == ns)
}

fn children<'a>(node: &Node, ns: &'a str, name: &'a str) -> impl Iterator<Item = Node> + 'a {
    node.get_child_elements()
        .into_iter()
        .filter(move |c| is_el(c, ns, name))
}

fn unavailable(why: &str) -> SamlError {
    SamlError::MetadataUnavailable(why.to_string())
}

/// The signing certificates `entity_id` publishes in `xml`.
pub fn signing_certificates(xml: &str, entity_id: &str) -> Result<Vec<CertificateDer>, SamlError> {
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return Err(unavailable("metadata with a DTD is not read"));
    }
    let doc = libxml::parser::Parser::default()
        .parse_string(xml)
        .map_err(|_| unavailable("metadata is not well-formed XML"))?;
    let root = doc
        .get_root_element()
        .ok_or_else(|| unavailable("metadata has no root element"))?;
    let entity = if is_el(&root, NS_MD, "EntityDescriptor") {
        Some(root)
    } else if is_el(&root, NS_MD, "EntitiesDescriptor") {
        children(&root, NS_MD, "EntityDescriptor")
            .find(|e| e.get_attribute("entityID").as_deref() == Some(entity_id))
    } else {
        return Err(unavailable("metadata root is not an EntityDescriptor"));
    };
    let entity = entity
        .filter(|e| e.get_attribute("entityID").as_deref() == Some(entity_id))
        .ok_or_else(|| {
            SamlError::MetadataUnavailable(format!(
                "the metadata does not describe the entity {entity_id:?}"
            ))
        })?;
    let mut certs = Vec::new();
    for idp in children(&entity, NS_MD, "IDPSSODescriptor") {
        for kd in children(&idp, NS_MD, "KeyDescriptor") {
            if kd.get_attribute("use").is_some_and(|u| u != "signing") {
                continue;
            }
            for cert in children(&kd, NS_DS, "KeyInfo")
                .flat_map(|ki| children(&ki, NS_DS, "X509Data").collect::<Vec<_>>())
                .flat_map(|xd| children(&xd, NS_DS, "X509Certificate").collect::<Vec<_>>())
            {
                let text: String = cert
                    .get_content()
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| unavailable("a metadata certificate is not base64"))?;
                certs.push(CertificateDer::from(der));
            }
        }
    }
    if certs.is_empty() {
        return Err(SamlError::MetadataUnavailable(format!(
            "the metadata of {entity_id:?} lists no IDPSSODescriptor signing certificate"
        )));
    }
    Ok(certs)
}
