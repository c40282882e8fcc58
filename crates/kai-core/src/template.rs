//! Entity templates: `{repository.full_name}#{pull_request.number}` rendered over a payload.
//! `{{` and `}}` stand for literal braces. A path is dot-separated keys; a numeric key also
//! indexes an array.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntityTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Vec<String>),
}

/// Longest entity kept; longer ones are cut (entities are short keys, not documents).
pub const MAX_ENTITY_CHARS: usize = 200;

impl EntityTemplate {
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut path = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => path.push(c),
                            None => {
                                return Err(format!(
                                    "entity template `{source}` has a `{{` without its `}}`"
                                ))
                            }
                        }
                    }
                    let keys: Vec<String> = path.split('.').map(|k| k.trim().to_owned()).collect();
                    let good_key = |k: &String| {
                        !k.is_empty()
                            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    };
                    if !keys.iter().all(good_key) {
                        return Err(format!(
                            "entity template `{source}`: `{{{path}}}` is not a field path such as {{pull_request.number}}"
                        ));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(keys));
                }
                '}' => {
                    return Err(format!(
                        "entity template `{source}` has a `}}` without its `{{` (write `}}}}` for a literal brace)"
                    ))
                }
                c if c.is_control() => {
                    return Err(format!("entity template `{source}` contains a control character"))
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if parts.is_empty() {
            return Err("entity template is empty".into());
        }
        Ok(EntityTemplate {
            source: source.to_owned(),
            parts,
        })
    }

    /// Renders the template over `payload`; a missing field or one that is not a string,
    /// number or boolean is an error naming the field.
    pub fn render(&self, payload: &Value) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(keys) => {
                    let path = keys.join(".");
                    match lookup(payload, keys) {
                        Some(Value::String(s)) => out.push_str(s),
                        Some(Value::Number(n)) => out.push_str(&n.to_string()),
                        Some(Value::Bool(b)) => out.push_str(&b.to_string()),
                        Some(_) => {
                            return Err(format!("payload field {path} is not a string or number"))
                        }
                        None => return Err(format!("payload has no field {path}")),
                    }
                }
            }
        }
        Ok(clean_entity(&out))
    }
}

/// Follows dot-separated keys through objects and arrays.
pub fn lookup<'a, S: AsRef<str>>(value: &'a Value, keys: &[S]) -> Option<&'a Value> {
    keys.iter().try_fold(value, |v, k| match v {
        Value::Object(map) => map.get(k.as_ref()),
        Value::Array(items) => k.as_ref().parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// An entity as stored: control characters dropped, at most [`MAX_ENTITY_CHARS`].
pub fn clean_entity(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ENTITY_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

impl TryFrom<String> for EntityTemplate {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        EntityTemplate::parse(&s)
    }
}

impl From<EntityTemplate> for String {
    fn from(t: EntityTemplate) -> String {
        t.source
    }
}

impl fmt::Display for EntityTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_and_text() {
        let t = EntityTemplate::parse("{repository.full_name}#{pull_request.number}").unwrap();
        let payload =
            json!({"repository": {"full_name": "octo/repo"}, "pull_request": {"number": 42}});
        assert_eq!(t.render(&payload).unwrap(), "octo/repo#42");
        let t = EntityTemplate::parse("{{x}} {commits.0.id}").unwrap();
        assert_eq!(
            t.render(&json!({"commits": [{"id": "abc"}]})).unwrap(),
            "{x} abc"
        );
    }

    #[test]
    fn names_the_missing_field() {
        let t = EntityTemplate::parse("{repository.full_name}#{pull_request.number}").unwrap();
        let err = t
            .render(&json!({"repository": {"full_name": "o/r"}}))
            .unwrap_err();
        assert_eq!(err, "payload has no field pull_request.number");
        let err = t
            .render(&json!({"repository": {"full_name": {}}}))
            .unwrap_err();
        assert_eq!(
            err,
            "payload field repository.full_name is not a string or number"
        );
    }

    #[test]
    fn hostile_values_are_tamed() {
        let t = EntityTemplate::parse("{title}").unwrap();
        let long = "x".repeat(10_000);
        assert_eq!(
            t.render(&json!({"title": long})).unwrap().len(),
            MAX_ENTITY_CHARS
        );
        assert_eq!(t.render(&json!({"title": "a\nb\u{0}c"})).unwrap(), "abc");
    }

    #[test]
    fn refuses_malformed_templates() {
        for bad in ["", "{", "{a", "a}", "{}", "{a..b}", "{a b}"] {
            assert!(EntityTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }
}
