//! A task's interface: the JSON Schemas of its input and output, as its
//! component's `describe` export gives them (`cairn:task` 0.1.3), and the
//! check of a document against a schema.
//!
//! The check covers what the SDKs generate (and what hand-written schemas
//! commonly use): `type` (one or a list), `properties`, `required`,
//! `additionalProperties` (a boolean or a schema), `items`, `prefixItems`,
//! `enum`, `const`, `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum`, `minLength`, `maxLength`, `minItems`, `maxItems`,
//! `anyOf`, `oneOf` (as `anyOf`), `allOf`, and `$ref` to `#/$defs/…` or
//! `#/definitions/…`. Other keywords are ignored: a schema never rejects a
//! document for a keyword it does not know.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// A task's interface.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInterface {
    /// The input's schema (`true`: anything).
    pub input: Value,
    /// The output's schema.
    pub output: Value,
    /// sha256 of the canonical interface document, hex: what cache keys include.
    pub hash: String,
}

/// Why an interface document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the task's interface is not usable: {0}")]
pub struct InterfaceError(pub String);

impl TaskInterface {
    /// Reads `describe`'s document: `{"input": SCHEMA, "output": SCHEMA}`.
    pub fn parse(text: &str) -> Result<TaskInterface, InterfaceError> {
        let value: Value = serde_json::from_str(text).map_err(|e| InterfaceError(format!("not JSON: {e}")))?;
        let Value::Object(object) = &value else {
            return Err(InterfaceError("expected an object with `input` and `output` schemas".into()));
        };
        let schema = |key: &str| match object.get(key) {
            None => Ok(Value::Bool(true)),
            Some(s @ (Value::Object(_) | Value::Bool(_))) => Ok(s.clone()),
            Some(other) => Err(InterfaceError(format!("`{key}` is not a schema (an object or a boolean): {other}"))),
        };
        let (input, output) = (schema("input")?, schema("output")?);
        // serde_json's maps are sorted: this text is canonical.
        let canonical = serde_json::json!({"input": input, "output": output}).to_string();
        let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
        Ok(TaskInterface { input, output, hash })
    }

    /// The interface as one JSON document.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"input": self.input, "output": self.output, "hash": self.hash})
    }
}

/// One way a document does not fit: where (`topics[2].name`; empty for the
/// whole) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The path of the bad field.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Schema-and-value checks one input may cost, and how deep they may nest:
/// a schema that refers to itself through alternatives without end stops
/// here, with a problem of its own, never with the host's stack.
const MAX_STEPS: u64 = 200_000;
const MAX_DEPTH: u32 = 256;

/// The problems of `value` against `schema` (none: it fits), at most 20.
pub fn check(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut checker = Checker::new(schema);
    checker.check(schema, value, "", &mut problems);
    if checker.exhausted {
        problems.push(Problem {
            path: String::new(),
            message: format!(
                "checking it against the task's schema took more than {MAX_STEPS} steps or {MAX_DEPTH} levels (does the schema refer to itself without end?)"
            ),
        });
    }
    problems.truncate(20);
    problems
}

