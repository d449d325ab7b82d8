//! A validator for the subset of JSON Schema that GitHub's `OpenAPI` 3.0 description
//! uses for responses: `$ref` (into `components/schemas`), `type`, `nullable`,
//! `properties`, `required`, `additionalProperties`, `items`, `enum`, `allOf`,
//! `anyOf`, `oneOf`, and the `date-time` format. Other keywords (`maxLength`,
//! `pattern`, `minimum`, …) are not checked; none of them constrains the fields the
//! fake produces.
//!
//! The description is `.cache/github/api.github.com.json` (npm `@octokit/openapi`),
//! parsed once per test binary.

use std::sync::OnceLock;

use serde_json::Value;

use crate::support::github::github_openapi_path;

/// GitHub's REST API description.
pub struct OpenApi {
    doc: Value,
}

/// The description, loaded on first use; panics naming `scripts/setup` if missing.
pub fn spec() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = github_openapi_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let doc = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        OpenApi { doc }
    })
}

impl OpenApi {
    /// Follows a local `$ref` (`#/components/...`).
    fn resolve<'a>(&'a self, reference: &str) -> &'a Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {reference}"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"))
    }

    /// A named schema of `components/schemas`.
    pub fn schema(&self, name: &str) -> &Value {
        self.resolve(&format!("#/components/schemas/{name}"))
    }

    /// The operation id of `method` on the path template (`/repos/{owner}/{repo}/pulls`).
    pub fn operation_id(&self, method: &str, template: &str) -> Option<&str> {
        self.doc["paths"][template][method.to_ascii_lowercase()]["operationId"].as_str()
    }

    /// Checks a response of the operation `method template` against the description:
    /// the status must be documented, and a JSON body must match its schema (a status
    /// documented without a body must come without one).
    pub fn validate_response(
        &self,
        method: &str,
        template: &str,
        status: u16,
        body: Option<&Value>,
    ) -> Result<(), String> {
        let operation = &self.doc["paths"][template][method.to_ascii_lowercase()];
        if operation.is_null() {
            return Err(format!(
                "{method} {template} is not in GitHub's description"
            ));
        }
        let mut response = &operation["responses"][status.to_string()];
        if response.is_null() {
            return Err(format!(
                "{method} {template}: status {status} is not documented"
            ));
        }
        if let Some(reference) = response["$ref"].as_str() {
            response = self.resolve(reference);
        }
        let schema = &response["content"]["application/json"]["schema"];
        match (schema.is_null(), body) {
            (true, None) => Ok(()),
            (true, Some(_)) => Err(format!(
                "{method} {template}: status {status} has no body in the description"
            )),
            (false, None) => Err(format!(
                "{method} {template}: status {status} needs a JSON body"
            )),
            (false, Some(body)) => {
                let errors = self.validate(schema, body);
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{method} {template} {status}: {}",
                        errors.join("; ")
                    ))
                }
            }
        }
    }

    /// Every way `value` breaks `schema` (empty: valid).
    pub fn validate(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, "$", &mut errors);
        errors
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(reference) = schema["$ref"].as_str() {
            self.check(self.resolve(reference), value, at, errors);
            return;
        }
        if value.is_null() {
            if schema["nullable"] == true || self.branch_allows_null(schema) {
                return;
            }
            errors.push(format!("{at}: null is not allowed"));
            return;
        }
        if let Some(all) = schema["allOf"].as_array() {
            for branch in all {
                self.check(branch, value, at, errors);
            }
        }
        if let Some(any) = schema["anyOf"].as_array() {
            let matching = any
                .iter()
                .filter(|b| self.validate_at(b, value, at).is_empty())
                .count();
            if matching == 0 {
                errors.push(format!(
                    "{at}: matches none of anyOf ({} branches)",
                    any.len()
                ));
            }
        }
        if let Some(one) = schema["oneOf"].as_array() {
            let failures: Vec<Vec<String>> =
                one.iter().map(|b| self.validate_at(b, value, at)).collect();
            let matching = failures.iter().filter(|f| f.is_empty()).count();
            if matching != 1 {
                errors.push(format!(
                    "{at}: matches {matching} of {} oneOf branches (must be exactly 1): {failures:?}",
                    one.len()
                ));
            }
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        let declared = schema["type"].as_str();
        let kind = declared.or_else(|| {
            (schema.get("properties").is_some() || schema.get("required").is_some())
                .then_some("object")
        });
        match kind {
            Some("object") => self.check_object(schema, value, at, errors),
            Some("array") => match value.as_array() {
                Some(items) => {
                    if let Some(item_schema) = schema.get("items") {
                        for (i, item) in items.iter().enumerate() {
                            self.check(item_schema, item, &format!("{at}[{i}]"), errors);
                        }
                    }
                }
                None => errors.push(format!("{at}: expected an array, got {}", brief(value))),
            },
            Some("string") => match value.as_str() {
                Some(text) => {
                    if schema["format"] == "date-time"
                        && chrono::DateTime::parse_from_rfc3339(text).is_err()
                    {
                        errors.push(format!("{at}: {text:?} is not an RFC 3339 date-time"));
                    }
                }
                None => errors.push(format!("{at}: expected a string, got {}", brief(value))),
            },
            Some("integer") if !(value.is_i64() || value.is_u64()) => {
                errors.push(format!("{at}: expected an integer, got {}", brief(value)));
            }
            Some("number") if !value.is_number() => {
                errors.push(format!("{at}: expected a number, got {}", brief(value)));
            }
            Some("boolean") if !value.is_boolean() => {
                errors.push(format!("{at}: expected a boolean, got {}", brief(value)));
            }
            Some("integer" | "number" | "boolean") | None => {}
            Some(other) => errors.push(format!("{at}: unsupported schema type {other:?}")),
        }
    }

    fn validate_at(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, at, &mut errors);
        errors
    }

    /// Whether a combinator branch (or the `$ref`'d schema) admits null.
    fn branch_allows_null(&self, schema: &Value) -> bool {
        if let Some(reference) = schema["$ref"].as_str() {
            let target = self.resolve(reference);
            return target["nullable"] == true || self.branch_allows_null(target);
        }
        ["anyOf", "oneOf"].iter().any(|key| {
            schema[*key].as_array().is_some_and(|branches| {
                branches
                    .iter()
                    .any(|b| b["nullable"] == true || self.branch_allows_null(b))
            })
        }) || schema["allOf"].as_array().is_some_and(|branches| {
            !branches.is_empty()
                && branches
                    .iter()
                    .all(|b| b["nullable"] == true || self.branch_allows_null(b))
        })
    }

    fn check_object(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(object) = value.as_object() else {
            errors.push(format!("{at}: expected an object, got {}", brief(value)));
            return;
        };
        if let Some(required) = schema["required"].as_array() {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: missing required property {name:?}"));
                }
            }
        }
        let properties = schema["properties"].as_object();
        for (name, field) in object {
            let child = format!("{at}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => self.check(field_schema, field, &child, errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => {
                        errors.push(format!("{at}: property {name:?} is not allowed"));
                    }
                    extra @ Value::Object(_) => self.check(extra, field, &child, errors),
                    _ => {}
                },
            }
        }
    }
}

fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}
