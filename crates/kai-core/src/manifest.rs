//! `module.yaml`, parsed into types. Everything a manifest can say is checked here, so that a
//! manifest that loads is one kai can act on. Every error names the file, the line when one is
//! known, and what is wrong.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::duration::Duration;
use crate::filter::Filters;
use crate::name::ModuleName;
use crate::template::EntityTemplate;

/// A manifest that failed to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    pub file: String,
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ManifestError {}

/// A module's manifest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: ModuleName,
    #[serde(default = "default_version")]
    pub version: Version,
    pub description: Description,
    pub run: Argv,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityTemplate>,
    #[serde(default = "default_timeout")]
    pub timeout: Timeout,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Timeout>,
    #[serde(default)]
    pub concurrency: Concurrency,
    #[serde(default)]
    pub per_entity: PerEntity,
    #[serde(default)]
    pub cooldown: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default)]
    pub notify: Notify,
    #[serde(default)]
    pub settings: Map<String, Value>,
    #[serde(default)]
    pub env: Vec<EnvName>,
    /// `false` loads the module but starts no run of it until it is enabled.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_version() -> Version {
    Version("0.0.0".into())
}

fn default_timeout() -> Timeout {
    Timeout(Duration::from_secs(600))
}

fn yes() -> bool {
    true
}

impl Manifest {
    /// Parses a manifest's text. `file` is the name errors carry.
    pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestError> {
        serde_saphyr::from_str::<Manifest>(text).map_err(|e| {
            let e = e.without_snippet();
            let mut line = e.location().map(|l| l.line()).filter(|&l| l > 0);
            let rendered = e.render_with_formatter(&serde_saphyr::UserMessageFormatter);
            let mut message = plain_words(strip_position(&rendered));
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|k| k.strip_suffix('`'))
                .filter(|k| ["name", "description", "run"].contains(k))
                .map(str::to_owned);
            if let Some(key) = missing {
                // The parser points at the mapping's last key, which is not where anything is.
                line = None;
                message =
                    format!("`{key}` is missing: every manifest needs name, description and run");
            }
            ManifestError {
                file: file.to_owned(),
                line,
                message,
            }
        })
    }

    /// The entity of a run, from the template over `payload`; `fallback` when the manifest has
    /// no template.
    pub fn entity_for(&self, payload: &Value, fallback: &str) -> Result<String, String> {
        match &self.entity {
            Some(t) => t.render(payload),
            None => Ok(fallback.to_owned()),
        }
    }
}

/// serde-saphyr puts the position in its messages ("line L column C: ..." before, or
/// "... at line L, column C" after), which our `file:line:` format already carries.
fn strip_position(message: &str) -> &str {
    let first_line = message.lines().next().unwrap_or(message);
    let mut rest = first_line.strip_prefix("error: ").unwrap_or(first_line);
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if let Some(after) = rest.strip_prefix("line ") {
        if let Some(idx) = after.find(": ") {
            if after[..idx].split(" column ").all(digits) {
                rest = &after[idx + 2..];
            }
        }
    }
    if let Some(idx) = rest.rfind(" at line ") {
        if rest[idx + 9..].split(", column ").all(digits) {
            rest = &rest[..idx];
        }
    }
    rest
}

/// The YAML parser's terse words for type mismatches, said for module authors.
fn plain_words(message: &str) -> String {
    match message {
        "expected sequence start" => "expected a list here, such as [a, b]".into(),
        "expected mapping start" => "expected keys here (key: value)".into(),
        "invalid i64" | "invalid u64" | "invalid i32" | "invalid u32" => {
            "expected a whole number".into()
        }
        "invalid floating point" | "invalid f64" => "expected a number".into(),
        "unexpected end of file" | "unexpected end of input" => {
            "the manifest is empty: it needs name, description and run".into()
        }
        m if m.starts_with("invalid boolean") => "expected true or false".into(),
        m => m.to_owned(),
    }
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s).map(|()| $name(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// `version: "1.2.0"`: free-form, one short line.
    Version,
    |s| {
        if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
            Err(format!("version `{}` must be one line of 1 to 64 characters", s.escape_debug()))
        } else {
            Ok(())
        }
    }
);

checked_string!(
    /// One line saying what the module does.
    Description,
    |s| {
        if s.trim().is_empty() {
            Err("description is empty: say in one line what the module does".into())
        } else if s.chars().count() > 500 {
            Err("description is longer than 500 characters".into())
        } else {
            Ok(())
        }
    }
);

