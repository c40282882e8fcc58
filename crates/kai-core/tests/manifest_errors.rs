//! A manifest that does not load must say where and why, in words a module author can act on.
//! These tests pin the exact `file:line: message` text of malformed manifests, so that a change
//! of wording or of the line an error points at is a deliberate one.

use kai_core::manifest::{Catchup, Notify, PerEntity};
use kai_core::{Manifest, ManifestError, Trigger};

const FILE: &str = "modules/x/module.yaml";

/// The three required keys, on lines 1 to 3: whatever `with` adds starts on line 4.
const HEAD: &str = "name: x\ndescription: d\nrun: [./x]\n";

fn with(rest: &str) -> String {
    format!("{HEAD}{rest}")
}

fn error(text: &str) -> ManifestError {
    match Manifest::parse(FILE, text) {
        Ok(m) => panic!("the manifest loaded, but it should not have:\n{text}\n=> {m:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn refused(text: &str, expected: &str) {
    assert_eq!(error(text).to_string(), expected, "manifest:\n{text}");
}

// --- keys ----------------------------------------------------------------------------------

#[test]
fn an_unknown_top_level_key_is_named_with_its_line() {
    refused(
        &with("timout: 5m\n"),
        "modules/x/module.yaml:4: unknown field `timout`, expected one of name, version, \
         description, run, triggers, entity, timeout, idle_timeout, concurrency, per_entity, \
         cooldown, budget, notify, settings, env, enabled",
    );
    refused(
        "name: x\nfoo: 1\ndescription: d\nrun: [./x]\n",
        "modules/x/module.yaml:2: unknown field `foo`, expected one of name, version, \
         description, run, triggers, entity, timeout, idle_timeout, concurrency, per_entity, \
         cooldown, budget, notify, settings, env, enabled",
    );
}

#[test]
fn an_unknown_key_inside_a_trigger_is_named_with_its_line() {
    refused(
        &with("triggers:\n  - webhook: github\n    event: push\n    acton: [opened]\n"),
        "modules/x/module.yaml:7: unknown field `acton`, expected one of webhook, event, \
         actions, where, schedule, tz, catchup, every, command",
    );
}

#[test]
fn an_unknown_key_inside_budget_is_named() {
    refused(
        &with("budget: { usd: 1 }\n"),
        "modules/x/module.yaml:4: unknown field `usd`, expected one of usd_per_day",
    );
}

/// No line: there is none where a missing key is (the parser would point at the last key).
#[test]
fn a_missing_required_key_is_named() {
    for (text, key) in [
        ("name: x\ndescription: d\n", "run"),
        ("name: x\nrun: [./x]\n", "description"),
        ("description: d\nrun: [./x]\n", "name"),
    ] {
        let e = error(text);
        assert_eq!(e.file, FILE);
        assert_eq!(e.line, None, "{text}");
        assert_eq!(
            e.message,
            format!("`{key}` is missing: every manifest needs name, description and run"),
            "{text}"
        );
    }
}

#[test]
fn a_duplicate_key_points_at_its_second_occurrence() {
    let e = error("name: x\ndescription: d\nrun: [./x]\nname: y\n").to_string();
    assert_eq!(
        e,
        "modules/x/module.yaml:4: duplicate mapping key `name` is not allowed here"
    );
}

// --- values of top-level keys ---------------------------------------------------------------

#[test]
fn a_bad_module_name_says_what_is_allowed() {
    refused(
        "name: Pr_Review\ndescription: d\nrun: [./x]\n",
        "modules/x/module.yaml:1: invalid module name `Pr_Review`: use lowercase letters, \
         digits and `-`, starting with a letter or digit",
    );
}

#[test]
fn an_empty_description_is_refused() {
    refused(
        "name: x\ndescription: \"\"\nrun: [./x]\n",
        "modules/x/module.yaml:2: description is empty: say in one line what the module does",
    );
}

#[test]
fn an_empty_run_is_refused() {
    refused(
        "name: x\ndescription: d\nrun: []\n",
        "modules/x/module.yaml:3: run is empty: give the program to start, such as [\"./main.py\"]",
    );
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    refused(
        &with("timeout: 5x\n"),
        "modules/x/module.yaml:4: invalid duration `5x`: write a number with a unit s, m, h or \
         d, such as 30s, 15m, 1h30m",
    );
    refused(
        &with("cooldown: 30\n"),
        "modules/x/module.yaml:4: invalid duration `30`: write a number with a unit s, m, h or \
         d, such as 30s, 15m, 1h30m",
    );
}

#[test]
fn a_zero_timeout_is_refused() {
    let expected = "modules/x/module.yaml:4: a timeout of 0 would kill every run at once; give \
                    a duration such as 10m";
    refused(&with("timeout: 0s\n"), expected);
    refused(&with("timeout: 0\n"), expected);
    refused(
        &with("idle_timeout: 0s\n"),
        "modules/x/module.yaml:4: a timeout of 0 would kill every run at once; give a \
         duration such as 10m",
    );
}

#[test]
fn concurrency_must_be_1_to_64() {
    refused(
        &with("concurrency: 0\n"),
        "modules/x/module.yaml:4: concurrency 0 is out of range: 1 to 64 runs at once",
    );
    refused(
        &with("concurrency: 100\n"),
        "modules/x/module.yaml:4: concurrency 100 is out of range: 1 to 64 runs at once",
    );
    refused(
        &with("concurrency: -1\n"),
        "modules/x/module.yaml:4: concurrency -1 is out of range: 1 to 64 runs at once",
    );
}

#[test]
fn per_entity_lists_its_choices() {
    refused(
        &with("per_entity: sometimes\n"),
        "modules/x/module.yaml:4: unknown variant `sometimes`, expected one of queue, coalesce, skip",
    );
}

#[test]
fn notify_lists_its_choices() {
    refused(
        &with("notify: loud\n"),
        "modules/x/module.yaml:4: unknown variant `loud`, expected one of all, changes, errors, none",
    );
}

#[test]
fn an_entity_template_with_an_unbalanced_brace_is_refused() {
    refused(
        &with("entity: \"{repository.full_name\"\n"),
        "modules/x/module.yaml:4: entity template `{repository.full_name` has a `{` without its `}`",
    );
    refused(
        &with("entity: \"repo}\"\n"),
        "modules/x/module.yaml:4: entity template `repo}` has a `}` without its `{` (write `}}` \
         for a literal brace)",
    );
}

#[test]
fn env_never_passes_the_admin_token() {
    refused(
        &with("env: [KAI_API_TOKEN]\n"),
        "modules/x/module.yaml:4: env: KAI_API_TOKEN is the admin token and is never given to \
         modules; a run has KAI_RUN_TOKEN",
    );
}

#[test]
fn env_refuses_what_kai_sets_itself() {
    refused(
        &with("env: [KAI_RUN_TOKEN]\n"),
        "modules/x/module.yaml:4: env: KAI_RUN_TOKEN is set by kai for every run and cannot be \
         passed through",
    );
}

#[test]
fn env_takes_upper_case_names_only() {
    refused(
        &with("env: [github_token]\n"),
        "modules/x/module.yaml:4: env: `github_token` is not a variable name (upper-case \
         letters, digits, `_`)",
    );
}

#[test]
fn a_budget_must_be_positive() {
    refused(
        &with("budget: { usd_per_day: -1 }\n"),
        "modules/x/module.yaml:4: budget usd_per_day -1 must be a positive amount",
    );
    refused(
        &with("budget: { usd_per_day: 0 }\n"),
        "modules/x/module.yaml:4: budget usd_per_day 0 must be a positive amount",
    );
    // In block style the line is the amount's own.
    refused(
        &with("budget:\n  usd_per_day: -1.5\n"),
        "modules/x/module.yaml:5: budget usd_per_day -1.5 must be a positive amount",
    );
}

// --- triggers ------------------------------------------------------------------------------
// An error about a trigger as a whole points at the line of its list item (`- ...`).

#[test]
fn a_cron_with_the_wrong_number_of_fields_says_which_five() {
    refused(
        &with("triggers:\n  - schedule: \"0 9 * *\"\n"),
        "modules/x/module.yaml:5: schedule `0 9 * *` has 4 fields; cron takes 5: minute hour \
         day-of-month month day-of-week",
    );
    refused(
        &with("triggers:\n  - schedule: \"0 0 9 * * *\"\n"),
        "modules/x/module.yaml:5: schedule `0 0 9 * * *` has 6 fields; cron takes 5: minute \
         hour day-of-month month day-of-week",
    );
}

/// The start is pinned; the rest is croner's own text ("Component error: Number out of
/// bounds."), which does not say which field is wrong. See `proposed_a_cron_field_out_of_range`.
#[test]
fn a_cron_with_an_invalid_field_is_refused() {
    for (cron, _field) in [("61 9 * * *", "minute"), ("0 9 * * FOO", "day of week")] {
        let e = error(&with(&format!("triggers:\n  - schedule: \"{cron}\"\n"))).to_string();
        let start = format!("modules/x/module.yaml:5: schedule `{cron}`");
        assert!(e.starts_with(&start), "{e}");
    }
}

#[test]
fn an_unknown_time_zone_is_refused() {
    refused(
        &with("triggers:\n  - schedule: \"0 9 * * *\"\n    tz: Mars/Olympus\n"),
        "modules/x/module.yaml:5: unknown time zone `Mars/Olympus`: use an IANA name such as \
         Europe/Berlin",
    );
}

#[test]
fn a_trigger_of_two_kinds_is_refused() {
    refused(
        &with("triggers:\n  - webhook: github\n    event: push\n    schedule: \"0 9 * * *\"\n"),
        "modules/x/module.yaml:5: trigger mixes webhook and schedule: give one per list item",
    );
}

#[test]
fn a_trigger_of_no_kind_is_refused() {
    refused(
        &with("triggers:\n  - {}\n"),
        "modules/x/module.yaml:5: trigger says neither webhook, schedule, every nor command",
    );
}

#[test]
fn a_webhook_needs_an_event() {
    refused(
        &with("triggers:\n  - webhook: github\n"),
        "modules/x/module.yaml:5: webhook trigger needs `event:` (the github event name, such \
         as pull_request)",
    );
}

#[test]
fn tz_belongs_to_schedules_only() {
    refused(
        &with("triggers:\n  - webhook: github\n    event: push\n    tz: Europe/Berlin\n"),
        "modules/x/module.yaml:5: trigger key `tz` belongs with schedule, not with webhook",
    );
}

#[test]
fn catchup_lists_its_choices() {
    refused(
        &with("triggers:\n  - every: 5m\n    catchup: all\n"),
        "modules/x/module.yaml:6: unknown variant `all`, expected one of skip, once",
    );
}

#[test]
fn an_interval_of_zero_is_refused() {
    refused(
        &with("triggers:\n  - every: 0s\n"),
        "modules/x/module.yaml:5: every: the interval must be at least 1s",
    );
}

#[test]
fn a_command_cannot_take_one_of_kais_own() {
    refused(
        &with("triggers:\n  - command: help\n"),
        "modules/x/module.yaml:5: command /help is one of kai's own commands",
    );
}

#[test]
fn a_command_must_suit_telegram() {
    refused(
        &with("triggers:\n  - command: Review\n"),
        "modules/x/module.yaml:5: command `Review` must be 1 to 32 lower-case letters, digits \
         or `_`, as Telegram requires",
    );
}

#[test]
fn the_second_trigger_is_pointed_at_not_the_first() {
    refused(
        &with("triggers:\n  - command: review\n  - schedule: \"0 9 * *\"\n"),
        "modules/x/module.yaml:6: schedule `0 9 * *` has 4 fields; cron takes 5: minute hour \
         day-of-month month day-of-week",
    );
}

#[test]
fn where_refuses_an_object_value() {
    refused(
        &with(
            "triggers:\n  - webhook: github\n    event: push\n    where: { repository: { owner: x } }\n",
        ),
        "modules/x/module.yaml:7: where: `repository` allows {\"owner\":\"x\"}, but only \
         strings, numbers, booleans and null can be compared",
    );
    refused(
        &with(
            "triggers:\n  - webhook: github\n    event: push\n    where:\n      repository:\n        owner: x\n",
        ),
        "modules/x/module.yaml:8: where: `repository` allows {\"owner\":\"x\"}, but only \
         strings, numbers, booleans and null can be compared",
    );
}

// --- YAML itself ---------------------------------------------------------------------------

#[test]
fn a_yaml_syntax_error_has_its_line() {
    refused(
        "name: x\ndescription: d\nrun: [./x\n",
        "modules/x/module.yaml:3: unclosed bracket '['",
    );
    refused(
        "name: x\ndescription: \"d\nrun: [./x]\n",
        "modules/x/module.yaml:2: unclosed quote",
    );
}

#[test]
fn an_error_without_a_line_shows_the_file_alone() {
    let e = ManifestError {
        file: FILE.into(),
        line: None,
        message: "cannot read the manifest".into(),
    };
    assert_eq!(
        e.to_string(),
        "modules/x/module.yaml: cannot read the manifest"
    );
}

// --- what loads ----------------------------------------------------------------------------

#[test]
fn the_spec_3_2_example_loads() {
    let text = r#"name: pr-review
version: "1.2.0"
description: Reviews pull requests with Claude and posts the review as a comment
run: ["./review"]                 # argv; relative paths resolve against the module directory
triggers:
  - webhook: github               # a source name: github, or a generic source from config
    event: pull_request           # X-GitHub-Event for github; free-form for generic sources
    actions: [opened, reopened, synchronize, ready_for_review]
    where: { repository: ["owner/*"], draft: false }   # optional filters on the payload
  - schedule: "0 9 * * MON-FRI"   # cron, 5 fields, optional tz:
    tz: Europe/Berlin
    catchup: skip                 # skip | once  (what to do with fire times missed while down)
  - every: 30m                    # interval
  - command: review               # /review in chat invokes the module
entity: "{repository.full_name}#{pull_request.number}"   # template over the payload
timeout: 15m                      # wall clock; the process group is killed after it
idle_timeout: 5m                  # optional: killed after this long with no output
concurrency: 2                    # runs of this module at once
per_entity: coalesce              # queue | coalesce | skip : a new trigger while one runs for the same entity
cooldown: 0s                      # min time between two runs for the same entity
budget: { usd_per_day: 5.0 }      # optional; reaching it pauses the module and says so in its topic
notify: changes                   # all | changes | errors | none
settings: { model: sonnet, max_budget_usd: 1.0 }   # free-form, handed to the module
env: [KAI_GITHUB_TOKEN]           # host variables passed through; nothing else leaks in
"#;
    let m = Manifest::parse(FILE, text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.name.as_str(), "pr-review");
    assert_eq!(m.version.as_str(), "1.2.0");
    assert_eq!(m.run.as_slice(), ["./review"]);
    assert_eq!(m.triggers.len(), 4);
    match &m.triggers[0] {
        Trigger::Webhook {
            source,
            event,
            actions,
            filters,
        } => {
            assert_eq!(
                (source.as_str(), event.as_str()),
                ("github", "pull_request")
            );
            assert_eq!(actions.as_ref().map(Vec::len), Some(4));
            let pr = serde_json::json!({
                "repository": {"full_name": "owner/repo"},
                "pull_request": {"draft": false}
            });
            assert_eq!(filters.check(&pr), Ok(()));
        }
        other => panic!("first trigger: {other:?}"),
    }
    assert!(matches!(
        &m.triggers[1],
        Trigger::Schedule { tz: Some(tz), catchup: Catchup::Skip, .. } if tz.name() == "Europe/Berlin"
    ));
    assert!(
        matches!(&m.triggers[2], Trigger::Every { interval, .. } if interval.as_secs() == 1800)
    );
    assert!(matches!(&m.triggers[3], Trigger::Command { name } if name == "review"));
    let payload = serde_json::json!({
        "repository": {"full_name": "octo/repo"},
        "pull_request": {"number": 42}
    });
    assert_eq!(m.entity_for(&payload, "x").unwrap(), "octo/repo#42");
    assert_eq!(m.timeout.0.as_secs(), 900);
    assert_eq!(m.idle_timeout.map(|t| t.0.as_secs()), Some(300));
    assert_eq!(m.concurrency.0, 2);
    assert_eq!(m.per_entity, PerEntity::Coalesce);
    assert!(m.cooldown.is_zero());
    assert_eq!(m.budget.map(|b| b.usd_per_day.0), Some(5.0));
    assert_eq!(m.notify, Notify::Changes);
    assert_eq!(m.settings["model"], "sonnet");
    assert_eq!(
        m.env.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        ["KAI_GITHUB_TOKEN"]
    );
    assert!(m.enabled);
}

// --- messages put in plain words for module authors ------------------------------------------

#[test]
fn proposed_a_missing_key_has_no_line() {
    refused(
        "name: x\ndescription: d\ntimeout: 5m\n",
        "modules/x/module.yaml: `run` is missing: every manifest needs name, description and run",
    );
}

#[test]
fn proposed_a_duplicate_key_in_plain_words() {
    refused(
        "name: x\ndescription: d\nrun: [./x]\nname: y\n",
        "modules/x/module.yaml:4: duplicate mapping key `name` is not allowed here",
    );
}

#[test]
fn proposed_a_cron_field_out_of_range() {
    refused(
        &with("triggers:\n  - schedule: \"61 9 * * *\"\n"),
        "modules/x/module.yaml:5: schedule `61 9 * * *`: the minute field `61` is not valid (0-59)",
    );
    refused(
        &with("triggers:\n  - schedule: \"0 9 * * FOO\"\n"),
        "modules/x/module.yaml:5: schedule `0 9 * * FOO`: the day of week field `FOO` is not \
         valid (0-7 or SUN-SAT)",
    );
}

#[test]
fn proposed_type_errors_in_plain_words() {
    refused(
        "name: x\ndescription: d\nrun: ./x\n",
        "modules/x/module.yaml:3: expected a list here, such as [a, b]",
    );
    refused(
        &with("concurrency: two\n"),
        "modules/x/module.yaml:4: expected a whole number",
    );
    refused(
        &with("enabled: maybe\n"),
        "modules/x/module.yaml:4: expected true or false",
    );
}
