//! Cluster administration with per-item answers: CreateAcls, DeleteAcls,
//! AlterUserScramCredentials, AlterClientQuotas. They need `Admin` on the
//! cluster; refused, each item the request names is answered
//! CLUSTER_AUTHORIZATION_FAILED (the protocol has no top-level error for them).
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsResponse, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest,
    DeleteAclsResponse, ResponseKind, alter_client_quotas_response,
    alter_user_scram_credentials_response, create_acls_response, delete_acls_response,
};

use super::{CLUSTER_AUTH, Enforcement};

pub(super) fn refuse_create_acls(req: &CreateAclsRequest) -> Enforcement {
    let results = req
        .creations
        .iter()
        .map(|_| create_acls_response::AclCreationResult::default().with_error_code(CLUSTER_AUTH))
        .collect();
    Enforcement::Respond(ResponseKind::CreateAcls(
        CreateAclsResponse::default().with_results(results),
    ))
}

pub(super) fn refuse_delete_acls(req: &DeleteAclsRequest) -> Enforcement {
    let results = req
        .filters
        .iter()
        .map(|_| {
            delete_acls_response::DeleteAclsFilterResult::default().with_error_code(CLUSTER_AUTH)
        })
        .collect();
    Enforcement::Respond(ResponseKind::DeleteAcls(
        DeleteAclsResponse::default().with_filter_results(results),
    ))
}

pub(super) fn refuse_alter_user_scram_credentials(
    req: &AlterUserScramCredentialsRequest,
) -> Enforcement {
    use alter_user_scram_credentials_response::AlterUserScramCredentialsResult as Result;
    let users = req
        .deletions
        .iter()
        .map(|d| d.name.clone())
        .chain(req.upsertions.iter().map(|u| u.name.clone()));
    let results = users
        .map(|u| Result::default().with_user(u).with_error_code(CLUSTER_AUTH))
        .collect();
    Enforcement::Respond(ResponseKind::AlterUserScramCredentials(
        AlterUserScramCredentialsResponse::default().with_results(results),
    ))
}

pub(super) fn refuse_alter_client_quotas(req: &AlterClientQuotasRequest) -> Enforcement {
    let entries = req
        .entries
        .iter()
        .map(|e| {
            let entity = e
                .entity
                .iter()
                .map(|x| {
                    alter_client_quotas_response::EntityData::default()
                        .with_entity_type(x.entity_type.clone())
                        .with_entity_name(x.entity_name.clone())
                })
                .collect();
            alter_client_quotas_response::EntryData::default()
                .with_entity(entity)
                .with_error_code(CLUSTER_AUTH)
        })
        .collect();
    Enforcement::Respond(ResponseKind::AlterClientQuotas(
        AlterClientQuotasResponse::default().with_entries(entries),
    ))
}
