//! The served OpenAPI spec is the truth: for every operation this walks the spec and sends
//! requests generated from its schemas (real app, real Redis, limiter off).
//! - Valid ones (required fields only, each optional field at each bound, all fields at once)
//!   get a 2xx, or a 4xx other than 400 that the spec documents for the route (unknown id 404,
//!   unique key 409, chaos cooldown 429): reasons a schema cannot state.
//! - Invalid ones (each required field missing, each bound passed by one, a wrong type, a blank
//!   string where the pattern wants a non-space, a value outside an enum, a broken rule between
//!   fields) get 400 with `{"code": 400, "message": ...}`.
//! - Nothing gets a 5xx or a status the spec does not document for the route.
//!
//! The app runs the production job types plus the README's example type (`media:thumbnail`,
//! `job_type_example/thumbnail.rs`), so the example is compiled, documented and walked too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../job_type_example/thumbnail.rs"]
mod thumbnail;

use cacheserver_jobqueue::{JobContext, JobType, Registry};
use cacheserver_testkit::RedisServer;
use serde_json::{json, Map, Value};

/// Bounds the generator: `$ref` chains and nesting (our schemas are far shallower).
const MAX_DEPTH: usize = 8;
/// Tried in order for a string that breaks a `pattern`.
const OFF_PATTERN: &[&str] = &["~", "\u{1}", " ", ""];
const OFF_ENUM: &str = "zz-not-in-enum";

/// The spec's patterns are ECMA-262 regexes; ours use only syntax the `regex` crate reads alike.
fn matches(pattern: &str, text: &str) -> bool {
    regex::Regex::new(pattern)
        .unwrap_or_else(|e| panic!("pattern {pattern}: {e}"))
        .is_match(text)
}

/// A string `pattern` rejects.
fn off_pattern(pattern: &str) -> &'static str {
    OFF_PATTERN
        .iter()
        .find(|s| !matches(pattern, s))
        .unwrap_or_else(|| panic!("no string here breaks {pattern}"))
}

struct Gen<'a> {
    spec: &'a Value,
}

