//! Topic ownership across namespaces on the live API server: with the
//! operator's topic grants on, namespace A cannot grant itself namespace B's
//! topics — its policy is Ready=False (TopicsNotGranted) and the status names
//! the rules sidecars will not enforce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use streamgate_e2e::kube::install_product_with;

fn policy(ns: &str, name: &str, topics: &str) -> String {
    format!(
        "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  identity: {{workloadIdentity: true}}\n  rules:\n\
         \x20 - {{name: read, subjects: [{{kind: ServiceAccount, name: app}}], topics: {topics}, operations: [Read]}}\n\
         \x20 - {{name: deny-all, subjects: [{{kind: ServiceAccount, name: app}}], topics: [\"**\"], operations: [Write], effect: Deny}}\n"
    )
}

#[test]
fn a_namespace_cannot_grant_itself_another_namespaces_topics() {
    let installed = install_product_with(
        1,
        "127.0.0.1:9",
        &[(
            "STREAMGATE_TOPIC_GRANTS_YAML",
            r#"{"team-a": ["a-*"], "team-b": ["b-*"]}"#,
        )],
    );
    let cp = &installed.cp;
    cp.namespace("team-a", &[]);
    cp.namespace("team-b", &[]);
    cp.apply_ok("admin", &policy("team-a", "own", "[a-events]"));
    cp.apply_ok(
        "admin",
        &policy("team-a", "grab", "[a-events, b-records, \"**\"]"),
    );

    let ready = |name: &str| {
        cp.eventually(
            &format!("team-a/{name} reconciled"),
            Duration::from_secs(60),
            || {
                let sp = cp.get_json("streampolicy", "team-a", name)?;
                let st = &sp["status"];
                (st["observedGeneration"] == sp["metadata"]["generation"]).then(|| st.clone())
            },
        )
    };
    let grab = ready("grab");
    let cond = &grab["conditions"][0];
    assert_eq!(
        cond["status"],
        "False",
        "{grab}\n{}",
        installed.operator_logs()
    );
    assert_eq!(cond["reason"], "TopicsNotGranted");
    let msg = cond["message"].as_str().unwrap();
    assert!(
        msg.contains("rule \"read\" names b-records, **"),
        "names the rule and team-b's topic: {msg}"
    );
    assert_eq!(grab["topicGrants"], "Enforced");
    assert_eq!(grab["ungrantedRules"], serde_json::json!(["read"]));

    let own = ready("own");
    assert_eq!(own["conditions"][0]["status"], "True", "{own}");
    assert!(own.get("ungrantedRules").is_none(), "{own}");
}
