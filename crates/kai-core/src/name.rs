//! Module names: `[a-z0-9][a-z0-9-]{0,62}`. They become directory names, topic names and URL
//! segments, so nothing else gets through.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModuleName(String);

impl ModuleName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a module name, with a message that says what would be right.
pub fn check(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(80).collect();
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() {
        Err("module name is empty".into())
    } else if name.len() > 63 {
        Err(format!(
            "module name `{shown}` is longer than 63 characters"
        ))
    } else if !ok_first || !ok_rest {
        Err(format!(
            "invalid module name `{shown}`: use lowercase letters, digits and `-`, starting with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

impl std::str::FromStr for ModuleName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        check(name).map(|()| ModuleName(name.to_owned()))
    }
}

impl TryFrom<String> for ModuleName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        check(&name).map(|()| ModuleName(name))
    }
}

impl From<ModuleName> for String {
    fn from(n: ModuleName) -> String {
        n.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ModuleName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["pr-review", "a", "0", "ci-watcher-2", &"a".repeat(63)] {
            assert!(ok.parse::<ModuleName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "-a",
            "A",
            "pr_review",
            "../etc",
            "%2e%2e",
            "a b",
            "é",
            &"a".repeat(64),
            "a/b",
            ".",
        ] {
            assert!(bad.parse::<ModuleName>().is_err(), "{bad}");
        }
    }
}