struct Checker<'a> {
    root: &'a Value,
    /// Each (schema, value) pair checked: a pair met again (a `$ref` cycle,
    /// or a schema reached twice) adds nothing, so it is not checked again
    /// and the work stays linear in schema and document.
    done: std::collections::HashSet<(usize, usize)>,
    /// Checks made, alternatives included, and how deep they are nested now.
    steps: u64,
    depth: u32,
    exhausted: bool,
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn fits_type(value: &Value, name: &str) -> bool {
    match name {
        "number" => value.is_number(),
        // 3.0 is an integer to JSON Schema.
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => type_of(value) == other,
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 60 { text } else { format!("{}…", text.chars().take(57).collect::<String>()) }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

impl<'a> Checker<'a> {
    fn new(root: &'a Value) -> Self {
        Checker { root, done: std::collections::HashSet::new(), steps: 0, depth: 0, exhausted: false }
    }

    fn check(&mut self, schema: &Value, value: &Value, path: &str, problems: &mut Vec<Problem>) {
        self.steps += 1;
        if self.exhausted || self.steps > MAX_STEPS || self.depth >= MAX_DEPTH {
            self.exhausted = true;
            return;
        }
        self.depth += 1;
        self.check_here(schema, value, path, problems);
        self.depth -= 1;
    }

    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn check_here(&mut self, schema: &Value, value: &Value, path: &str, problems: &mut Vec<Problem>) {
        let mut fail = |message: String| problems.push(Problem { path: path.to_owned(), message });
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return fail("no value is allowed here".into()),
            Value::Object(object) => object,
            _ => return,
        };
        if !self.done.insert((std::ptr::from_ref(schema) as usize, std::ptr::from_ref(value) as usize)) {
            return;
        }
        if let Some(Value::String(reference)) = schema.get("$ref") {
            match self.resolve(reference) {
                Some(target) => self.check(target, value, path, problems),
                None => problems.push(Problem {
                    path: path.to_owned(),
                    message: format!("the schema's $ref {reference:?} leads nowhere"),
                }),
            }
        }
        let mut fail = |message: String| problems.push(Problem { path: path.to_owned(), message });
        match schema.get("type") {
            Some(Value::String(name)) if !fits_type(value, name) => {
                return fail(format!("expected {name}, got {} {}", type_of(value), short(value)));
            }
            Some(Value::Array(names)) if !names.iter().any(|n| n.as_str().is_some_and(|n| fits_type(value, n))) => {
                let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                return fail(format!("expected {}, got {} {}", names.join(" or "), type_of(value), short(value)));
            }
            _ => {}
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            let shown: Vec<String> = allowed.iter().map(short).collect();
            fail(format!("expected one of {}, got {}", shown.join(", "), short(value)));
        }
        if let Some(expected) = schema.get("const")
            && expected != value
        {
            fail(format!("expected {}, got {}", short(expected), short(value)));
        }
        self.bounds(schema, value, path, problems);
        self.combinations(schema, value, path, problems);
        match value {
            Value::Object(object) => self.object(schema, object, path, problems),
            Value::Array(items) => self.array(schema, items, path, problems),
            _ => {}
        }
    }

    fn bounds(&self, schema: &Map<String, Value>, value: &Value, path: &str, problems: &mut Vec<Problem>) {
        let mut fail = |message: String| problems.push(Problem { path: path.to_owned(), message });
        let limit = |key: &str| schema.get(key).and_then(Value::as_f64);
        if let Some(n) = value.as_f64() {
            if let Some(min) = limit("minimum").filter(|min| n < *min) {
                fail(format!("must be at least {min}, got {n}"));
            }
            if let Some(max) = limit("maximum").filter(|max| n > *max) {
                fail(format!("must be at most {max}, got {n}"));
            }
            if let Some(min) = limit("exclusiveMinimum").filter(|min| n <= *min) {
                fail(format!("must be more than {min}, got {n}"));
            }
            if let Some(max) = limit("exclusiveMaximum").filter(|max| n >= *max) {
                fail(format!("must be less than {max}, got {n}"));
            }
        }
        let count = match value {
            Value::String(s) => Some((s.chars().count() as f64, "characters", "Length")),
            Value::Array(items) => Some((items.len() as f64, "items", "Items")),
            _ => None,
        };
        if let Some((n, unit, key)) = count {
            if let Some(min) = limit(&format!("min{key}")).filter(|min| n < *min) {
                fail(format!("must have at least {min} {unit}, got {n}"));
            }
            if let Some(max) = limit(&format!("max{key}")).filter(|max| n > *max) {
                fail(format!("must have at most {max} {unit}, got {n}"));
            }
        }
    }

    fn combinations(&mut self, schema: &Map<String, Value>, value: &Value, path: &str, problems: &mut Vec<Problem>) {
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(options)) = schema.get(key) {
                // Each alternative is tried afresh (what another found says nothing
                // of it), on the same budget of steps and depth.
                let fits = options.iter().any(|option| {
                    let mut attempt = Vec::new();
                    let outer = std::mem::take(&mut self.done);
                    self.check(option, value, path, &mut attempt);
                    self.done = outer;
                    attempt.is_empty()
                });
                if !fits {
                    problems.push(Problem {
                        path: path.to_owned(),
                        message: format!("{} fits none of the {} allowed forms", short(value), options.len()),
                    });
                }
            }
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for part in all {
                self.check(part, value, path, problems);
            }
        }
    }

    fn object(
        &mut self,
        schema: &Map<String, Value>,
        object: &Map<String, Value>,
        path: &str,
        problems: &mut Vec<Problem>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    problems.push(Problem { path: join(path, name), message: "field required".into() });
                }
            }
        }
        for (key, item) in object {
            let at = join(path, key);
            match properties.and_then(|p| p.get(key)) {
                Some(property) => self.check(property, item, &at, problems),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        problems.push(Problem { path: at, message: "is not a field of this object".into() })
                    }
                    Some(extra @ Value::Object(_)) => self.check(extra, item, &at, problems),
                    _ => {}
                },
            }
        }
    }

    fn array(&mut self, schema: &Map<String, Value>, items: &[Value], path: &str, problems: &mut Vec<Problem>) {
        let prefix = schema.get("prefixItems").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            if let Some(each) = prefix.get(i).or_else(|| schema.get("items")) {
                self.check(each, item, &at, problems);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(schema: Value, value: Value) -> Vec<String> {
        check(&schema, &value).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_bad_field_is_named_by_its_path() {
        let schema = json!({
            "type": "object",
            "required": ["topics"],
            "properties": {
                "topics": {"type": "array", "items": {"$ref": "#/$defs/Topic"}, "minItems": 1},
                "rounds": {"type": "integer", "minimum": 1, "maximum": 5},
            },
            "additionalProperties": false,
            "$defs": {"Topic": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}}},
        });
        assert!(problems(schema.clone(), json!({"topics": [{"name": "Tides"}], "rounds": 3})).is_empty());
        assert_eq!(
            problems(schema.clone(), json!({"topics": [{"name": "Tides"}, {"name": 3}], "rounds": 9, "x": 1})),
            [
                "rounds: must be at most 5, got 9",
                "topics[1].name: expected string, got integer 3",
                "x: is not a field of this object",
            ]
        );
        assert_eq!(problems(schema.clone(), json!({})), ["topics: field required"]);
        assert_eq!(problems(schema, json!([])), ["expected object, got array []"]);
    }

    #[test]
    fn types_enums_and_alternatives() {
        assert!(problems(json!({"type": "integer"}), json!(3.0)).is_empty(), "3.0 is an integer");
        assert!(problems(json!({"type": ["string", "null"]}), json!(null)).is_empty());
        assert_eq!(problems(json!({"enum": ["a", "b"]}), json!("c")), ["expected one of \"a\", \"b\", got \"c\""]);
        let either = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
        assert!(problems(either.clone(), json!(1)).is_empty());
        assert_eq!(problems(either, json!(true)), ["true fits none of the 2 allowed forms"]);
        assert!(problems(json!(true), json!({"anything": 1})).is_empty());
        assert_eq!(problems(json!({"$ref": "#/nowhere"}), json!(1)), ["the schema's $ref \"#/nowhere\" leads nowhere"]);
        // A schema that refers to itself stops.
        let looped = json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
        assert!(problems(looped, json!(1)).is_empty());
        // A schema that is its own items: each node of a document is checked a few times, not exponentially.
        let tree = json!({"$ref": "#", "type": ["array", "integer"], "items": {"$ref": "#"}});
        assert!(problems(tree.clone(), json!([[1, [2]], 3])).is_empty());
        assert_eq!(
            problems(tree.clone(), json!([[1, ["x"]]])),
            ["[0][1][0]: expected array or integer, got string \"x\""]
        );
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert!(problems(tree, deep.clone()).is_empty());
        // Alternatives that refer back without end: stopped, with a problem, not a crash.
        let endless = json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]});
        let said = problems(endless, deep);
        assert!(said.iter().any(|p| p.contains("refer to itself without end")), "{said:?}");
    }

    #[test]
    fn an_interface_is_hashed_canonically() {
        let a = TaskInterface::parse(r#"{"output": {"type": "object"}, "input": {"type": "string"}}"#).unwrap();
        let b = TaskInterface::parse(r#"{ "input": {"type":"string"}, "output": {"type":"object"} }"#).unwrap();
        assert_eq!(a.hash, b.hash);
        assert_eq!(TaskInterface::parse("{}").unwrap().input, json!(true));
        assert!(TaskInterface::parse(r#"{"input": 3}"#).is_err());
        assert!(TaskInterface::parse("nope").is_err());
    }
}