impl Gen<'_> {
    /// Follow `$ref` into `components`.
    fn resolve<'s>(&'s self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..MAX_DEPTH {
            let Some(reference) = schema["$ref"].as_str() else {
                return schema;
            };
            let name = reference
                .strip_prefix("#/components/schemas/")
                .expect("local schema ref");
            schema = &self.spec["components"]["schemas"][name];
            assert!(!schema.is_null(), "unresolved {reference}");
        }
        panic!("$ref chain too long");
    }

    /// `oneOf` of whole schemas (not the object-level `oneOf` of required lists).
    fn alternatives<'s>(&self, schema: &'s Value) -> Option<&'s Vec<Value>> {
        schema
            .get("type")
            .is_none()
            .then(|| schema["oneOf"].as_array())?
    }

    /// Valid instances; the first is the plainest.
    fn valid(&self, schema: &Value, depth: usize) -> Vec<Value> {
        assert!(depth < MAX_DEPTH, "schema nests too deep");
        let schema = self.resolve(schema);
        if let Some(items) = self.alternatives(schema) {
            return items
                .iter()
                .flat_map(|s| self.valid(s, depth + 1))
                .collect();
        }
        if let Some(values) = schema["enum"].as_array() {
            return values.clone();
        }
        match main_type(schema) {
            None => vec![json!({"any": [1, "json"]}), json!(5)],
            Some("string") => valid_strings(schema),
            Some("integer") => valid_integers(schema),
            Some("boolean") => vec![json!(true), json!(false)],
            Some("array") => self.valid_arrays(schema, depth),
            Some("object") => self.valid_objects(schema, depth),
            Some(other) => panic!("no generator for type {other}"),
        }
    }

    fn first_valid(&self, schema: &Value, depth: usize) -> Value {
        self.valid(schema, depth).swap_remove(0)
    }

    fn valid_arrays(&self, schema: &Value, depth: usize) -> Vec<Value> {
        let items = self.valid(&schema["items"], depth + 1);
        let min = schema["minItems"].as_u64().unwrap_or(0) as usize;
        let mut out: Vec<Value> = items
            .iter()
            .map(|item| Value::Array(vec![item.clone(); min.max(1)]))
            .collect();
        if min == 0 {
            out.push(json!([]));
        }
        if let Some(max) = schema["maxItems"].as_u64() {
            out.push(Value::Array(vec![items[0].clone(); max as usize]));
        }
        out
    }

    fn valid_objects(&self, schema: &Value, depth: usize) -> Vec<Value> {
        let rules = Rules::of(schema);
        let base = self.base_object(schema, depth);
        let mut out = Vec::new();
        for branch in &rules.branches {
            let mut o = base.clone();
            for key in branch {
                o.insert(
                    key.clone(),
                    self.first_valid(&schema["properties"][key], depth + 1),
                );
            }
            out.push(Value::Object(o));
        }
        for (key, prop) in properties(schema) {
            for value in self.valid(prop, depth + 1) {
                let mut o = base.clone();
                o.insert(key.clone(), value);
                self.complete(schema, &rules, &mut o, key, depth);
                out.push(Value::Object(o));
            }
        }
        out.push(Value::Object(self.all_fields(schema, &rules, depth)));
        out
    }

    /// The required fields at their first valid value.
    fn base_object(&self, schema: &Value, depth: usize) -> Map<String, Value> {
        required(schema)
            .map(|key| {
                let value = self.first_valid(&schema["properties"][key], depth + 1);
                (key.to_owned(), value)
            })
            .collect()
    }

    /// Add what `key` needs to be valid: its `dependentRequired`, one `oneOf` branch.
    fn complete(
        &self,
        schema: &Value,
        rules: &Rules,
        o: &mut Map<String, Value>,
        key: &str,
        depth: usize,
    ) {
        let mut needed: Vec<String> = rules.depends.get(key).cloned().unwrap_or_default();
        let in_branch = rules.branches.iter().any(|b| b.iter().any(|k| k == key));
        if !in_branch {
            needed.extend(rules.branches[0].iter().cloned());
        }
        for k in needed {
            let value = self.first_valid(&schema["properties"][&k], depth + 1);
            o.entry(k).or_insert(value);
        }
    }

    /// Every property, then the rules between fields applied (first of each exclusive set).
    fn all_fields(&self, schema: &Value, rules: &Rules, depth: usize) -> Map<String, Value> {
        let mut o: Map<String, Value> = properties(schema)
            .map(|(k, p)| (k.clone(), self.first_valid(p, depth + 1)))
            .collect();
        for key in rules.not_together.iter().skip(1) {
            o.remove(key);
        }
        for branch in rules.branches.iter().skip(1) {
            for key in branch {
                o.remove(key);
            }
        }
        o
    }

    /// Invalid instances, each with what is wrong.
    fn invalid(&self, schema: &Value, depth: usize) -> Vec<(String, Value)> {
        assert!(depth < MAX_DEPTH, "schema nests too deep");
        let schema = self.resolve(schema);
        if let Some(items) = self.alternatives(schema) {
            return items
                .iter()
                .flat_map(|s| self.invalid(s, depth + 1))
                .collect();
        }
        let mut out = wrong_types(schema);
        if schema["enum"].is_array() {
            out.push(("outside the enum".into(), json!(OFF_ENUM)));
        }
        match main_type(schema) {
            Some("string") => out.extend(invalid_strings(schema)),
            Some("integer") => out.extend(invalid_integers(schema)),
            Some("array") => out.extend(self.invalid_arrays(schema, depth)),
            Some("object") => out.extend(self.invalid_objects(schema, depth)),
            _ => {}
        }
        out
    }

    fn invalid_arrays(&self, schema: &Value, depth: usize) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let item = self.first_valid(&schema["items"], depth + 1);
        if let Some(min) = schema["minItems"].as_u64().filter(|m| *m > 0) {
            let short = vec![item.clone(); min as usize - 1];
            out.push((format!("fewer than {min} items"), Value::Array(short)));
        }
        if let Some(max) = schema["maxItems"].as_u64() {
            let long = vec![item.clone(); max as usize + 1];
            out.push((format!("more than {max} items"), Value::Array(long)));
        }
        for (what, bad) in self.invalid(&schema["items"], depth + 1) {
            out.push((format!("an item: {what}"), json!([bad])));
        }
        out
    }

    fn invalid_objects(&self, schema: &Value, depth: usize) -> Vec<(String, Value)> {
        let rules = Rules::of(schema);
        let base = self.base_object(schema, depth);
        let with = |o: Map<String, Value>| Value::Object(o);
        let mut out = Vec::new();
        for key in required(schema) {
            let mut o = base.clone();
            o.remove(key);
            out.push((format!("{key} missing"), with(o)));
        }
        for (key, prop) in properties(schema) {
            let mut good = base.clone();
            good.insert(key.clone(), self.first_valid(prop, depth + 1));
            self.complete(schema, &rules, &mut good, key, depth);
            for (what, bad) in self.invalid(prop, depth + 1) {
                let mut o = good.clone();
                o.insert(key.clone(), bad);
                out.push((format!("{key}: {what}"), with(o)));
            }
        }
        out.extend(self.invalid_extra_property(schema, &base, depth));
        out.extend(self.broken_rules(schema, &rules, &base, depth));
        out
    }

    /// A property the schema does not name, a map value of the wrong kind, a map key that
    /// breaks `propertyNames`.
    fn invalid_extra_property(
        &self,
        schema: &Value,
        base: &Map<String, Value>,
        depth: usize,
    ) -> Vec<(String, Value)> {
        let extra = &schema["additionalProperties"];
        let mut bad: Vec<(String, String, Value)> = match extra {
            Value::Bool(false) => vec![("an unknown property".into(), "zz_extra".into(), json!(1))],
            Value::Object(_) => self
                .invalid(extra, depth + 1)
                .into_iter()
                .map(|(what, v)| (format!("a map value: {what}"), "zz_extra".into(), v))
                .collect(),
            _ => Vec::new(),
        };
        if let (Some(p), Value::Object(_)) = (schema["propertyNames"]["pattern"].as_str(), extra) {
            let value = self.first_valid(extra, depth + 1);
            bad.push((
                format!("a map key breaking {p}"),
                off_pattern(p).into(),
                value,
            ));
        }
        bad.into_iter()
            .map(|(what, key, value)| {
                let mut o = base.clone();
                o.insert(key, value);
                (what, Value::Object(o))
            })
            .collect()
    }

    /// Each rule between fields broken once: both of an exclusive set, a dependency missing,
    /// none or two of the `oneOf` branches.
    fn broken_rules(
        &self,
        schema: &Value,
        rules: &Rules,
        base: &Map<String, Value>,
        depth: usize,
    ) -> Vec<(String, Value)> {
        let value = |k: &str| self.first_valid(&schema["properties"][k], depth + 1);
        let mut out = Vec::new();
        if !rules.not_together.is_empty() {
            let mut o = base.clone();
            self.complete(schema, rules, &mut o, "", depth);
            for k in &rules.not_together {
                o.insert(k.clone(), value(k));
            }
            out.push((format!("all of {:?}", rules.not_together), Value::Object(o)));
        }
        for (key, needs) in &rules.depends {
            let mut o = base.clone();
            self.complete(schema, rules, &mut o, "", depth);
            o.insert(key.clone(), value(key));
            for n in needs {
                o.remove(n);
            }
            out.push((format!("{key} without {needs:?}"), Value::Object(o)));
        }
        if rules.branches.len() > 1 {
            let mut both = base.clone();
            for k in rules.branches.iter().flatten() {
                both.insert(k.clone(), value(k));
            }
            out.push(("two oneOf branches".into(), Value::Object(both)));
            out.push(("no oneOf branch".into(), Value::Object(base.clone())));
        }
        out
    }
}

