//! A job type's published payload schema, compiled once, as the check of every payload: the
//! OpenAPI spec and the api's 400s come from the same schema, so a rule is written once (in the
//! payload's `#[schema(..)]` attributes) and the two cannot disagree.

use super::NamedSchema;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// How deep `$ref` chains and nesting are followed when reading integral numbers (our payload
/// schemas are far shallower; a deeper one is left as given and `serde` names the field).
const MAX_DEPTH: usize = 32;

pub(super) struct PayloadSchema {
    validator: jsonschema::Validator,
    /// `{"$ref": .., "components": {"schemas": ..}}`: refs resolve as in the OpenAPI document.
    document: Value,
}

impl PayloadSchema {
    /// `schemas`: the payload's (name, schema) first, then those it refers to.
    pub(super) fn compile(schemas: &[NamedSchema]) -> Result<Self, String> {
        let (name, _) = schemas.first().ok_or("no payload schema")?;
        let components: Map<String, Value> = schemas
            .iter()
            .map(|(n, s)| Ok((n.clone(), serde_json::to_value(s)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| format!("payload schema does not serialize: {e}"))?;
        let document = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": {"schemas": components},
        });
        // OpenAPI 3.1 schemas are JSON Schema 2020-12.
        let validator = jsonschema::draft202012::new(&document)
            .map_err(|e| format!("payload schema {name} does not compile: {e}"))?;
        Ok(Self {
            validator,
            document,
        })
    }

    /// The first rule `payload` breaks, as `payload.<field>: <rule>` (the value itself is not
    /// echoed: it may be large or secret).
    pub(super) fn check(&self, payload: &Value) -> Result<(), String> {
        let Some(error) = self.validator.iter_errors(payload).next() else {
            return Ok(());
        };
        let path = error.instance_path().to_string();
        Err(format!(
            "payload{}: {}",
            path.replace('/', "."),
            error.masked()
        ))
    }

    /// `payload` with every integral number at an `integer` place of the schema written as an
    /// integer (`89.0` → `89`), as JSON Schema counts it, so `serde` reads it into an integer
    /// field; numbers elsewhere (e.g. a webhook's free-form body) are left exactly as given.
    pub(super) fn integral<'v>(&self, payload: &'v Value) -> Cow<'v, Value> {
        if !has_float(payload, 0) {
            return Cow::Borrowed(payload);
        }
        let mut value = payload.clone();
        self.walk(&self.document, &mut value, 0);
        Cow::Owned(value)
    }

    fn walk(&self, schema: &Value, value: &mut Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let schema = self.resolve(schema);
        if let Some(reference) = schema.get("$ref") {
            self.walk(&json!({"$ref": reference}), value, depth + 1);
        }
        for keyword in ["allOf", "anyOf", "oneOf"] {
            for sub in schema[keyword].as_array().into_iter().flatten() {
                self.walk(sub, value, depth + 1);
            }
        }
        if says_integer(schema) {
            if let Some(n) = integral_number(value) {
                *value = n;
            }
            return;
        }
        match value {
            Value::Object(fields) => {
                let properties = schema["properties"].as_object();
                for (key, field) in fields.iter_mut() {
                    let sub = properties
                        .and_then(|p| p.get(key))
                        .or_else(|| schema.get("additionalProperties"));
                    if let Some(sub) = sub {
                        self.walk(sub, field, depth + 1);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = schema.get("items") {
                    for item in items {
                        self.walk(sub, item, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }

    /// Follow a `$ref` into the document's components (once; `walk` follows chains).
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .map_or(schema, |name| &self.document["components"]["schemas"][name])
    }
}

fn says_integer(schema: &Value) -> bool {
    match &schema["type"] {
        Value::String(t) => t == "integer",
        Value::Array(ts) => ts.iter().any(|t| t == "integer"),
        _ => false,
    }
}

/// `89.0` → `89`; anything else → `None`.
fn integral_number(value: &Value) -> Option<Value> {
    let f = value.as_f64().filter(|_| value.is_f64())?;
    if f.fract() != 0.0 {
        return None;
    }
    // Exact for |f| < 2^63 (every f64 there with no fraction is an integer).
    if f >= 0.0 && f < u64::MAX as f64 {
        Some(Value::from(f as u64))
    } else if f < 0.0 && f >= i64::MIN as f64 {
        Some(Value::from(f as i64))
    } else {
        None
    }
}

fn has_float(value: &Value, depth: usize) -> bool {
    depth <= MAX_DEPTH
        && match value {
            Value::Number(n) => n.is_f64(),
            Value::Array(items) => items.iter().any(|v| has_float(v, depth + 1)),
            Value::Object(fields) => fields.values().any(|v| has_float(v, depth + 1)),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{payload_schemas, DelayPrint, Webhook};

    #[test]
    fn the_published_schema_is_the_check() {
        let schema = PayloadSchema::compile(&payload_schemas::<DelayPrint>()).unwrap();
        assert!(schema.check(&json!({"message": "hi"})).is_ok());
        let err = schema.check(&json!({"message": " \t"})).unwrap_err();
        assert!(err.starts_with("payload.message: "), "{err}");
        let long = schema
            .check(&json!({"message": "x".repeat(10_241)}))
            .unwrap_err();
        assert!(long.contains("10240") && long.len() < 200, "{long}");
        let missing = schema.check(&json!({})).unwrap_err();
        assert!(missing.contains("message"), "{missing}");
        let extra = schema
            .check(&json!({"message": "m", "colour": 1}))
            .unwrap_err();
        assert!(extra.contains("colour"), "{extra}");
    }

    #[test]
    fn integral_numbers_only_where_the_schema_says_integer() {
        let schema = PayloadSchema::compile(&payload_schemas::<Webhook>()).unwrap();
        let given = json!({"url": "https://h/", "body": {"amount": 89.0}});
        // The webhook body is free-form JSON: kept as given.
        assert_eq!(*schema.integral(&given), given);
        assert_eq!(integral_number(&json!(89.0)), Some(json!(89)));
        assert_eq!(integral_number(&json!(-3.0)), Some(json!(-3)));
        assert_eq!(integral_number(&json!(1.5)), None);
        assert_eq!(integral_number(&json!(7)), None);
    }
}
