//! Journal entries: one JSON file per run outcome, under `modules/<name>/events/`. This module
//! says what an entry holds and how its file is named; writing it is the store's job.

use chrono::{DateTime, SecondsFormat, Utc};
use kai_sdk::Question;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a run ended, as the journal records it. The first four come from the module; the host
/// adds `timeout` (killed after `timeout` or `idle_timeout`) and `interrupted` (kai stopped or
/// crashed while the run was in flight and it was not retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalStatus {
    Done,
    Paused,
    Error,
    Skipped,
    Timeout,
    Interrupted,
    /// A question closed unanswered at its expiry, with no default to go on with.
    Expired,
}

impl JournalStatus {
    pub const ALL: [JournalStatus; 7] = [
        JournalStatus::Done,
        JournalStatus::Paused,
        JournalStatus::Error,
        JournalStatus::Skipped,
        JournalStatus::Timeout,
        JournalStatus::Interrupted,
        JournalStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JournalStatus::Done => "done",
            JournalStatus::Paused => "paused",
            JournalStatus::Error => "error",
            JournalStatus::Skipped => "skipped",
            JournalStatus::Timeout => "timeout",
            JournalStatus::Interrupted => "interrupted",
            JournalStatus::Expired => "expired",
        }
    }

    /// Failures count as errors for `notify:` and for the 24-hour failure counts.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            JournalStatus::Error | JournalStatus::Timeout | JournalStatus::Interrupted
        )
    }
}

impl std::str::FromStr for JournalStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        JournalStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status `{s}`: one of done, paused, error, skipped, timeout, interrupted, expired")
            })
    }
}

impl std::fmt::Display for JournalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One journal file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct JournalEntry {
    pub run_id: String,
    #[serde(with = "seconds")]
    pub timestamp: DateTime<Utc>,
    pub module: String,
    pub trigger: String,
    pub delivery_id: Option<String>,
    pub entity: String,
    pub chat_id: Option<i64>,
    pub status: JournalStatus,
    pub summary: String,
    pub duration_seconds: f64,
    pub attempt: u32,
    #[serde(default)]
    pub details: Value,
    /// Why a run failed, in words (exit code, timeout, bad output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The end of the module's standard error, kept when the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// The module asked for another attempt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
    /// The question of a paused run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
}

impl JournalEntry {
    /// `details.cost_usd`, when the module reported one.
    pub fn cost_usd(&self) -> f64 {
        self.details
            .get("cost_usd")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c > 0.0)
            .unwrap_or(0.0)
    }

    /// The file name for this entry; `n` > 1 adds the suffix that keeps two runs of the same
    /// entity in the same second apart.
    pub fn file_name(&self, n: u32) -> String {
        file_name(self.timestamp, &self.entity, n)
    }
}

/// RFC 3339 in UTC to the second, as the SPEC's example: `2026-04-04T14:23:01Z`.
mod seconds {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// The entity as it appears in file names: `octo/repo#42` is `octo-repo_42`.
pub fn entity_slug(entity: &str) -> String {
    let mut slug: String = entity
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            '#' | '@' | ':' | ' ' | '_' => '_',
            _ => '-',
        })
        .take(80)
        .collect();
    while slug.starts_with('.') {
        slug.remove(0);
    }
    if slug.is_empty() {
        slug.push('-');
    }
    slug
}

/// `2026-04-04T14:23:01_octo-repo_42.json`, or `..._42_2.json` for the second one that second.
pub fn file_name(timestamp: DateTime<Utc>, entity: &str, n: u32) -> String {
    let stamp = timestamp.format("%Y-%m-%dT%H:%M:%S");
    let slug = entity_slug(entity);
    if n <= 1 {
        format!("{stamp}_{slug}.json")
    } else {
        format!("{stamp}_{slug}_{n}.json")
    }
}

/// The timestamp part of a journal file name (`2026-04-04T14:23:01`), when it is one.
pub fn file_timestamp(name: &str) -> Option<&str> {
    let stamp = name.get(..19)?;
    let ok = name.ends_with(".json")
        && name.as_bytes().get(19) == Some(&b'_')
        && stamp.as_bytes()[10] == b'T';
    ok.then_some(stamp)
}

/// Whether a journal file name can belong to an entity with this slug: `<stamp>_<slug>.json`
/// or `<stamp>_<slug>_<n>.json`. (Slugs are lossy: read the file to be sure.)
pub fn name_has_slug(name: &str, slug: &str) -> bool {
    let Some(rest) = name.get(20..).and_then(|r| r.strip_suffix(".json")) else {
        return false;
    };
    match rest.strip_prefix(slug) {
        Some("") => true,
        Some(tail) => tail
            .strip_prefix('_')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// A timestamp in the same form as [`file_timestamp`] gives, for comparisons by name.
pub fn stamp_of(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)[..19].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn names_follow_the_spec() {
        let t = Utc.with_ymd_and_hms(2026, 4, 4, 14, 23, 1).unwrap();
        assert_eq!(
            file_name(t, "octo/repo#42", 1),
            "2026-04-04T14:23:01_octo-repo_42.json"
        );
        assert_eq!(
            file_name(t, "octo/repo#42", 2),
            "2026-04-04T14:23:01_octo-repo_42_2.json"
        );
        assert_eq!(
            file_name(t, "octo/repo@main", 1),
            "2026-04-04T14:23:01_octo-repo_main.json"
        );
        assert_eq!(
            file_name(t, "../../etc/passwd", 1),
            "2026-04-04T14:23:01_-..-etc-passwd.json"
        );
        assert_eq!(
            file_timestamp("2026-04-04T14:23:01_octo-repo_42.json"),
            Some("2026-04-04T14:23:01")
        );
        assert_eq!(file_timestamp(".tmp-x"), None);
        assert_eq!(stamp_of(t), "2026-04-04T14:23:01");
    }

    #[test]
    fn slugs_never_escape_or_hide() {
        for entity in ["..", "../x", "/", "", ".hidden", "a\0b"] {
            let slug = entity_slug(entity);
            assert!(
                !slug.contains('/') && !slug.starts_with('.') && !slug.is_empty(),
                "{entity:?} -> {slug}"
            );
        }
    }

    #[test]
    fn an_entry_round_trips_with_second_precision() {
        let entry = JournalEntry {
            run_id: "r_1".into(),
            timestamp: Utc.with_ymd_and_hms(2026, 4, 4, 14, 23, 1).unwrap(),
            module: "m".into(),
            trigger: "invoke".into(),
            delivery_id: Some("d".into()),
            entity: "e".into(),
            chat_id: None,
            status: JournalStatus::Done,
            summary: "ok".into(),
            duration_seconds: 0.5,
            attempt: 1,
            details: serde_json::json!({"cost_usd": 0.25}),
            error: None,
            stderr_tail: None,
            retry: false,
            question: None,
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert!(
            text.contains(r#""timestamp":"2026-04-04T14:23:01Z""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<JournalEntry>(&text).unwrap(), entry);
        assert_eq!(entry.cost_usd(), 0.25);
    }
}
