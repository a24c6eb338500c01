//! Checks a REST request against Discord's own OpenAPI description
//! (vendored in `tests/specs/discord-openapi.json`): the route and method must exist, path parameters
//! must fit their schemas, query parameters must be declared, and a JSON body must validate
//! against the operation's request schema (a JSON Schema subset: `$ref`, `type`, `enum`,
//! `const`, `properties`/`required`, `additionalProperties`, `items`, `oneOf`/`anyOf`/`allOf`,
//! lengths and bounds). Objects are treated as closed: a property the spec does not name is an
//! error, so a typo in a field name cannot pass.

use serde_json::{Map, Value};
use std::path::PathBuf;

/// (literal segments matched, template, path parameters).
type Candidate<'a> = (usize, &'a String, Vec<(String, String)>);

pub struct Spec {
    doc: Value,
    /// (template segments, template) for every path.
    paths: Vec<(Vec<String>, String)>,
}

/// The operation a request matched.
#[derive(Debug, Clone)]
pub struct Matched {
    pub template: String,
    pub operation_id: String,
    pub params: Vec<(String, String)>,
}

impl Spec {
    /// Loads the vendored copy of the official spec (`tests/specs/`).
    pub fn load() -> Spec {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/specs/discord-openapi.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read the Discord spec at {}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).expect("the Discord spec is JSON");
        let paths = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(|k| (split(k), k.clone()))
            .collect();
        Spec { doc, paths }
    }

    /// Validates one request; `path` is below `/api/v10`, percent-decoded per segment.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Matched, String> {
        let segs = split(path);
        // Most literal segments first, so `/messages/@original` beats `/messages/{message_id}`.
        let mut candidates: Vec<Candidate<'_>> = self
            .paths
            .iter()
            .filter_map(|(tsegs, t)| {
                if tsegs.len() != segs.len() {
                    return None;
                }
                let mut params = Vec::new();
                let mut literal = 0;
                for (ts, s) in tsegs.iter().zip(&segs) {
                    if ts.starts_with('{') && ts.ends_with('}') {
                        params.push((ts[1..ts.len() - 1].to_owned(), s.clone()));
                    } else if ts == s {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, t, params))
            })
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let Some((_, template, params)) = candidates.into_iter().next() else {
            return Err(format!("{method} {path}: no such route in Discord's API"));
        };
        let item = &self.doc["paths"][template.as_str()];
        let op = &item[method.to_ascii_lowercase()];
        if !op.is_object() {
            return Err(format!("{method} {path}: route {template} has no {method}"));
        }
        let declared: Vec<&Value> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(op["parameters"].as_array().into_iter().flatten())
            .collect();
        for (name, value) in &params {
            let schema = declared
                .iter()
                .find(|p| p["name"] == name.as_str() && p["in"] == "path")
                .map(|p| &p["schema"]);
            if let Some(schema) = schema {
                self.validate(
                    &Value::String(value.clone()),
                    schema,
                    &format!("path {{{name}}}"),
                )
                .map_err(|e| format!("{method} {path}: {e}"))?;
            }
        }
        for (name, value) in query {
            let Some(p) = declared
                .iter()
                .find(|p| p["name"] == name.as_str() && p["in"] == "query")
            else {
                return Err(format!(
                    "{method} {path}: undeclared query parameter `{name}`"
                ));
            };
            let v = match p["schema"]["type"].as_str() {
                Some("boolean") => Value::Bool(value == "true"),
                Some("integer") => value
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("{method} {path}: query `{name}` is not an integer"))?,
                _ => Value::String(value.clone()),
            };
            self.validate(&v, &p["schema"], &format!("query {name}"))
                .map_err(|e| format!("{method} {path}: {e}"))?;
        }
        let rb = self.deref(&op["requestBody"]);
        match (body, rb.is_object()) {
            (Some(b), true) => {
                let schema = &rb["content"]["application/json"]["schema"];
                if schema.is_null() {
                    return Err(format!(
                        "{method} {path}: JSON body where the spec takes none"
                    ));
                }
                self.validate(b, schema, "body")
                    .map_err(|e| format!("{method} {path}: {e}"))?;
            }
            (Some(_), false) => {
                return Err(format!("{method} {path}: a body where the spec takes none"))
            }
            (None, true) if rb["required"] == true => {
                return Err(format!("{method} {path}: the spec requires a body"))
            }
            _ => {}
        }
        Ok(Matched {
            template: template.clone(),
            operation_id: op["operationId"].as_str().unwrap_or("").to_owned(),
            params,
        })
    }

    fn deref<'a>(&'a self, v: &'a Value) -> &'a Value {
        let mut v = v;
        for _ in 0..16 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => v = self.pointer(r),
                None => break,
            }
        }
        v
    }

    fn pointer(&self, r: &str) -> &Value {
        self.doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or(&Value::Null)
    }

    /// Property names an object schema allows, through `allOf`.
    fn allowed_properties(&self, schema: &Value, out: &mut Vec<String>, depth: usize) -> bool {
        let schema = self.deref(schema);
        if depth > 8 {
            return true;
        }
        let mut open = false;
        if let Some(props) = schema["properties"].as_object() {
            out.extend(props.keys().cloned());
        }
        if let Some(ap) = schema.get("additionalProperties") {
            open |= ap != &Value::Bool(false);
        }
        if let Some(all) = schema["allOf"].as_array() {
            for s in all {
                open |= self.allowed_properties(s, out, depth + 1);
            }
        }
        open
    }

    pub fn validate(&self, v: &Value, schema: &Value, at: &str) -> Result<(), String> {
        self.validate_depth(v, schema, at, 0)
    }

    fn validate_depth(
        &self,
        v: &Value,
        schema: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 40 {
            return Ok(());
        }
        let s = self.deref(schema);
        if s.as_bool() == Some(true) || s.is_null() {
            return Ok(());
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !types.is_empty() && !types.iter().any(|t| type_ok(v, t)) {
                return Err(format!("{at}: {} is not {}", short(v), types.join(" or ")));
            }
        }
        if let Some(e) = s["enum"].as_array() {
            if !v.is_null() && !e.contains(v) {
                return Err(format!(
                    "{at}: {} is not one of {}",
                    short(v),
                    Value::Array(e.clone())
                ));
            }
        }
        if let Some(c) = s.get("const") {
            if v != c {
                return Err(format!("{at}: {} is not {c}", short(v)));
            }
        }
        if let Value::String(text) = v {
            let n = text.chars().count() as u64;
            if let Some(max) = s["maxLength"].as_u64() {
                if n > max {
                    return Err(format!("{at}: {n} characters, at most {max}"));
                }
            }
            if let Some(min) = s["minLength"].as_u64() {
                if n < min {
                    return Err(format!("{at}: {n} characters, at least {min}"));
                }
            }
            if s["pattern"] == "^(0|[1-9][0-9]*)$"
                && (text.is_empty()
                    || !text.chars().all(|c| c.is_ascii_digit())
                    || (text.len() > 1 && text.starts_with('0')))
            {
                return Err(format!("{at}: `{text}` is not a snowflake"));
            }
        }
        if let Some(n) = v.as_f64() {
            if let Some(max) = s["maximum"].as_f64() {
                if n > max {
                    return Err(format!("{at}: {n} > {max}"));
                }
            }
            if let Some(min) = s["minimum"].as_f64() {
                if n < min {
                    return Err(format!("{at}: {n} < {min}"));
                }
            }
        }
        if let Value::Array(items) = v {
            if let Some(max) = s["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    return Err(format!("{at}: {} items, at most {max}", items.len()));
                }
            }
            if let Some(item_schema) = s.get("items") {
                for (i, it) in items.iter().enumerate() {
                    self.validate_depth(it, item_schema, &format!("{at}[{i}]"), depth + 1)?;
                }
            }
        }
        if let Value::Object(obj) = v {
            self.validate_object(obj, s, at, depth)?;
        }
        if let Some(all) = s["allOf"].as_array() {
            for sub in all {
                // Properties are checked against the union above; here the rest of each part.
                let mut part = self.deref(sub).clone();
                if let Some(o) = part.as_object_mut() {
                    o.insert("additionalProperties".into(), Value::Bool(true));
                }
                self.validate_depth(v, &part, at, depth + 1)?;
            }
        }
        if let Some(any) = s["anyOf"].as_array() {
            let errs: Vec<String> = any
                .iter()
                .filter_map(|sub| self.validate_depth(v, sub, at, depth + 1).err())
                .collect();
            if errs.len() == any.len() {
                return Err(format!("{at}: matches none of anyOf: {}", errs.join(" | ")));
            }
        }
        if let Some(one) = s["oneOf"].as_array() {
            let ok = one
                .iter()
                .filter(|sub| self.validate_depth(v, sub, at, depth + 1).is_ok())
                .count();
            if ok != 1 {
                let errs: Vec<String> = one
                    .iter()
                    .filter_map(|sub| self.validate_depth(v, sub, at, depth + 1).err())
                    .collect();
                return Err(format!(
                    "{at}: matches {ok} of oneOf (exactly one needed): {}",
                    errs.join(" | ")
                ));
            }
        }
        Ok(())
    }

    fn validate_object(
        &self,
        obj: &Map<String, Value>,
        s: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        let has_shape = s.get("properties").is_some() || s.get("allOf").is_some();
        if has_shape {
            let mut allowed = Vec::new();
            let open = self.allowed_properties(s, &mut allowed, 0);
            if !open {
                for k in obj.keys() {
                    if !allowed.contains(k) {
                        return Err(format!("{at}: unknown property `{k}`"));
                    }
                }
            }
        }
        if let Some(req) = s["required"].as_array() {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{at}: missing required `{r}`"));
                }
            }
        }
        if let Some(props) = s["properties"].as_object() {
            for (k, val) in obj {
                if let Some(ps) = props.get(k) {
                    self.validate_depth(val, ps, &format!("{at}.{k}"), depth + 1)?;
                }
            }
        } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
            for (k, val) in obj {
                self.validate_depth(val, ap, &format!("{at}.{k}"), depth + 1)?;
            }
        }
        Ok(())
    }
}

fn split(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn type_ok(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_spec_rejects_what_discord_would() {
        let spec = Spec::load();
        assert!(spec
            .check(
                "POST",
                "/channels/1/messages",
                &[],
                Some(&json!({"content": "hi", "allowed_mentions": {"parse": []}}))
            )
            .is_ok());
        assert!(spec
            .check("POST", "/channels/1/messagez", &[], None)
            .is_err());
        assert!(spec
            .check("POST", "/channels/abc/messages", &[], Some(&json!({})))
            .is_err());
        assert!(spec
            .check(
                "POST",
                "/channels/1/messages",
                &[],
                Some(&json!({"contnet": "typo"}))
            )
            .is_err());
        assert!(spec
            .check(
                "POST",
                "/channels/1/messages",
                &[],
                Some(&json!({"allowed_mentions": {"parse": ["all"]}}))
            )
            .is_err());
        let m = spec
            .check(
                "PATCH",
                "/webhooks/1/tok/messages/@original",
                &[],
                Some(&json!({"content": "x"})),
            )
            .unwrap();
        assert_eq!(
            m.template,
            "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
        );
    }
}
