//! MaskingRule: validate and report Ready.
use std::sync::Arc;

use kube::runtime::controller::Action;
use streamgate_crds::{MaskingRule, MaskingRuleStatus};

use super::{Context, Error, RESYNC, conditions, name_ns};

pub const CONTROLLER: &str = "maskingrule";

pub fn desired_status(mr: &MaskingRule, ctx: &Context) -> MaskingRuleStatus {
    let previous = mr.status.clone().unwrap_or_default();
    let problems = crate::validation::masking_rule(&mr.spec);
    let generation = mr.metadata.generation;
    let condition = if problems.is_empty() {
        let message = format!(
            "valid: {} field(s), {} detector(s) on {}",
            mr.spec.fields.len(),
            mr.spec.detectors.len(),
            mr.spec.topics.join(", ")
        );
        conditions::ready(
            true,
            "Valid",
            message,
            generation,
            &previous.conditions,
            ctx.now(),
        )
    } else {
        // Sidecars refuse masked topics under an invalid rule (fail closed), so say so.
        let message = format!(
            "fix the spec (sidecars refuse these topics until then): {}",
            problems.join("; ")
        );
        conditions::ready(
            false,
            "Invalid",
            message,
            generation,
            &previous.conditions,
            ctx.now(),
        )
    };
    MaskingRuleStatus {
        observed_generation: generation,
        conditions: vec![condition],
    }
}

pub async fn reconcile(mr: Arc<MaskingRule>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(CONTROLLER);
    let (name, ns) = name_ns(mr.as_ref())?;
    let status = desired_status(&mr, &ctx);
    let previous = mr.status.clone().unwrap_or_default();
    if status != previous {
        super::apply_status::<MaskingRule>(&ctx.client, &ns, &name, &status).await?;
        ctx.event_on_ready_transition(mr.as_ref(), &previous.conditions, &status.conditions)
            .await;
    }
    ctx.succeeded(&super::object_key(mr.as_ref()));
    Ok(Action::requeue(RESYNC))
}