/// The rules between an object's fields that the spec states.
struct Rules {
    /// `not: {required: [..]}`: never all of these together.
    not_together: Vec<String>,
    /// `dependentRequired`.
    depends: std::collections::BTreeMap<String, Vec<String>>,
    /// Object-level `oneOf: [{required: [..]}, ..]`: exactly one; `[[]]` when absent.
    branches: Vec<Vec<String>>,
}

impl Rules {
    fn of(schema: &Value) -> Self {
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        let depends = schema["dependentRequired"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), names(v))).collect())
            .unwrap_or_default();
        let branches: Vec<Vec<String>> = schema["oneOf"]
            .as_array()
            .map(|a| a.iter().map(|b| names(&b["required"])).collect())
            .unwrap_or_else(|| vec![Vec::new()]);
        Self {
            not_together: names(&schema["not"]["required"]),
            depends,
            branches,
        }
    }
}

fn properties(schema: &Value) -> impl Iterator<Item = (&String, &Value)> {
    schema["properties"].as_object().into_iter().flatten()
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| k.as_str().unwrap())
}

fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn main_type(schema: &Value) -> Option<&str> {
    types(schema).into_iter().find(|t| *t != "null")
}

/// A value of another JSON type than the schema allows (`null` unless the type lists it).
fn wrong_types(schema: &Value) -> Vec<(String, Value)> {
    let Some(ty) = main_type(schema) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !types(schema).contains(&"null") {
        out.push(("null".into(), Value::Null));
    }
    let other = match ty {
        "string" => vec![json!(5)],
        "integer" => vec![json!("1"), json!(1.5)],
        "boolean" => vec![json!("true")],
        "array" | "object" => vec![json!("x")],
        _ => Vec::new(),
    };
    out.extend(other.into_iter().map(|v| (format!("{v} for a {ty}"), v)));
    out
}

