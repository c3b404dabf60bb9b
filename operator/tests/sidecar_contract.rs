//! The injector and the sidecar agree: every env var the injector sets on the
//! sidecar is a flag the proxy's own `run` parser accepts, with a value it
//! parses — in both sidecar shapes, with every optional feature on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args as _, Command};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use streamgate_crds::contract;
use streamgate_operator::config::{InjectorSettings, SidecarMode};
use streamgate_operator::webhook::inject::{InjectionInput, Outcome, plan};

fn injected_pod(mode: SidecarMode) -> Pod {
    injected_pod_with(InjectorSettings {
        sidecar_mode: mode,
        ..Default::default()
    })
}

fn injected_pod_with(settings: InjectorSettings) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "billing-app", "annotations": {
            "streamgate.dev/inject": "true",
            "streamgate.dev/upstream": "kafka.kafka.svc:9093",
            "streamgate.dev/upstream-secret": "kafka-gateway",
            "streamgate.dev/upstream-sasl-mechanism": "SCRAM-SHA-256",
            "streamgate.dev/upstream-tls": "true"}},
        "spec": {"serviceAccountName": "billing", "containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    let labels = BTreeMap::new();
    let secrets = BTreeSet::from(["masking-key".to_string()]);
    let outcome = plan(
        &InjectionInput {
            pod: &pod,
            namespace: "clinical",
            namespace_labels: &labels,
            masking_secrets: &secrets,
        },
        &settings,
    )
    .unwrap();
    let Outcome::Inject { patch, .. } = outcome else {
        panic!("not injected: {outcome:?}")
    };
    let mut doc = serde_json::to_value(&pod).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    serde_json::from_value(doc).unwrap()
}

fn sidecar(pod: &Pod, mode: SidecarMode) -> Container {
    let spec = pod.spec.as_ref().unwrap();
    let list = match mode {
        SidecarMode::Native => spec.init_containers.clone().unwrap(),
        SidecarMode::Regular => spec.containers.clone(),
    };
    assert_eq!(list[0].name, "streamgate-proxy", "the sidecar comes first");
    list[0].clone()
}

/// What the kubelet would put in the environment: literal values, and
/// downward-API fields filled in from the pod.
fn environment(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    let path = &from
                        .field_ref
                        .as_ref()
                        .expect("only fieldRef is used")
                        .field_path;
                    match path.as_str() {
                        "metadata.name" => "billing-app".into(),
                        "metadata.namespace" => "clinical".into(),
                        "metadata.uid" => "0d5e2f1c-uid".into(),
                        "spec.serviceAccountName" => "billing".into(),
                        other => panic!("unexpected downward-API field {other}"),
                    }
                }
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