checked_string!(
    /// A variable passed through from the host (`env:`).
    EnvName,
    |s| {
        const SET_BY_KAI: [&str; 7] = [
            "KAI_PROTOCOL",
            "KAI_MODULE",
            "KAI_RUN_ID",
            "KAI_MODULE_DIR",
            "KAI_API_URL",
            "KAI_RUN_TOKEN",
            "KAI_CLAUDE_BIN",
        ];
        let shape = s.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !shape || s.len() > 128 {
            Err(format!(
                "env: `{}` is not a variable name (upper-case letters, digits, `_`)",
                s.escape_debug()
            ))
        } else if SET_BY_KAI.contains(&s) {
            Err(format!("env: {s} is set by kai for every run and cannot be passed through"))
        } else if s == "KAI_API_TOKEN" {
            Err("env: KAI_API_TOKEN is the admin token and is never given to modules; a run has KAI_RUN_TOKEN".into())
        } else {
            Ok(())
        }
    }
);

/// `run:` — the program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Argv(Vec<String>);

impl Argv {
    pub fn program(&self) -> &str {
        &self.0[0]
    }

    pub fn args(&self) -> &[String] {
        &self.0[1..]
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl TryFrom<Vec<String>> for Argv {
    type Error = String;

    fn try_from(v: Vec<String>) -> Result<Self, String> {
        if v.is_empty() {
            return Err("run is empty: give the program to start, such as [\"./main.py\"]".into());
        }
        if v[0].trim().is_empty() {
            return Err("run: the program name is empty".into());
        }
        if v.iter().any(|a| a.contains('\0')) {
            return Err("run: an argument contains a NUL character".into());
        }
        Ok(Argv(v))
    }
}

impl From<Argv> for Vec<String> {
    fn from(a: Argv) -> Self {
        a.0
    }
}

/// A timeout: a duration that is not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Duration", into = "Duration")]
pub struct Timeout(pub Duration);

impl TryFrom<Duration> for Timeout {
    type Error = String;

    fn try_from(d: Duration) -> Result<Self, String> {
        if d.is_zero() {
            Err("a timeout of 0 would kill every run at once; give a duration such as 10m".into())
        } else {
            Ok(Timeout(d))
        }
    }
}

impl From<Timeout> for Duration {
    fn from(t: Timeout) -> Duration {
        t.0
    }
}

/// `concurrency:` — runs of this module at once, 1 to 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Concurrency(pub u32);

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency(1)
    }
}

impl TryFrom<i64> for Concurrency {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, String> {
        if (1..=64).contains(&n) {
            Ok(Concurrency(n as u32))
        } else {
            Err(format!(
                "concurrency {n} is out of range: 1 to 64 runs at once"
            ))
        }
    }
}

impl From<Concurrency> for i64 {
    fn from(c: Concurrency) -> i64 {
        c.0 as i64
    }
}

/// What a new trigger does while a run for the same entity is queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PerEntity {
    /// It waits its turn.
    #[default]
    Queue,
    /// It folds into the one run that waits.
    Coalesce,
    /// It is dropped, with a decision saying so.
    Skip,
}

/// Which outcomes are announced in the module's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    All,
    #[default]
    Changes,
    Errors,
    None,
}

/// `budget:` — spending limit in US dollars per day, summed from `details.cost_usd`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub usd_per_day: UsdPerDay,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct UsdPerDay(pub f64);

impl TryFrom<f64> for UsdPerDay {
    type Error = String;

    fn try_from(v: f64) -> Result<Self, String> {
        if v.is_finite() && v > 0.0 {
            Ok(UsdPerDay(v))
        } else {
            Err(format!("budget usd_per_day {v} must be a positive amount"))
        }
    }
}

impl From<UsdPerDay> for f64 {
    fn from(v: UsdPerDay) -> f64 {
        v.0
    }
}

/// What to do with schedule fire times missed while kai was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Catchup {
    /// Record a decision for the missed times, run none of them.
    #[default]
    Skip,
    /// Run once for all the missed times.
    Once,
}

/// What starts a module by itself or from chat.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawTrigger", into = "RawTrigger")]
pub enum Trigger {
    Webhook {
        source: String,
        event: String,
        /// `None`: every action.
        actions: Option<Vec<String>>,
        filters: Filters,
    },
    Schedule {
        cron: CronSpec,
        tz: Option<chrono_tz::Tz>,
        catchup: Catchup,
    },
    Every {
        interval: Duration,
        catchup: Catchup,
    },
    Command {
        name: String,
    },
}

/// A 5-field cron expression, checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec(String);

