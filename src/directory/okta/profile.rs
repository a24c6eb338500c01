//! The Office 365 app user profile as Okta defines it — the app user schema and the mappings into
//! the app — and what of an app user's profile a new assignment can carry over.
//!
//! # The carry-over rules
//!
//! Reassigning a user to the Office 365 app creates a new app user from the assignment's body;
//! when provisioning resumes, Okta pushes that app user's `licenses` and `roles` to Office 365, so
//! an assignment without them strips them there (Okta support, "Office 365 Roles and Licenses Are
//! Removed by Okta": mirror the Office 365 side in the assignment). What the body may hold is set
//! by two things Okta publishes:
//!
//! - the app user schema (`GET /api/v1/meta/schemas/apps/{appId}/default`, operation
//!   `getApplicationUserSchema`, a `UserSchema`): every attribute sits in
//!   `definitions.base.properties` or `definitions.custom.properties`, each a
//!   `UserSchemaAttribute` whose `mutability` is `READ_ONLY`, `READ_WRITE`, `IMMUTABLE` or
//!   `WRITE_ONLY`;
//! - the mappings into the app (`GET /api/v1/mappings?targetId={appId}`): `assignUserToApplication`
//!   says "you can only specify profile properties that aren't defined in profile mappings … Omit
//!   mapped properties during assignment" — Okta computes them itself.
//!
//! From those, for each attribute the app user holds with a non-null value:
//!
//! 1. **Not in the schema** (neither base nor custom): refused. Okta validates an assignment's
//!    profile against the schema, so the value could not be sent, and silently dropping it is
//!    exactly the loss this check exists to prevent.
//! 2. **Mapped**: omitted from the assignment; Okta recomputes it from the mapping.
//! 3. **`mutability: READ_ONLY`**: omitted; Okta fills it from the app, not from a request.
//! 4. `IMMUTABLE` is sent: the assignment creates the app user, and creation is when an immutable
//!    value is set. `WRITE_ONLY` attributes are never returned by a read, so nothing is held to
//!    carry. The schema's `permissions` (`principal: SELF`, action `READ_ONLY`/`HIDE`) only govern
//!    what the end user sees in their own profile (Okta support, "Okta Administrators Can Modify
//!    Read-Only Custom Attributes"): they do not restrict the API.
//!
//! The licenses and roles attributes ([`ENTITLEMENT_ATTRIBUTES`]) are what must survive:
//!
//! 5. An entitlement the user holds (non-empty) that is **mapped** or **read-only** is refused:
//!    the reassignment could not carry the user's own value, and Okta would push whatever it
//!    computes instead.
//! 6. A schema without them (the "User Attributes Only" provisioning type, where licenses and
//!    roles are managed in Microsoft 365, not by Okta) has nothing to carry: not a refusal.
//!
//! And the repair's own value:
//!
//! 7. `immutableId` must be in the schema and not read-only, or the assignment cannot set it.

use super::model::ProfileMapping;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The Office 365 app's attributes for licenses and roles. Okta's app documentation names them
/// only in the Admin Console; these are the names its app user profile uses, and the plan shows
/// what it found under them, so a tenant that differs is visible before approval.
pub const ENTITLEMENT_ATTRIBUTES: &[&str] = &["licenses", "roles"];

/// The attribute the repair writes.
pub const IMMUTABLE_ID: &str = "immutableId";

/// One attribute of the app user schema (`UserSchemaAttribute`), as far as carrying over needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SchemaAttribute {
    /// `READ_ONLY`, `READ_WRITE`, `IMMUTABLE`, `WRITE_ONLY`; absent means writable.
    #[serde(default)]
    pub mutability: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

impl SchemaAttribute {
    pub fn read_only(&self) -> bool {
        self.mutability
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("READ_ONLY"))
    }
}

/// The app user schema: `definitions.base.properties` and `definitions.custom.properties`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppUserSchema {
    pub base: BTreeMap<String, SchemaAttribute>,
    pub custom: BTreeMap<String, SchemaAttribute>,
}