/// Turns env vars into the flags whose `env` they name, and parses them with
/// the proxy's own `RunArgs`; an env var no flag reads is an error.
fn parse_as_proxy_flags(env: &[(String, String)]) -> Result<(), String> {
    let cmd = streamgate_proxy::RunArgs::augment_args(Command::new("run"));
    let mut argv = vec!["run".to_string()];
    for (name, value) in env {
        if contract::READ_FROM_ENV.contains(&name.as_str()) {
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .ok_or_else(|| format!("the proxy has no flag reading {name}"))?;
        let long = arg
            .get_long()
            .ok_or_else(|| format!("{name}: flag without --long"))?;
        if arg.get_action().takes_values() {
            argv.push(format!("--{long}={value}"));
        } else if !["", "0", "false", "f", "no", "n", "off"]
            .contains(&value.to_lowercase().as_str())
        {
            // A switch read from the env: clap takes any non-falsey value as set.
            argv.push(format!("--{long}"));
        }
    }
    cmd.try_get_matches_from(&argv)
        .map(|_| ())
        .map_err(|e| format!("{argv:?}: {e}"))
}

#[test]
fn every_env_var_the_injector_sets_is_a_proxy_flag_that_parses() {
    for mode in [SidecarMode::Native, SidecarMode::Regular] {
        let pod = injected_pod(mode);
        let env = environment(&sidecar(&pod, mode));
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        // A policy source, approvals and Events: without them an injected sidecar denies everything.
        for needed in [
            contract::ENV_POLICY_KUBE,
            contract::ENV_AUDIT_EVENTS,
            contract::ENV_UPSTREAM_TLS,
        ] {
            assert!(
                names.contains(&needed),
                "{mode:?}: {needed} missing from {names:?}"
            );
        }
        assert!(
            !names.contains(&contract::ENV_UPSTREAM_CA_FILE),
            "TLS uses the system roots"
        );
        parse_as_proxy_flags(&env).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
}

#[test]
fn a_name_the_proxy_does_not_read_is_caught() {
    let env = vec![(
        "STREAMGATE_POLICY_KUBERNETES".to_string(),
        "true".to_string(),
    )];
    let err = parse_as_proxy_flags(&env).unwrap_err();
    assert!(
        err.contains("no flag reading STREAMGATE_POLICY_KUBERNETES"),
        "{err}"
    );
}

#[test]
fn every_contract_env_name_is_read_by_the_proxy() {
    let cmd = streamgate_proxy::RunArgs::augment_args(Command::new("run"));
    for name in contract::ALL_ENV {
        assert!(
            contract::READ_FROM_ENV.contains(name)
                || cmd
                    .get_arguments()
                    .any(|a| a.get_env().is_some_and(|e| e == *name)),
            "{name} is in the contract but no proxy flag reads it"
        );
    }
}

#[test]
fn the_regular_sidecar_holds_the_app_until_ready_and_has_no_init_container_fields() {
    let pod = injected_pod(SidecarMode::Regular);
    let c = sidecar(&pod, SidecarMode::Regular);
    assert_eq!(c.restart_policy, None);
    let hook = serde_json::to_value(&c.lifecycle).unwrap();
    assert_eq!(
        hook["postStart"]["exec"]["command"],
        json!([
            "/usr/local/bin/streamgate-proxy",
            "wait-ready",
            "--admin",
            "127.0.0.1:15901"
        ])
    );
    let spec = pod.spec.as_ref().unwrap();
    assert!(spec.init_containers.is_none());
    assert_eq!(spec.containers[1].name, "app");
    let app_env: Value = serde_json::to_value(&spec.containers[1].env).unwrap();
    assert_eq!(
        app_env,
        json!([{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "127.0.0.1:9092"}])
    );
}

#[test]
fn the_injected_env_gives_the_proxy_its_workload_identity() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "app=\"billing\"\ntier=\"backend\"\n").unwrap();
    let pod = injected_pod(SidecarMode::Regular);
    let env = environment(&sidecar(&pod, SidecarMode::Regular));
    let var = |name: &str| {
        let value = env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())?;
        // The kubelet mounts the downward-API volume there; here, a temp file.
        Some(if name == contract::ENV_POD_LABELS_FILE {
            assert_eq!(
                value,
                format!(
                    "{}/{}",
                    contract::PODINFO_DIR,
                    contract::PODINFO_LABELS_FILE
                )
            );
            labels.display().to_string()
        } else {
            value
        })
    };
    let workload = streamgate_proxy::identity::workload::Workload::from_vars(var).unwrap();
    assert_eq!(workload.service_account, "billing");
    assert_eq!(workload.namespace, "clinical");
    assert_eq!(workload.pod_name.as_deref(), Some("billing-app"));
    assert_eq!(
        workload.labels.get("app").map(String::as_str),
        Some("billing")
    );
}

/// With topic grants on, the injected sidecar is told so (and the proxy
/// reads the variable), so even a namespace's first policy waits for the
/// operator's check; without, nothing is set.
#[test]
fn the_sidecar_is_told_when_topic_grants_are_enforced() {
    let told = |enforced: bool| {
        let pod = injected_pod_with(InjectorSettings {
            sidecar_mode: SidecarMode::Native,
            topic_grants_enforced: enforced,
            ..Default::default()
        });
        let c = sidecar(&pod, SidecarMode::Native);
        c.env.unwrap_or_default().iter().any(|e| {
            e.name == contract::ENV_TOPIC_GRANTS_ENFORCED && e.value.as_deref() == Some("true")
        })
    };
    assert!(told(true));
    assert!(!told(false));
}

/// With a collector configured, the sidecar ships its audit records there
/// (the standard OpenTelemetry variables, which the proxy's exporter reads);
/// without, nothing is set and the spool is the only copy.
#[test]
fn the_sidecar_ships_its_trail_to_the_configured_collector() {
    let env_of = |otlp: Option<streamgate_operator::config::AuditOtlp>| {
        let pod = injected_pod_with(InjectorSettings {
            sidecar_mode: SidecarMode::Native,
            audit_otlp: otlp,
            ..Default::default()
        });
        environment(&sidecar(&pod, SidecarMode::Native))
    };
    let env = env_of(Some(streamgate_operator::config::AuditOtlp {
        endpoint: "https://otel.observability:4317".into(),
        protocol: "grpc".into(),
        headers: Some("x-tenant=clinical".into()),
    }));
    let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(
        get(contract::ENV_OTEL_ENDPOINT),
        Some("https://otel.observability:4317")
    );
    assert_eq!(get(contract::ENV_OTEL_PROTOCOL), Some("grpc"));
    assert_eq!(get(contract::ENV_OTEL_HEADERS), Some("x-tenant=clinical"));
    assert_eq!(get(contract::ENV_AUDIT_OTLP), Some("true"));
    parse_as_proxy_flags(&env).unwrap();
    let none = env_of(None);
    assert!(
        none.iter()
            .all(|(n, _)| !n.starts_with("OTEL_") && n != contract::ENV_AUDIT_OTLP)
    );
}