impl CronSpec {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "schedule `{text}` has {fields} fields; cron takes 5: minute hour day-of-month month day-of-week"
            ));
        }
        // Each field on its own first, so that the message names the one that is wrong.
        const FIELDS: [(&str, &str); 5] = [
            ("minute", "0-59"),
            ("hour", "0-23"),
            ("day of month", "1-31"),
            ("month", "1-12 or JAN-DEC"),
            ("day of week", "0-7 or SUN-SAT"),
        ];
        let parts: Vec<&str> = text.split_whitespace().collect();
        for (i, (field, range)) in FIELDS.iter().enumerate() {
            let mut probe = ["*"; 5];
            probe[i] = parts[i];
            if probe.join(" ").parse::<croner::Cron>().is_err() {
                return Err(format!(
                    "schedule `{text}`: the {field} field `{}` is not valid ({range})",
                    parts[i]
                ));
            }
        }
        let cron = text
            .parse::<croner::Cron>()
            .map_err(|e| format!("schedule `{text}` is not a valid cron expression: {e}"))?;
        // `0 0 31 2 *` parses but never fires; a schedule that silently never runs is a bug.
        let start = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        if cron.find_next_occurrence(&start, false).is_err() {
            return Err(format!(
                "schedule `{text}` never fires (no date matches it)"
            ));
        }
        Ok(CronSpec(text.to_owned()))
    }

    pub fn cron(&self) -> croner::Cron {
        self.0
            .parse()
            .expect("checked when the manifest was loaded")
    }
}

/// The words kai's own chat commands take; a module cannot claim them.
pub const RESERVED_COMMANDS: [&str; 8] = [
    "module",
    "new",
    "stop",
    "workspace",
    "status",
    "help",
    "start",
    "cancel",
];

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actions: Option<Vec<String>>,
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    filters: Option<Filters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tz: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    catchup: Option<Catchup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<String>,
}