/// The example, the shortest string, the longest in ASCII and in two-byte characters (length
/// bounds count characters), all kept only where the pattern matches; the example must.
fn valid_strings(schema: &Value) -> Vec<Value> {
    let pattern = schema["pattern"].as_str().unwrap_or("");
    let example: Vec<Value> = schema.get("example").cloned().into_iter().collect();
    for e in &example {
        assert!(
            matches(pattern, e.as_str().unwrap()),
            "example {e} breaks {pattern}"
        );
    }
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let mut texts = vec!["x".repeat(min.max(1))];
    if let Some(max) = schema["maxLength"].as_u64() {
        texts.extend(["x".repeat(max as usize), "é".repeat(max as usize)]);
    }
    if schema.get("format").is_some() {
        texts.clear();
    }
    let out: Vec<Value> = example
        .into_iter()
        .chain(
            texts
                .into_iter()
                .filter(|t| matches(pattern, t))
                .map(Value::from),
        )
        .collect();
    assert!(!out.is_empty(), "give an example to {schema}");
    out
}

fn invalid_strings(schema: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    if min > 0 {
        out.push((format!("shorter than {min}"), json!("x".repeat(min - 1))));
    }
    if let Some(max) = schema["maxLength"].as_u64() {
        let over = max as usize + 1;
        out.push((format!("{over} ASCII characters"), json!("x".repeat(over))));
        out.push((
            format!("{over} two-byte characters"),
            json!("é".repeat(over)),
        ));
    }
    match schema["pattern"].as_str() {
        Some(r"\S") => {
            out.push(("blank".into(), json!(" ".repeat(min.max(1)))));
            out.push(("tab and newline".into(), json!("\t\n")));
        }
        Some(p) => out.push((format!("not matching {p}"), json!(off_pattern(p)))),
        None => {}
    }
    if schema["format"] == "date-time" {
        out.push(("not a date-time".into(), json!("tomorrow")));
    }
    out
}

