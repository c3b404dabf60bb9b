//! The glue the connection gate calls after each decided request: turn
//! `NeedsApproval` decisions into AccessApproval requests, de-duplicated and
//! rate-limited, created in the background (the refused request is answered
//! at once; it never waits for the API server or the disk).
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use streamgate_crds::access_approval::RequesterOidc;
use streamgate_crds::matching::{Principal, check_topic_name};
use streamgate_crds::{Operation, SubjectKind};

use super::build::{ApprovalRequest, BreakGlassUse, build_access_approval_with};
use super::dedup::{Dedup, DedupConfig};
use super::sink::{ApprovalSink, Created};
use crate::audit::record::{AuditRecord, RecordKind};
use crate::audit::{Audit, AuditDecision, Subject as AuditSubject};
use crate::identity::workload::Workload;
use crate::policy::decide::{BreakGlass, CompiledPolicy, PolicyDecision};
use crate::policy::enforce::TopicDecision;

/// What the audit trail hears about approvals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalEvent {
    /// An AccessApproval was asked for (`created` false: it existed already).
    Requested {
        name: String,
        namespace: String,
        requester: String,
        rule: String,
        created: bool,
    },
    /// Break-glass gave access (recorded once per invocation, rule and
    /// topic, when the AccessApproval recording it is first filed).
    BreakGlassUsed {
        name: String,
        namespace: String,
        requester: String,
        rule: String,
        topic: String,
        reason: String,
    },
    /// A request was allowed under the grant of this AccessApproval.
    Used {
        name: String,
        requester: String,
        rule: String,
        topic: String,
    },
}

impl ApprovalEvent {
    /// The audit record for this event (`ApprovalRequested` / `ApprovalUsed`),
    /// naming the AccessApproval in `reason`.
    pub fn audit_record(&self, subject: Option<AuditSubject>) -> AuditRecord {
        let (kind, decision, reason) = match self {
            ApprovalEvent::Requested {
                name,
                namespace,
                rule,
                created,
                ..
            } => (
                RecordKind::ApprovalRequested,
                AuditDecision::PendingApproval,
                format!(
                    "AccessApproval {namespace}/{name} for rule {rule} ({})",
                    if *created {
                        "created"
                    } else {
                        "already requested"
                    }
                ),
            ),
            ApprovalEvent::BreakGlassUsed {
                name,
                namespace,
                requester,
                rule,
                topic,
                reason,
            } => (
                RecordKind::BreakGlassUsed,
                AuditDecision::Allow,
                format!(
                    "break-glass by {requester} under rule {rule} on topic {topic}: {reason:?}; review AccessApproval {namespace}/{name}"
                ),
            ),
            ApprovalEvent::Used {
                name, rule, topic, ..
            } => (
                RecordKind::ApprovalUsed,
                AuditDecision::Allow,
                format!("AccessApproval {name} (rule {rule}) allowed {topic}"),
            ),
        };
        let mut record = AuditRecord::event(kind, reason);
        record.decision = Some(decision);
        if let ApprovalEvent::BreakGlassUsed { reason, .. } = self {
            record.break_glass = Some(reason.clone());
        }
        match subject {
            Some(s) => record.subject(s),
            None => record,
        }
    }
}

/// The audit subject for a policy principal, named as the data path's
/// request records name it (a ServiceAccount by its Kubernetes username
/// `system:serviceaccount:<ns>:<name>`), so one search of the spool finds a
/// principal's requests and its approvals alike.
pub fn audit_subject(principal: &Principal) -> AuditSubject {
    match principal.kind {
        SubjectKind::ServiceAccount => AuditSubject::service_account(match &principal.namespace {
            Some(ns) => format!("system:serviceaccount:{ns}:{}", principal.name),
            None => principal.name.clone(),
        }),
        _ => AuditSubject::user(principal.name.clone(), principal.groups.clone(), None),
    }
}

/// The one place approval events reach the audit layer: a log line on the
/// `streamgate::audit` target always, and a record in the audit spool when
/// the trail is running (`audit` is `None` in unit tests and before startup).
pub fn record_approval_event(
    audit: Option<&Audit>,
    principal: Option<&Principal>,
    event: &ApprovalEvent,
) {
    match event {
        ApprovalEvent::Requested {
            name,
            namespace,
            requester,
            rule,
            created,
        } => tracing::info!(target: "streamgate::audit", kind = "ApprovalRequested",
            access_approval = %name, %namespace, %requester, %rule, created = *created,
            "access approval requested"),
        ApprovalEvent::BreakGlassUsed {
            name,
            namespace,
            requester,
            rule,
            topic,
            reason,
        } => tracing::warn!(target: "streamgate::audit", kind = "BreakGlassUsed",
            access_approval = %name, %namespace, %requester, %rule, %topic, %reason,
            "break-glass used"),
        ApprovalEvent::Used {
            name,
            requester,
            rule,
            topic,
        } => tracing::info!(target: "streamgate::audit", kind = "ApprovalUsed",
            access_approval = %name, %requester, %rule, %topic, "access approval used"),
    }
    if let Some(audit) = audit {
        let _ = audit.try_record(event.audit_record(principal.map(audit_subject)));
    }
}

