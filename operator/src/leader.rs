//! Leader election over a `coordination.k8s.io/v1` Lease.
//!
//! Webhooks run on every replica; the singletons (controllers, caBundle
//! patching, RBAC sync) run only on the holder of the Lease. Updates use the
//! Lease's resourceVersion (optimistic concurrency), so two replicas can never
//! both win the same round. A replica that loses the Lease exits and restarts
//! (the usual controller-runtime behaviour) instead of trying to unwind its
//! running controllers.
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// What the holder looks like, reduced to what the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub identity: Option<String>,
    pub renewed: Option<DateTime<Utc>>,
    pub duration: Duration,
}

/// May `me` take or keep the Lease at `now`?
pub fn may_acquire(holder: &Holder, me: &str, now: DateTime<Utc>) -> bool {
    match (&holder.identity, holder.renewed) {
        (None, _) | (_, None) => true,
        (Some(id), _) if id == me => true,
        (Some(_), Some(renewed)) => {
            chrono::Duration::from_std(holder.duration).is_ok_and(|d| renewed + d < now)
        }
    }
}

fn holder_of(lease: &Lease) -> Holder {
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec
        .renew_time
        .as_ref()
        .and_then(|t| DateTime::parse_from_rfc3339(&t.0.to_string()).ok())
        .map(|t| t.with_timezone(&Utc));
    Holder {
        identity: spec.holder_identity,
        renewed,
        duration: Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
        ),
    }
}

fn micro_now() -> Option<MicroTime> {
    let now = Utc::now().to_rfc3339();
    now.parse().ok().map(MicroTime)
}

/// One election round: take, keep or respect the Lease. `Ok(true)` = leading now.
pub async fn try_round(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: micro_now(),
                    renew_time: micro_now(),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let holder = holder_of(&lease);
            if !may_acquire(&holder, &cfg.identity, Utc::now()) {
                return Ok(false);
            }
            let mut spec = lease.spec.clone().unwrap_or_default();
            if holder.identity.as_deref() != Some(cfg.identity.as_str()) {
                spec.acquire_time = micro_now();
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(cfg.identity.clone());
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = micro_now();
            lease.spec = Some(spec);
            // replace() sends the resourceVersion we read: a concurrent winner makes this a 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Campaign forever; the receiver says whether this replica leads right now.
pub fn campaign(client: Client, cfg: LeaseConfig) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        loop {
            let leading = match try_round(&api, &cfg).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    false
                }
            };
            if *tx.borrow() != leading {
                tracing::info!(identity = cfg.identity, leading, "leadership changed");
            }
            if tx.send(leading).is_err() {
                return;
            }
            tokio::time::sleep(cfg.renew_every).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_fresh_lease_held_by_another_is_respected_and_a_stale_one_taken() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 5, 0, 0).unwrap();
        let holder = Holder {
            identity: Some("a".into()),
            renewed: Some(t),
            duration: Duration::from_secs(15),
        };
        assert!(!may_acquire(
            &holder,
            "b",
            t + chrono::Duration::seconds(10)
        ));
        assert!(may_acquire(&holder, "b", t + chrono::Duration::seconds(16)));
        assert!(may_acquire(&holder, "a", t + chrono::Duration::seconds(10)));
        let empty = Holder {
            identity: None,
            renewed: None,
            duration: Duration::from_secs(15),
        };
        assert!(may_acquire(&empty, "b", t));
    }
}