/// The bounds (else the example), then the first again written with a fraction of zero
/// (`5.0`): JSON Schema's `integer` counts it (bodies only; a query string carries text).
fn valid_integers(schema: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = [&schema["minimum"], &schema["maximum"]]
        .into_iter()
        .filter(|b| b.is_i64())
        .cloned()
        .collect();
    if out.is_empty() {
        out.push(schema.get("example").cloned().unwrap_or(json!(1)));
    }
    let integral_float = json!(out[0].as_i64().unwrap() as f64);
    assert!(integral_float.is_f64(), "{integral_float}");
    out.push(integral_float);
    out
}

fn invalid_integers(schema: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(min) = schema["minimum"].as_i64() {
        out.push((format!("below {min}"), json!(min - 1)));
    }
    if let Some(max) = schema["maximum"].as_i64() {
        out.push((format!("above {max}"), json!(max + 1)));
    }
    out
}

/// A parameter value as the query string or path carries it (not `5.0`: bodies only).
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) if n.is_f64() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One request to send.
#[derive(Debug, Clone, Default)]
struct Call {
    what: String,
    path: Vec<(String, String)>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    /// `None`: no body.
    body: Option<Value>,
}

/// Valid and invalid requests for one operation.
fn calls(gen: &Gen, op: &Value) -> (Vec<Call>, Vec<Call>) {
    let params: Vec<&Value> = op["parameters"].as_array().into_iter().flatten().collect();
    let (mut valid, mut invalid) = param_calls(gen, &params);
    let body = &op["requestBody"];
    let Some(schema) = body["content"]["application/json"].get("schema") else {
        return (valid, invalid);
    };
    let base = valid[0].clone();
    valid = gen
        .valid(schema, 0)
        .into_iter()
        .map(|v| Call {
            what: format!("body {}", short(&v)),
            body: Some(v),
            ..base.clone()
        })
        .chain(valid.into_iter().map(|c| Call {
            body: Some(gen.first_valid(schema, 0)),
            ..c
        }))
        .collect();
    if body["required"] != true {
        valid.push(Call {
            what: "no body".into(),
            ..base.clone()
        });
    }
    let good_body = gen.first_valid(schema, 0);
    for c in &mut invalid {
        c.body = Some(good_body.clone());
    }
    invalid.extend(gen.invalid(schema, 0).into_iter().map(|(what, v)| Call {
        what: format!("body: {what}"),
        body: Some(v),
        ..base.clone()
    }));
    (valid, invalid)
}

/// Path and query parameters: the required ones at their first valid value, then each
/// parameter at each valid value; invalid: each required one missing, each at each invalid value.
fn param_calls(gen: &Gen, params: &[&Value]) -> (Vec<Call>, Vec<Call>) {
    let first = |p: &Value| as_text(&gen.first_valid(&param_schema(gen, p), 0)).unwrap();
    let mut base = Call::default();
    for p in params.iter().filter(|p| p["required"] == true) {
        set(&mut base, p, first(p));
    }
    let mut valid = vec![Call {
        what: "required parameters".into(),
        ..base.clone()
    }];
    let mut invalid = Vec::new();
    for p in params {
        let name = p["name"].as_str().unwrap();
        let schema = param_schema(gen, p);
        for v in gen.valid(&schema, 0).iter().filter_map(as_text) {
            let mut c = Call {
                what: format!("{name}={v}"),
                ..base.clone()
            };
            set(&mut c, p, v);
            valid.push(c);
        }
        for (what, v) in invalid_param(gen, &schema) {
            let mut c = Call {
                what: format!("{name}: {what}"),
                ..base.clone()
            };
            set(&mut c, p, v);
            invalid.push(c);
        }
        if p["required"] == true && p["in"] == "query" {
            let mut c = Call {
                what: format!("{name} missing"),
                ..base.clone()
            };
            c.query.retain(|(k, _)| k != name);
            invalid.push(c);
        }
    }
    (valid, invalid)
}