/// Which issuer and claim an OIDC principal's name came from: the token's
/// issuer (the principal carries it), and the username claim of the first
/// governing policy trusting that issuer — the configuration the token was
/// validated with (the sidecar's issuer set is built in the same order).
pub fn requester_oidc(policy: &CompiledPolicy, principal: &Principal) -> Option<RequesterOidc> {
    if principal.kind != SubjectKind::User {
        return None;
    }
    let issuer = principal.issuer.as_deref()?;
    if let Some(oidc) = policy.oidc().into_iter().find(|o| o.issuer == issuer) {
        return Some(RequesterOidc {
            issuer: oidc.issuer.clone(),
            username_claim: oidc
                .username_claim
                .clone()
                .unwrap_or_else(|| "sub".to_string()),
        });
    }
    // A SAML user: the IdP entity id and the attribute (or NameID) that named
    // them, so a grant is bound to that IdP's user as an OIDC one is to its
    // issuer's (the approval webhook then maps the name the same way).
    let saml = policy.saml().into_iter().find(|s| s.issuer == issuer)?;
    Some(RequesterOidc {
        issuer: saml.issuer.clone(),
        username_claim: saml
            .subject_attribute
            .clone()
            .unwrap_or_else(|| "NameID".to_string()),
    })
}

/// Asks for AccessApprovals on behalf of the sidecar's callers.
#[derive(Debug)]
pub struct ApprovalRequester {
    sink: ApprovalSink,
    namespace: String,
    pod: Option<String>,
    service_account: Option<String>,
    dedup: Mutex<Dedup>,
    /// The audit trail, attached once it has started.
    audit: OnceLock<Arc<Audit>>,
}

impl ApprovalRequester {
    /// `namespace` is the pod's: AccessApprovals are created there.
    pub fn new(
        sink: ApprovalSink,
        namespace: String,
        workload: Option<&Workload>,
        config: DedupConfig,
    ) -> Arc<Self> {
        Arc::new(ApprovalRequester {
            sink,
            namespace,
            pod: workload.and_then(|w| w.pod_name.clone()),
            service_account: workload.map(|w| w.service_account.clone()),
            dedup: Mutex::new(Dedup::new(config)),
            audit: OnceLock::new(),
        })
    }

    /// Send approval events to the audit trail from now on.
    pub fn attach_audit(&self, audit: Arc<Audit>) {
        let _ = self.audit.set(audit);
    }

    fn audit(&self) -> Option<&Audit> {
        self.audit.get().map(Arc::as_ref)
    }

    /// One request per (policy, rule) among the `NeedsApproval` decisions,
    /// covering all of that rule's topics and operations in the request.
    pub fn requests_for(
        &self,
        policy: &CompiledPolicy,
        principal: &Principal,
        decisions: &[TopicDecision],
    ) -> Vec<ApprovalRequest> {
        let mut by_rule: BTreeMap<(String, String), (Vec<String>, Vec<Operation>)> =
            BTreeMap::new();
        for d in decisions {
            if let PolicyDecision::NeedsApproval { policy, rule } = &d.decision {
                // A client names the topics of its request: only Kafka topic
                // names are asked for, never a `*` an approver might grant.
                if let Err(reason) = check_topic_name(&d.topic) {
                    tracing::debug!(%reason, %rule, "no approval asked for this topic");
                    continue;
                }
                let entry = by_rule.entry((policy.clone(), rule.clone())).or_default();
                entry.0.push(d.topic.clone());
                entry.1.push(d.operation);
            }
        }
        by_rule
            .into_iter()
            .filter_map(|((policy_name, rule), (topics, operations))| {
                let duration = policy
                    .approval_requirement(&policy_name, &rule)?
                    .max_duration
                    .clone();
                Some(
                    ApprovalRequest {
                        principal: principal.clone(),
                        pod: self.pod.clone(),
                        service_account: self.service_account.clone(),
                        namespace: self.namespace.clone(),
                        policy: policy_name,
                        rule,
                        topics,
                        operations,
                        duration,
                        break_glass: None,
                    }
                    .normalized(),
                )
            })
            .collect()
    }

