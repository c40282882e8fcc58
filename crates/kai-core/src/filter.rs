//! `where:` filters of a webhook trigger: each key is a dot-separated path into the payload,
//! each value one allowed value or a list of them. Strings may use `*` as a wildcard. Every key
//! must match for the trigger to match.
//!
//! Three short keys stand for the GitHub fields people filter on most: `repository` is
//! `repository.full_name`, `sender` is `sender.login`, `draft` is `pull_request.draft`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::lookup;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(try_from = "BTreeMap<String, Value>", into = "BTreeMap<String, Value>")]
pub struct Filters(Vec<Filter>);

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    key: String,
    path: Vec<String>,
    allowed: Vec<Value>,
}

fn expand(key: &str) -> &str {
    match key {
        "repository" => "repository.full_name",
        "sender" => "sender.login",
        "draft" => "pull_request.draft",
        other => other,
    }
}

impl TryFrom<BTreeMap<String, Value>> for Filters {
    type Error = String;

    fn try_from(map: BTreeMap<String, Value>) -> Result<Self, String> {
        let mut filters = Vec::new();
        for (key, value) in map {
            let path: Vec<String> = expand(&key).split('.').map(str::to_owned).collect();
            if path.iter().any(|k| k.is_empty()) {
                return Err(format!(
                    "where: `{key}` is not a field path such as pull_request.draft"
                ));
            }
            let allowed = match value {
                Value::Array(items) => items,
                other => vec![other],
            };
            if allowed.is_empty() {
                return Err(format!("where: `{key}` lists no allowed value"));
            }
            if let Some(bad) = allowed.iter().find(|v| v.is_object() || v.is_array()) {
                return Err(format!(
                    "where: `{key}` allows {bad}, but only strings, numbers, booleans and null can be compared"
                ));
            }
            filters.push(Filter { key, path, allowed });
        }
        Ok(Filters(filters))
    }
}

impl From<Filters> for BTreeMap<String, Value> {
    fn from(f: Filters) -> Self {
        f.0.into_iter()
            .map(|f| {
                let value = match f.allowed.as_slice() {
                    [one] => one.clone(),
                    many => Value::Array(many.to_vec()),
                };
                (f.key, value)
            })
            .collect()
    }
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when every filter matches; otherwise the first mismatch, in words.
    pub fn check(&self, payload: &Value) -> Result<(), String> {
        for f in &self.0 {
            let path = f.path.join(".");
            let Some(actual) = lookup(payload, &f.path) else {
                return Err(format!("where {}: payload has no {path}", f.key));
            };
            if !f.allowed.iter().any(|want| value_matches(want, actual)) {
                let shown: String = actual.to_string().chars().take(80).collect();
                return Err(format!("where {}: {path} is {shown}", f.key));
            }
        }
        Ok(())
    }
}

fn value_matches(want: &Value, actual: &Value) -> bool {
    match (want, actual) {
        (Value::String(pattern), Value::String(s)) => wildcard(pattern, s),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == actual,
    }
}

/// `*` matches any run of characters, everything else itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filters(v: Value) -> Filters {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("owner/*", "owner/repo"));
        assert!(!wildcard("owner/*", "other/repo"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a*b*c", "aXbYc"));
        assert!(!wildcard("a*b*c", "aXbY"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("exact", "exactly"));
        assert!(!wildcard("ab*ba", "aba"));
    }

    #[test]
    fn short_keys_and_lists() {
        let f = filters(json!({"repository": ["owner/*", "x/y"], "draft": false}));
        let pr = |repo: &str, draft: bool| json!({"repository": {"full_name": repo}, "pull_request": {"draft": draft}});
        assert_eq!(f.check(&pr("owner/a", false)), Ok(()));
        assert_eq!(f.check(&pr("x/y", false)), Ok(()));
        assert_eq!(
            f.check(&pr("owner/a", true)),
            Err("where draft: pull_request.draft is true".into())
        );
        assert_eq!(
            f.check(&pr("z/z", false)),
            Err("where repository: repository.full_name is \"z/z\"".into())
        );
        assert_eq!(
            f.check(&json!({})),
            Err("where draft: payload has no pull_request.draft".into())
        );
    }

    #[test]
    fn refuses_what_cannot_be_compared() {
        let err =
            Filters::try_from(BTreeMap::from([("a".to_string(), json!({"b": 1}))])).unwrap_err();
        assert_eq!(err, "where: `a` allows {\"b\":1}, but only strings, numbers, booleans and null can be compared");
        assert!(Filters::try_from(BTreeMap::from([("a..b".to_string(), json!(1))])).is_err());
        assert!(Filters::try_from(BTreeMap::from([("a".to_string(), json!([]))])).is_err());
    }
}