/// The parameter's schema, with the parameter's `example` (utoipa writes it beside the schema).
fn param_schema(gen: &Gen, param: &Value) -> Value {
    let mut schema = gen.resolve(&param["schema"]).clone();
    if let (Some(example), Some(o)) = (param.get("example"), schema.as_object_mut()) {
        o.entry("example").or_insert(example.clone());
    }
    schema
}

/// Invalid values a query string or path can carry (every one is text there).
fn invalid_param(gen: &Gen, schema: &Value) -> Vec<(String, String)> {
    let schema = gen.resolve(schema);
    let mut out: Vec<(String, Value)> = gen.invalid(schema, 0);
    if main_type(schema) == Some("integer") {
        out.push(("not a number".into(), json!("abc")));
    }
    out.into_iter()
        .filter(|(what, _)| !what.starts_with("null") && !what.contains(" for a "))
        .filter_map(|(what, v)| Some((what, as_text(&v)?)))
        .collect()
}

fn set(call: &mut Call, param: &Value, value: String) {
    let name = param["name"].as_str().unwrap().to_owned();
    let list = match param["in"].as_str() {
        Some("path") => &mut call.path,
        Some("header") => &mut call.headers,
        _ => &mut call.query,
    };
    list.retain(|(k, _)| *k != name);
    list.push((name, value));
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

fn short_what(what: &str) -> String {
    what.chars().take(300).collect()
}

struct Answer {
    status: u16,
    body: Value,
}

/// A client that opens a connection per request: under load the server may close a kept-alive
/// connection just as the next POST goes out on it (hyper's `IncompleteMessage`; HTTP lets a
/// server close idle connections, and a client may not resend a POST), which is not what this
/// walk tests.
fn walk_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn send(
    http: &reqwest::Client,
    app: &crate::common::TestApp,
    method: &str,
    template: &str,
    call: &Call,
) -> Answer {
    let mut path = template.to_owned();
    for (k, v) in &call.path {
        path = path.replace(&format!("{{{k}}}"), v);
    }
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = http.request(method, app.url(&path)).query(&call.query);
    for (name, value) in &call.headers {
        req = req.header(name, value);
    }
    if let Some(body) = &call.body {
        req = req.json(body);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{template} [{}]: {e:?}", short_what(&call.what)));
    let status = resp.status().as_u16();
    // An event stream never ends by itself: its status is the answer (dropping it disconnects).
    if crate::common::header(&resp, "content-type") == "text/event-stream" {
        return Answer {
            status,
            body: Value::Null,
        };
    }
    let text = resp.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// Operations in a fixed order, the chaos routes last (a reset closes the Redis connections).
fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
    let mut ops: Vec<(String, String, &Value)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .map(move |(method, op)| (path.clone(), method.clone(), op))
        })
        .collect();
    ops.sort_by_key(|(path, method, _)| (path.starts_with("/chaos"), path.clone(), method.clone()));
    ops
}

fn documented(op: &Value, status: u16) -> bool {
    op["responses"].get(status.to_string()).is_some()
}

/// Every error a route documents has the one error body (`/ready`'s 503 is its readiness body).
fn error_bodies_are_error_body(path: &str, method: &str, op: &Value) {
    if path == "/ready" {
        return;
    }
    for (status, response) in op["responses"].as_object().unwrap() {
        if status.starts_with('4') || status.starts_with('5') {
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/ErrorBody",
                "{method} {path} {status}"
            );
        }
    }
}