impl AppUserSchema {
    /// From a `UserSchema` body. A schema without `definitions` is not one Okta serves.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let defs = v
            .get("definitions")
            .and_then(Value::as_object)
            .ok_or("the app user schema has no `definitions`")?;
        let section = |name: &str| -> Result<BTreeMap<String, SchemaAttribute>, String> {
            match defs.get(name).and_then(|d| d.get("properties")) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(Value::Object(props)) => props
                    .iter()
                    .map(|(k, a)| {
                        serde_json::from_value::<SchemaAttribute>(a.clone())
                            .map(|a| (k.clone(), a))
                            .map_err(|e| format!("schema attribute `{k}`: {e}"))
                    })
                    .collect(),
                Some(_) => Err(format!("`definitions.{name}.properties` is not an object")),
            }
        };
        Ok(Self {
            base: section("base")?,
            custom: section("custom")?,
        })
    }

    pub fn attribute(&self, name: &str) -> Option<&SchemaAttribute> {
        self.base.get(name).or_else(|| self.custom.get(name))
    }
}

/// The schema and the mappings into the app, read together once per plan.
#[derive(Debug, Clone, PartialEq)]
pub struct AppProfileRules {
    pub schema: AppUserSchema,
    pub mappings: Vec<ProfileMapping>,
}

impl AppProfileRules {
    /// App profile property → the expression that fills it.
    pub fn mapped(&self) -> BTreeMap<String, String> {
        self.mappings
            .iter()
            .flat_map(|m| {
                m.properties.iter().map(|(k, p)| {
                    let expr = p
                        .get("expression")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    (k.clone(), expr.to_owned())
                })
            })
            .collect()
    }
}

/// What a reassignment carries over of an app user's profile, and what it leaves to Okta.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CarryOver {
    /// The licenses and roles attributes the schema defines, each with the value the app user
    /// holds (`null` when none), sent as held.
    pub entitlements: BTreeMap<String, Value>,
    /// Attributes held that the assignment omits because a mapping fills them.
    pub mapped: Vec<String>,
    /// Attributes held that the assignment omits because the schema makes them read-only.
    pub read_only: Vec<String>,
}

impl CarryOver {
    /// Whether the assignment must leave `name` out.
    pub fn omits(&self, name: &str) -> bool {
        self.mapped.iter().chain(&self.read_only).any(|m| m == name)
    }
}

/// Why a profile cannot be carried over; each is one of the rules above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarryOverProblem {
    #[error("the app user holds {} that the app user schema does not define", names(.0))]
    NotInSchema(Vec<String>),
    #[error("`{attribute}` is filled by the mapping `{expression}`, so Okta would push the mapping's value instead of the user's {value}")]
    EntitlementMapped {
        attribute: String,
        expression: String,
        value: String,
    },
    #[error("`{attribute}` is read-only in the app user schema, so the user's {value} cannot be sent with the assignment")]
    EntitlementReadOnly { attribute: String, value: String },
    #[error(
        "`immutableId` is {0} in the app user schema, so the assignment cannot set the new value"
    )]
    ImmutableIdNotWritable(&'static str),
}