fn is_word(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

impl TryFrom<RawTrigger> for Trigger {
    type Error = String;

    fn try_from(raw: RawTrigger) -> Result<Self, String> {
        let kinds: Vec<&str> = [
            raw.webhook.as_ref().map(|_| "webhook"),
            raw.schedule.as_ref().map(|_| "schedule"),
            raw.every.as_ref().map(|_| "every"),
            raw.command.as_ref().map(|_| "command"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let kind = match kinds.as_slice() {
            [one] => *one,
            [] => return Err("trigger says neither webhook, schedule, every nor command".into()),
            many => {
                return Err(format!(
                    "trigger mixes {}: give one per list item",
                    many.join(" and ")
                ))
            }
        };
        let refuse = |key: &str, present: bool, allowed_with: &str| -> Result<(), String> {
            if present {
                Err(format!(
                    "trigger key `{key}` belongs with {allowed_with}, not with {kind}"
                ))
            } else {
                Ok(())
            }
        };
        if kind != "webhook" {
            refuse("event", raw.event.is_some(), "webhook")?;
            refuse("actions", raw.actions.is_some(), "webhook")?;
            refuse("where", raw.filters.is_some(), "webhook")?;
        }
        if kind != "schedule" {
            refuse("tz", raw.tz.is_some(), "schedule")?;
        }
        if kind != "schedule" && kind != "every" {
            refuse("catchup", raw.catchup.is_some(), "schedule or every")?;
        }
        match kind {
            "webhook" => {
                let source = raw.webhook.unwrap_or_default();
                if !is_word(&source, &['-', '_']) || source.chars().any(|c| c.is_ascii_uppercase())
                {
                    return Err(format!(
                        "webhook source `{}` must be a lower-case name such as github",
                        source.escape_debug()
                    ));
                }
                let event = raw.event.ok_or_else(|| {
                    format!("webhook trigger needs `event:` (the {source} event name, such as pull_request)")
                })?;
                if !is_word(&event, &['-', '_', '.', ':', '/']) {
                    return Err(format!(
                        "event `{}` is not an event name",
                        event.escape_debug()
                    ));
                }
                if let Some(actions) = &raw.actions {
                    if actions.is_empty() {
                        return Err("actions is empty: leave it out to take every action".into());
                    }
                    if let Some(bad) = actions.iter().find(|a| !is_word(a, &['-', '_', '.'])) {
                        return Err(format!(
                            "action `{}` is not an action name",
                            bad.escape_debug()
                        ));
                    }
                }
                Ok(Trigger::Webhook {
                    source,
                    event,
                    actions: raw.actions,
                    filters: raw.filters.unwrap_or_default(),
                })
            }
            "schedule" => {
                let cron = CronSpec::parse(raw.schedule.as_deref().unwrap_or_default())?;
                let tz = raw
                    .tz
                    .map(|tz| {
                        tz.parse::<chrono_tz::Tz>().map_err(|_| {
                            format!(
                                "unknown time zone `{}`: use an IANA name such as Europe/Berlin",
                                tz.escape_debug()
                            )
                        })
                    })
                    .transpose()?;
                Ok(Trigger::Schedule {
                    cron,
                    tz,
                    catchup: raw.catchup.unwrap_or_default(),
                })
            }
            "every" => {
                let interval = raw.every.unwrap_or_default();
                if interval.as_secs() < 1 {
                    return Err("every: the interval must be at least 1s".into());
                }
                Ok(Trigger::Every {
                    interval,
                    catchup: raw.catchup.unwrap_or_default(),
                })
            }
            _ => {
                let name = raw.command.unwrap_or_default();
                let name = name.strip_prefix('/').unwrap_or(&name).to_owned();
                if name.len() > 32
                    || !is_word(&name, &['_'])
                    || name.chars().any(|c| c.is_ascii_uppercase())
                {
                    return Err(format!(
                        "command `{}` must be 1 to 32 lower-case letters, digits or `_`, as Telegram requires",
                        name.escape_debug()
                    ));
                }
                if RESERVED_COMMANDS.contains(&name.as_str()) {
                    return Err(format!("command /{name} is one of kai's own commands"));
                }
                Ok(Trigger::Command { name })
            }
        }
    }
}

impl From<Trigger> for RawTrigger {
    fn from(t: Trigger) -> Self {
        match t {
            Trigger::Webhook {
                source,
                event,
                actions,
                filters,
            } => RawTrigger {
                webhook: Some(source),
                event: Some(event),
                actions,
                filters: (!filters.is_empty()).then_some(filters),
                ..Default::default()
            },
            Trigger::Schedule { cron, tz, catchup } => RawTrigger {
                schedule: Some(cron.0),
                tz: tz.map(|tz| tz.name().to_owned()),
                catchup: Some(catchup),
                ..Default::default()
            },
            Trigger::Every { interval, catchup } => RawTrigger {
                every: Some(interval),
                catchup: Some(catchup),
                ..Default::default()
            },
            Trigger::Command { name } => RawTrigger {
                command: Some(name),
                ..Default::default()
            },
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Webhook {
                source,
                event,
                actions,
                filters,
            } => {
                write!(f, "webhook {source} {event}")?;
                if let Some(actions) = actions {
                    write!(f, " [{}]", actions.join(", "))?;
                }
                if !filters.is_empty() {
                    write!(f, " (filtered)")?;
                }
                Ok(())
            }
            Trigger::Schedule { cron, tz, .. } => match tz {
                Some(tz) => write!(f, "schedule \"{}\" {}", cron.0, tz.name()),
                None => write!(f, "schedule \"{}\" UTC", cron.0),
            },
            Trigger::Every { interval, .. } => write!(f, "every {interval}"),
            Trigger::Command { name } => write!(f, "command /{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_loads() {
        let text = r#"
name: pr-review
version: "1.2.0"
description: Reviews pull requests with Claude and posts the review as a comment
run: ["./review"]
triggers:
  - webhook: github
    event: pull_request
    actions: [opened, reopened, synchronize, ready_for_review]
    where: { repository: ["owner/*"], draft: false }
  - schedule: "0 9 * * MON-FRI"
    tz: Europe/Berlin
    catchup: skip
  - every: 30m
  - command: review
entity: "{repository.full_name}#{pull_request.number}"
timeout: 15m
idle_timeout: 5m
concurrency: 2
per_entity: coalesce
cooldown: 0s
budget: { usd_per_day: 5.0 }
notify: changes
settings: { model: sonnet, max_budget_usd: 1.0 }
env: [KAI_GITHUB_TOKEN]
"#;
        let m = Manifest::parse("module.yaml", text).unwrap();
        assert_eq!(m.name.as_str(), "pr-review");
        assert_eq!(m.triggers.len(), 4);
        assert_eq!(m.timeout.0.as_secs(), 900);
        assert_eq!(m.concurrency.0, 2);
        assert_eq!(m.per_entity, PerEntity::Coalesce);
        assert_eq!(m.settings["model"], "sonnet");
        assert_eq!(
            m.triggers[1].to_string(),
            "schedule \"0 9 * * MON-FRI\" Europe/Berlin"
        );
    }

    #[test]
    fn defaults_apply_when_only_the_required_keys_are_given() {
        let m = Manifest::parse("m.yaml", "name: a\ndescription: d\nrun: [x]\n").unwrap();
        assert_eq!(m.version.as_str(), "0.0.0");
        assert!(m.triggers.is_empty());
        assert_eq!(m.timeout.0.as_secs(), 600);
        assert_eq!(m.idle_timeout, None);
        assert_eq!(m.concurrency.0, 1);
        assert_eq!(m.per_entity, PerEntity::Queue);
        assert!(m.cooldown.is_zero());
        assert_eq!(m.notify, Notify::Changes);
        assert!(m.enabled);
    }

    #[test]
    fn strips_the_position_prefix() {
        assert_eq!(
            strip_position("line 3 column 1: unknown field"),
            "unknown field"
        );
        assert_eq!(strip_position("error: line 3 column 1: x: y"), "x: y");
        assert_eq!(strip_position("no position"), "no position");
        assert_eq!(strip_position("bad at line 4, column 10"), "bad");
        assert_eq!(
            strip_position("line 2 column 1: bad at line 4, column 10"),
            "bad"
        );
    }
}