#[tokio::test]
async fn every_operation_accepts_what_its_schema_allows_and_rejects_the_rest_with_400() {
    let redis = RedisServer::start();
    let settings = crate::common::settings(&[
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &redis.addr()),
        ("APP__API__RATE_LIMIT__ENABLED", "false"),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
        // The webhook schema's example host, so a valid webhook job is accepted.
        ("APP__JOBQUEUE__WEBHOOK__ALLOWED_HOSTS", "hooks.example.com"),
        ("APP__JOBQUEUE__ENQUEUE_TIMEOUT", "5s"),
    ]);
    let registry = Registry::production(&settings.jobqueue).with(thumbnail::Thumbnail);
    let app = crate::common::spawn_app_with_registry(settings, registry).await;
    let spec: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    // The example type is documented like a production one, so the walk below covers it.
    assert_eq!(
        spec["components"]["schemas"]["JobRequest"]["discriminator"]["mapping"]["media:thumbnail"],
        "#/components/schemas/ThumbnailJobRequest"
    );
    assert_eq!(
        spec["components"]["schemas"]["ThumbnailPayload"]["properties"]["width"]["minimum"],
        1
    );
    let gen = Gen { spec: &spec };
    let http = walk_client();
    let mut failures = Vec::new();
    let (mut sent_valid, mut sent_invalid) = (0, 0);
    for (path, method, op) in operations(&spec) {
        error_bodies_are_error_body(&path, &method, op);
        let (valid, invalid) = calls(&gen, op);
        assert!(
            !valid.is_empty(),
            "{method} {path}: nothing valid generated"
        );
        assert!(
            invalid.is_empty() || documented(op, 400),
            "{method} {path} takes input but documents no 400"
        );
        for call in &valid {
            let got = send(&http, &app, &method, &path, call).await;
            sent_valid += 1;
            // Not 400 (the schema allowed it), not 5xx, and a status the route documents.
            if got.status == 400 || got.status >= 500 || !documented(op, got.status) {
                failures.push(format!(
                    "valid {method} {path} [{}] {:?} → {} {}",
                    call.what, call.query, got.status, got.body
                ));
            }
        }
        for call in &invalid {
            let got = send(&http, &app, &method, &path, call).await;
            sent_invalid += 1;
            let error_body = got.body["code"] == 400
                && got.body["message"].as_str().is_some_and(|m| !m.is_empty());
            if got.status != 400 || !error_body {
                failures.push(format!(
                    "invalid {method} {path} [{}] {:?} → {} {}",
                    call.what, call.query, got.status, got.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests broke the spec:\n{}",
        failures.len(),
        sent_valid + sent_invalid,
        failures.join("\n")
    );
    eprintln!("walked: {sent_valid} valid, {sent_invalid} invalid");
    // The walk really covered the api: many bodies and parameters on both sides.
    assert!(
        sent_valid > 100 && sent_invalid > 100,
        "{sent_valid} valid, {sent_invalid} invalid"
    );
}

/// The README's example type runs as written: its payload (the schema's example) passes the
/// registry's check and its `run` succeeds.
#[tokio::test]
async fn the_readme_job_type_example_runs() {
    let registry = Registry::empty().with(thumbnail::Thumbnail);
    let payload = json!({"image_url": "https://images.example.com/cat.png", "width": 256.0});
    registry.validate("media:thumbnail", &payload).unwrap();
    let zero = registry
        .validate(
            "media:thumbnail",
            &json!({"image_url": "https://x/", "width": 0}),
        )
        .unwrap_err()
        .to_string();
    assert!(zero.contains("payload.width"), "{zero}");
    let ctx = JobContext::new("01JDQ2X7Q9W5K8M3N4P6R7S8T9", 1);
    let typed = serde_json::from_value(json!({"image_url": "https://x/", "width": 256})).unwrap();
    let result = thumbnail::Thumbnail.run(typed, &ctx).await.unwrap();
    assert_eq!(result.thumbnail_url, "https://x/");
    assert_eq!(
        registry.default_timeout("media:thumbnail"),
        Some(std::time::Duration::from_secs(30))
    );
}