    /// One record per (policy, rule, topic) among the decisions break-glass
    /// made for `invoked`: an AccessApproval with `breakGlass: true` awaiting
    /// its review, covering the rule's break-glass operations.
    pub fn break_glass_records(
        &self,
        policy: &CompiledPolicy,
        principal: &Principal,
        invoked: &BreakGlass,
        decisions: &[TopicDecision],
    ) -> Vec<ApprovalRequest> {
        let mut out: Vec<ApprovalRequest> = Vec::new();
        for d in decisions {
            let PolicyDecision::BreakGlass {
                policy: policy_name,
                rule,
                grant: None,
            } = &d.decision
            else {
                continue;
            };
            if check_topic_name(&d.topic).is_err() {
                continue;
            }
            let Some(bg) = policy
                .rule(policy_name, rule)
                .and_then(|r| r.break_glass.as_ref())
            else {
                continue;
            };
            let request = ApprovalRequest {
                principal: principal.clone(),
                pod: self.pod.clone(),
                service_account: self.service_account.clone(),
                namespace: self.namespace.clone(),
                policy: policy_name.clone(),
                rule: rule.clone(),
                topics: vec![d.topic.clone()],
                operations: bg.operations.clone(),
                duration: bg.max_duration.clone(),
                break_glass: Some(BreakGlassUse {
                    reason: invoked.reason.clone(),
                    since: invoked.since,
                }),
            }
            .normalized();
            if !out.contains(&request) {
                out.push(request);
            }
        }
        out
    }

    /// Called by the gate after each decided request; returns at once.
    pub fn on_decisions(
        self: &Arc<Self>,
        policy: &CompiledPolicy,
        principal: Option<&Principal>,
        break_glass: Option<&BreakGlass>,
        decisions: &[TopicDecision],
    ) {
        let Some(principal) = principal else { return };
        if let Some(invoked) = break_glass {
            let oidc = requester_oidc(policy, principal);
            for request in self.break_glass_records(policy, principal, invoked, decisions) {
                if !self.admit(&request) {
                    continue;
                }
                let this = Arc::clone(self);
                let oidc = oidc.clone();
                tokio::spawn(async move {
                    this.submit_as(request, oidc).await;
                });
            }
        }
        for d in decisions {
            if let PolicyDecision::Allow {
                grant: Some(name),
                rule,
                ..
            } = &d.decision
            {
                record_approval_event(
                    self.audit(),
                    Some(principal),
                    &ApprovalEvent::Used {
                        name: name.clone(),
                        requester: principal.name.clone(),
                        rule: rule.clone(),
                        topic: d.topic.clone(),
                    },
                );
            }
        }
        let oidc = requester_oidc(policy, principal);
        for request in self.requests_for(policy, principal, decisions) {
            if !self.admit(&request) {
                continue;
            }
            let this = Arc::clone(self);
            let oidc = oidc.clone();
            tokio::spawn(async move {
                this.submit_as(request, oidc).await;
            });
        }
    }

    fn admit(&self, request: &ApprovalRequest) -> bool {
        let mut dedup = self
            .dedup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dedup.admit(&request.object_name(), Instant::now())
    }

    /// Build and create the AccessApproval; returns its name and what happened.
    pub async fn submit(&self, request: ApprovalRequest) -> Option<(String, Created)> {
        self.submit_as(request, None).await
    }

    /// [`ApprovalRequester::submit`], recording where an OIDC requester's name came from.
    pub async fn submit_as(
        &self,
        request: ApprovalRequest,
        oidc: Option<RequesterOidc>,
    ) -> Option<(String, Created)> {
        let key = request.object_name();
        let principal = request.principal.clone();
        let requester = principal.name.clone();
        let rule = request.rule.clone();
        let used = request
            .break_glass
            .as_ref()
            .map(|bg| (bg.reason.clone(), request.topics.join(",")));
        let aa = match build_access_approval_with(request, oidc) {
            Ok(aa) => aa,
            Err(error) => {
                tracing::warn!(%error, %rule, "cannot ask for an access approval");
                return None;
            }
        };
        match self.sink.create_named(&aa).await {
            // `name`: the request's own name, or a successor of it when that
            // name is held by a spent grant (see `sink`).
            Ok((name, created)) => {
                let event = match used {
                    // Each use is recorded (and signalled) once: when its
                    // AccessApproval is first filed.
                    Some(_) if created != Created::New => return Some((name, created)),
                    Some((reason, topic)) => ApprovalEvent::BreakGlassUsed {
                        name: name.clone(),
                        namespace: self.namespace.clone(),
                        requester,
                        rule,
                        topic,
                        reason,
                    },
                    None => ApprovalEvent::Requested {
                        name: name.clone(),
                        namespace: self.namespace.clone(),
                        requester,
                        rule,
                        created: created == Created::New,
                    },
                };
                record_approval_event(self.audit(), Some(&principal), &event);
                Some((name, created))
            }
            Err(error) => {
                tracing::warn!(%error, access_approval = %key, "cannot create the access approval; will retry on the next refused request");
                self.dedup
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .forget(&key);
                None
            }
        }
    }
}
