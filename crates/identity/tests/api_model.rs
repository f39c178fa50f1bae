//! The identity service's operation table (`latchkey_identity::app::OPERATIONS`, from which
//! the router is built) against the AgentCore Identity model subset committed in
//! `spec/models/` (the official service models, identity operations only): the same
//! operations, each with the model's HTTP method and request URI, both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use latchkey_identity::app::OPERATIONS;
use serde_json::Value;

fn model_operations() -> BTreeSet<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/models");
    let mut found = BTreeSet::new();
    for file in [
        "identity-controlplane.subset.json",
        "identity-dataplane.subset.json",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("model file");
        let model: Value = serde_json::from_str(&text).expect("model JSON");
        let operations = model["operations"].as_object().expect("operations");
        assert!(!operations.is_empty(), "{file} declares no operation");
        for (name, op) in operations {
            found.insert((
                name.clone(),
                op["http"]["method"].as_str().expect("method").to_string(),
                op["http"]["requestUri"]
                    .as_str()
                    .expect("requestUri")
                    .to_string(),
            ));
        }
    }
    found
}

#[test]
fn the_operation_table_is_the_model() {
    let model = model_operations();
    let ours: BTreeSet<(String, String, String)> = OPERATIONS
        .iter()
        .map(|(n, m, u)| (n.to_string(), m.to_string(), u.to_string()))
        .collect();
    assert_eq!(
        ours.len(),
        OPERATIONS.len(),
        "an operation is declared twice"
    );
    let missing: Vec<_> = model.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&model).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes differ from spec/models:\n  in the model, not routed (or routed differently): {missing:?}\n  routed, not in the model: {extra:?}"
    );
}