fn names(v: &[String]) -> String {
    v.iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Applies the rules of this module to the profile an app user holds. `sets_immutable_id`: the
/// assignment must carry a new `immutableId` (rule 7). Every problem is reported, not the first.
pub fn carry_over(
    profile: &Map<String, Value>,
    rules: &AppProfileRules,
    sets_immutable_id: bool,
) -> Result<CarryOver, Vec<CarryOverProblem>> {
    let mapped = rules.mapped();
    let schema = &rules.schema;
    let mut problems = Vec::new();
    let mut out = CarryOver::default();
    let unknown: Vec<String> = profile
        .iter()
        .filter(|(k, v)| !v.is_null() && schema.attribute(k).is_none())
        .map(|(k, _)| k.clone())
        .collect();
    if !unknown.is_empty() {
        problems.push(CarryOverProblem::NotInSchema(unknown));
    }
    for (k, v) in profile.iter().filter(|(_, v)| !v.is_null()) {
        let Some(attr) = schema.attribute(k) else {
            continue;
        };
        if mapped.contains_key(k) {
            out.mapped.push(k.clone());
        } else if attr.read_only() {
            out.read_only.push(k.clone());
        }
        if ENTITLEMENT_ATTRIBUTES.contains(&k.as_str()) && !empty(v) {
            if let Some(expression) = mapped.get(k) {
                problems.push(CarryOverProblem::EntitlementMapped {
                    attribute: k.clone(),
                    expression: expression.clone(),
                    value: v.to_string(),
                });
            } else if attr.read_only() {
                problems.push(CarryOverProblem::EntitlementReadOnly {
                    attribute: k.clone(),
                    value: v.to_string(),
                });
            }
        }
    }
    for name in ENTITLEMENT_ATTRIBUTES {
        if schema.attribute(name).is_some() {
            let held = profile.get(*name).cloned().unwrap_or(Value::Null);
            out.entitlements.insert((*name).to_owned(), held);
        }
    }
    if sets_immutable_id {
        match schema.attribute(IMMUTABLE_ID) {
            None => problems.push(CarryOverProblem::ImmutableIdNotWritable("not defined")),
            Some(a) if a.read_only() => {
                problems.push(CarryOverProblem::ImmutableIdNotWritable("read-only"))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(custom: Value, mapped: &[(&str, &str)]) -> AppProfileRules {
        let schema = AppUserSchema::from_json(&json!({
            "definitions": {
                "base": {"id": "#base", "properties": {
                    "firstName": {"type": "string", "mutability": "READ_WRITE"},
                    "lastName": {"type": "string", "mutability": "READ_WRITE"}
                }},
                "custom": {"id": "#custom", "properties": custom}
            }
        }))
        .unwrap();
        let mut props = Map::new();
        for (k, e) in mapped {
            props.insert((*k).into(), json!({"expression": e, "pushStatus": "PUSH"}));
        }
        AppProfileRules {
            schema,
            mappings: vec![ProfileMapping {
                id: "prm1".into(),
                source: Value::Null,
                target: Value::Null,
                properties: props,
            }],
        }
    }

    fn profile(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn o365_custom(licenses_mutability: &str) -> Value {
        json!({
            "immutableId": {"type": "string", "mutability": "READ_WRITE"},
            "licenses": {"type": "array", "mutability": licenses_mutability},
            "roles": {"type": "array", "mutability": "READ_WRITE"},
            "lastSignIn": {"type": "string", "mutability": "READ_ONLY"},
        })
    }

    #[test]
    fn mapped_and_read_only_attributes_are_left_to_okta_and_entitlements_carried() {
        let r = rules(
            o365_custom("READ_WRITE"),
            &[("firstName", "user.firstName")],
        );
        let c = carry_over(
            &profile(
                json!({"firstName": "A", "lastName": "B", "immutableId": "x",
                "licenses": ["ENTERPRISEPACK"], "roles": [], "lastSignIn": "2024", "gone": null}),
            ),
            &r,
            true,
        )
        .unwrap();
        assert_eq!(c.mapped, ["firstName"]);
        assert_eq!(c.read_only, ["lastSignIn"]);
        assert_eq!(c.entitlements["licenses"], json!(["ENTERPRISEPACK"]));
        assert_eq!(c.entitlements["roles"], json!([]));
        assert!(c.omits("lastSignIn") && !c.omits("licenses"));
    }

    #[test]
    fn held_entitlements_that_cannot_be_sent_are_refused_with_every_reason() {
        let r = rules(
            o365_custom("READ_ONLY"),
            &[("roles", "appuser.defaultRoles")],
        );
        let problems = carry_over(
            &profile(json!({"licenses": ["E3"], "roles": ["User"], "legacy": "x"})),
            &r,
            true,
        )
        .unwrap_err();
        assert!(problems.contains(&CarryOverProblem::NotInSchema(vec!["legacy".into()])));
        assert!(problems
            .iter()
            .any(|p| matches!(p, CarryOverProblem::EntitlementReadOnly { attribute, .. } if attribute == "licenses")));
        assert!(problems
            .iter()
            .any(|p| matches!(p, CarryOverProblem::EntitlementMapped { attribute, .. } if attribute == "roles")));
    }

    #[test]
    fn empty_entitlements_and_a_schema_without_them_are_not_refusals() {
        let r = rules(o365_custom("READ_ONLY"), &[]);
        assert!(carry_over(&profile(json!({"licenses": []})), &r, true).is_ok());
        let r = rules(
            json!({"immutableId": {"type": "string", "mutability": "READ_WRITE"}}),
            &[],
        );
        let c = carry_over(&profile(json!({"immutableId": "x"})), &r, true).unwrap();
        assert!(c.entitlements.is_empty());
    }

    #[test]
    fn an_immutable_id_the_assignment_cannot_set_is_refused_only_when_it_must_be_set() {
        let r = rules(
            json!({"immutableId": {"type": "string", "mutability": "READ_ONLY"}}),
            &[],
        );
        assert_eq!(
            carry_over(&Map::new(), &r, true).unwrap_err(),
            [CarryOverProblem::ImmutableIdNotWritable("read-only")]
        );
        assert!(carry_over(&Map::new(), &r, false).is_ok());
    }
}
