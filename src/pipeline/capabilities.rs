//! Reading and deriving Okta provisioning capability objects without losing any field.

use serde_json::Value;

/// The same object with every `status` set to `DISABLED` and everything else kept.
pub fn all_disabled(capabilities: &Value) -> Value {
    match capabilities {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "status" && v.is_string() {
                        Value::String("DISABLED".into())
                    } else {
                        all_disabled(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether unassigning now would deactivate the user in Office 365. Unknown shapes count as
/// enabled: refusing an unassign is recoverable, a deprovision is not.
pub fn deactivate_enabled(capabilities: &Value) -> bool {
    capabilities
        .pointer("/update/lifecycleDeactivate/status")
        .and_then(Value::as_str)
        .map(|s| s != "DISABLED")
        .unwrap_or(true)
}

/// Whether every `status` in the object is `DISABLED`.
pub fn is_all_disabled(capabilities: &Value) -> bool {
    all_disabled(capabilities) == *capabilities
}

/// `create, update, deactivate, password` with ON/OFF, for chat.
pub fn describe(capabilities: &Value) -> String {
    let get = |p: &str| match capabilities.pointer(p).and_then(Value::as_str) {
        Some("ENABLED") => "on",
        Some("DISABLED") => "off",
        Some(_) => "?",
        None => "n/a",
    };
    format!(
        "create {}, update {}, deactivate {}, password {}",
        get("/create/lifecycleCreate/status"),
        get("/update/profile/status"),
        get("/update/lifecycleDeactivate/status"),
        get("/update/password/status"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn disables_every_status_and_keeps_the_rest() {
        let caps = json!({"create":{"lifecycleCreate":{"status":"ENABLED"}},
            "update":{"lifecycleDeactivate":{"status":"ENABLED"},"profile":{"status":"DISABLED"},
            "password":{"status":"ENABLED","seed":"RANDOM","change":"KEEP_EXISTING"}}});
        let off = all_disabled(&caps);
        assert!(is_all_disabled(&off));
        assert!(!is_all_disabled(&caps));
        assert_eq!(off.pointer("/update/password/seed"), Some(&json!("RANDOM")));
        assert!(deactivate_enabled(&caps));
        assert!(!deactivate_enabled(&off));
        assert!(deactivate_enabled(&json!({})));
        assert_eq!(
            describe(&caps),
            "create on, update off, deactivate on, password on"
        );
    }
}
