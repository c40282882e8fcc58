//! The command line (SPEC 9): `kai modules validate`, `kai journal`, `kai modules`, and what
//! `kai run` says when it cannot run.

#[macro_use]
mod common;

use std::path::Path;

use common::*;
use serde_json::json;

const UNKNOWN_FOO: &str = "unknown field `foo`, expected one of name, version, description, \
                           run, triggers, entity, timeout, idle_timeout, concurrency, \
                           per_entity, cooldown, budget, notify, settings, env, enabled";

fn write_manifest(dir: &Path, name: &str, text: &str) {
    write_file(&dir.join(name).join("module.yaml"), text);
}

/// A directory of modules: `good` loads, `bad` has an unknown key on line 4.
fn good_and_bad(dir: &Path) {
    write_manifest(
        dir,
        "good",
        "name: good\nversion: \"2.0.0\"\ndescription: fine\nrun: [\"./main.sh\"]\n",
    );
    write_file(
        &dir.join("good/main.sh"),
        "#!/bin/sh\ncat >/dev/null\necho '{\"status\":\"done\",\"summary\":\"good ran\"}'\n",
    );
    write_manifest(
        dir,
        "bad",
        "name: bad\ndescription: broken\nrun: [\"./main.sh\"]\nfoo: 1\n",
    );
}

fn stderr_lines(run: &Run) -> Vec<String> {
    run.stderr().lines().map(str::to_owned).collect()
}

#[test]
fn validate_reports_file_line_and_reason() {
    let kai = Kai::new();
    let dir = kai.scratch().join("modules");
    good_and_bad(&dir);
    let bad_file = dir.join("bad/module.yaml");
    let expected = format!("{}:4: {UNKNOWN_FOO}", bad_file.display());

    let run = kai.run(&["modules", "validate", dir.to_str().unwrap()]);
    run.expect_code(1);
    check_eq!(run, stderr_lines(&run), vec![expected.clone()]);
    check!(
        run,
        run.stdout().contains("ok    good 2.0.0"),
        "the good module is reported as good"
    );
    check!(
        run,
        !run.stdout().contains("bad"),
        "the bad module is not reported as good"
    );

    // One manifest file, or one module directory.
    let run = kai.run(&["modules", "validate", bad_file.to_str().unwrap()]);
    run.expect_code(1);
    check_eq!(run, stderr_lines(&run), vec![expected.clone()]);
    let run = kai.run(&["modules", "validate", dir.join("good").to_str().unwrap()]);
    run.success();
    check_eq!(run, run.stderr(), "");

    // Without a path: the data directory's modules.
    good_and_bad(&kai.data_dir().join("modules"));
    let run = kai.run(&["modules", "validate"]);
    run.expect_code(1);
    let data_bad = kai.module_dir("bad").join("module.yaml");
    check_eq!(
        run,
        stderr_lines(&run),
        vec![format!("{}:4: {UNKNOWN_FOO}", data_bad.display())]
    );
    check!(run, run.stdout().contains("ok    good 2.0.0"), "good is ok");
    check!(run, run.stdout().contains("ok    echo"), "built-ins are ok");

    let missing = kai.scratch().join("nowhere");
    let run = kai.run(&["modules", "validate", missing.to_str().unwrap()]);
    run.expect_code(1);
    check!(
        run,
        run.stderr().contains("nowhere: no such file or directory"),
        "a missing path is named"
    );
}

#[test]
fn validate_names_the_line_of_each_kind_of_mistake() {
    let kai = Kai::new();
    let dir = kai.scratch().join("modules");
    write_manifest(
        &dir,
        "other",
        "name: wrong\ndescription: x\nrun: [\"./x\"]\n",
    );
    write_manifest(
        &dir,
        "slow",
        "name: slow\ndescription: x\nrun: [\"./x\"]\ntimeout: 5 minutes\n",
    );
    write_manifest(&dir, "empty", "name: empty\nrun: [\"./x\"]\n");
    let run = kai.run(&["modules", "validate", dir.to_str().unwrap()]);
    run.expect_code(1);
    let lines = stderr_lines(&run);
    check_eq!(run, lines.len(), 3, "one line per broken manifest");
    let file = |m: &str| dir.join(m).join("module.yaml").display().to_string();
    for (module, line) in [("other", 1), ("slow", 4)] {
        let prefix = format!("{}:{line}: ", file(module));
        check!(
            run,
            lines.iter().any(|l| l.starts_with(&prefix)),
            "expected a line starting with {prefix}"
        );
    }
    check!(
        run,
        lines
            .iter()
            .any(|l| l.starts_with(&file("other"))
                && l.contains("differs from the module's directory")),
        "a name that is not the directory's is explained"
    );
    check!(
        run,
        lines
            .iter()
            .any(|l| l.starts_with(&file("empty")) && l.contains("description")),
        "a missing required key is named"
    );
}

#[test]
fn run_of_an_unknown_module_exits_2() {
    let kai = Kai::new();
    let run = kai.run(&["run", "nosuch"]);
    run.expect_code(2);
    check_eq!(
        run,
        run.stderr().trim_end(),
        "kai: there is no module named nosuch (kai modules lists them)"
    );
    check_eq!(run, run.stdout(), "");
    check!(
        run,
        !kai.module_dir("nosuch").exists(),
        "nothing is created for a module that does not exist"
    );

    let run = kai.run(&["run", "Bad_Name"]);
    run.expect_code(2);
    check!(
        run,
        run.stderr()
            .contains("invalid module name `Bad_Name`: use lowercase letters"),
        "an invalid name is refused with the rule"
    );

    let run = kai.run(&["run"]);
    run.expect_code(2);
}

#[test]
fn run_of_a_broken_module_says_it_did_not_load_and_why() {
    let kai = Kai::new();
    good_and_bad(&kai.data_dir().join("modules"));
    let run = kai.run(&["run", "bad"]);
    run.expect_code(2);
    let file = kai.module_dir("bad").join("module.yaml");
    check_eq!(
        run,
        run.stderr().trim_end(),
        format!(
            "kai: module bad did not load: {}:4: {UNKNOWN_FOO}",
            file.display()
        )
    );
    check!(
        run,
        kai.journal_files("bad").is_empty(),
        "a module that did not load has no run"
    );

    // Every other module keeps working.
    let (run, entry) = kai.run_module("good", &[]);
    run.success();
    check_eq!(run, entry["summary"], "good ran");
}

#[test]
fn run_refuses_bad_input() {
    let kai = Kai::new();
    let run = kai.run(&["run", "echo", "--data", "{not json"]);
    run.expect_code(2);
    check!(
        run,
        run.stderr().contains("--data is not valid JSON"),
        "bad --data is explained"
    );
    let missing = kai.scratch().join("missing.json");
    let run = kai.run(&["run", "echo", "--payload", missing.to_str().unwrap()]);
    run.expect_code(2);
    check!(
        run,
        run.stderr().contains("missing.json"),
        "a missing payload file is named"
    );
    check!(
        kai,
        kai.journal_files("echo").is_empty(),
        "refused input starts no run"
    );
}

#[test]
fn modules_lists_and_shows_from_the_files() {
    let kai = Kai::new();
    good_and_bad(&kai.data_dir().join("modules"));
    kai.run_module("good", &["--entity", "e1"]).0.success();

    let run = kai.run(&["modules", "--json"]);
    run.success();
    let list = run.json();
    let names: Vec<&str> = list["modules"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    check!(
        run,
        names.contains(&"echo") && names.contains(&"good") && !names.contains(&"bad"),
        "modules: {names:?}"
    );
    check!(
        run,
        list["errors"]
            .as_array()
            .is_some_and(|e| e.len() == 1 && e[0].as_str().unwrap_or("").contains(":4: ")),
        "the broken manifest is listed among the errors with its line"
    );
    let human = kai.run(&["modules"]);
    human.success();
    check!(
        human,
        human.stdout().contains("good") && human.stderr().contains("bad/module.yaml:4:"),
        "the human list shows modules and load errors"
    );

    let run = kai.run(&["modules", "show", "good", "--json"]);
    run.success();
    let show = run.json();
    check_eq!(run, show["name"], "good");
    check_eq!(run, show["builtin"], false);
    check_eq!(run, show["manifest"]["version"], "2.0.0");
    check_eq!(run, show["recent"].as_array().map(Vec::len), Some(1));
    check_eq!(run, show["recent"][0]["entity"], "e1");

    let run = kai.run(&["modules", "show", "nosuch"]);
    run.expect_code(2);
}

// --- kai journal -----------------------------------------------------------------------------

/// A journal entry as a person (or an older kai) wrote it, at a fixed time in the past.
fn old_entry(kai: &Kai, module: &str, time: &str, entity: &str, status: &str) -> String {
    let run_id = format!("r_old_{}", time.replace([':', '-'], ""));
    let mut entry = json!({
        "run_id": run_id,
        "timestamp": time,
        "module": module,
        "trigger": "invoke",
        "delivery_id": format!("d_{run_id}"),
        "entity": entity,
        "chat_id": CHAT_ID,
        "status": status,
        "summary": format!("{status} back then"),
        "duration_seconds": 1.5,
        "attempt": 1,
        "details": {},
    });
    if status == "error" {
        entry["error"] = json!("it failed back then");
    }
    let name = format!("{}_{}.json", &time[..19], slug(entity));
    write_file(
        &kai.events_dir(module).join(name),
        &serde_json::to_string_pretty(&entry).unwrap(),
    );
    run_id
}

struct Journal {
    kai: Kai,
    /// The runs made now: (run id, entity, status).
    now: Vec<(String, &'static str, &'static str)>,
    /// The old entries, oldest first: 2025-01-10 #1 done, 2025-03-05 #2 error,
    /// 2025-07-20 #1 skipped.
    old: Vec<String>,
    /// The run of the other module.
    other: String,
}

fn journal_fixture() -> Journal {
    let kai = Kai::new();
    kai.shell_module(
        "jr",
        "timeout: 3s\n",
        r#"#!/bin/sh
ctx=$(cat)
st=$(printf '%s' "$ctx" | sed -n 's/.*"payload":{"status":"\([a-z]*\)"}.*/\1/p')
echo "{\"status\":\"${st:-done}\",\"summary\":\"now ${st:-done}\"}"
"#,
    );
    kai.shell_module(
        "other",
        "timeout: 3s\n",
        "#!/bin/sh\ncat >/dev/null\necho '{\"status\":\"done\",\"summary\":\"other\"}'\n",
    );
    let old = vec![
        old_entry(&kai, "jr", "2025-01-10T08:00:00Z", "octo/repo#1", "done"),
        old_entry(&kai, "jr", "2025-03-05T09:30:00Z", "octo/repo#2", "error"),
        old_entry(&kai, "jr", "2025-07-20T10:00:00Z", "octo/repo#1", "skipped"),
    ];
    let mut now = Vec::new();
    for (entity, status) in [
        ("octo/repo#1", "done"),
        ("octo/repo#2", "error"),
        ("octo/repo#1", "skipped"),
    ] {
        let data = format!(r#"{{"status":"{status}"}}"#);
        let (_, entry) = kai.run_module("jr", &["--entity", entity, "--data", &data]);
        check_eq!(kai, entry["status"], status);
        now.push((entry["run_id"].as_str().unwrap().to_owned(), entity, status));
    }
    let (_, entry) = kai.run_module("other", &["--entity", "octo/repo#1"]);
    let other = entry["run_id"].as_str().unwrap().to_owned();
    Journal {
        kai,
        now,
        old,
        other,
    }
}

impl Journal {
    /// `kai journal ARGS --json`: the run ids, in order; checks they are newest first.
    fn ids(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["journal"];
        all.extend_from_slice(args);
        all.push("--json");
        let run = self.kai.run(&all);
        run.success();
        let entries = run.json();
        let entries = entries
            .as_array()
            .unwrap_or_else(|| run.fail("`kai journal --json` prints an array"));
        let times: Vec<i64> = entries
            .iter()
            .map(|e| e["timestamp"].as_str().and_then(epoch_seconds).unwrap())
            .collect();
        check!(
            run,
            times.windows(2).all(|w| w[0] >= w[1]),
            "entries are not newest first: {times:?}"
        );
        for e in entries {
            check!(
                run,
                SPEC_FIELDS.iter().all(|f| e.get(*f).is_some()),
                "an entry lacks a field: {e}"
            );
        }
        entries
            .iter()
            .map(|e| e["run_id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn now_ids(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<String> {
        self.now
            .iter()
            .filter(|(_, e, s)| keep(e, s))
            .map(|(id, _, _)| id.clone())
            .collect()
    }
}

/// `got` holds exactly `now` (in any order: they may share a second) followed by `old` (in
/// this order).
fn check_subset(kai: &Kai, what: &str, got: &[String], now: &[String], old: &[&String]) {
    let split = got.len().saturating_sub(old.len());
    let mut got_now = got[..split].to_vec();
    got_now.sort();
    let mut want_now = now.to_vec();
    want_now.sort();
    let got_old: Vec<&String> = got[split..].iter().collect();
    check!(
        kai,
        got.len() == now.len() + old.len() && got_now == want_now && got_old == old,
        "{what}: got {got:?}\n  want (any order) {want_now:?}\n  then {old:?}"
    );
}

#[test]
fn journal_filters_newest_first() {
    let j = journal_fixture();
    let kai = &j.kai;
    let [o_jan, o_mar, o_jul] = [&j.old[0], &j.old[1], &j.old[2]];

    let all = j.ids(&["jr"]);
    check_subset(
        kai,
        "jr",
        &all,
        &j.now_ids(|_, _| true),
        &[o_jul, o_mar, o_jan],
    );

    let mut everything = j.now_ids(|_, _| true);
    everything.push(j.other.clone());
    check_subset(
        kai,
        "every module",
        &j.ids(&[]),
        &everything,
        &[o_jul, o_mar, o_jan],
    );

    check_subset(
        kai,
        "jr --entity octo/repo#1",
        &j.ids(&["jr", "--entity", "octo/repo#1"]),
        &j.now_ids(|e, _| e == "octo/repo#1"),
        &[o_jul, o_jan],
    );
    let mut repo1 = j.now_ids(|e, _| e == "octo/repo#1");
    repo1.push(j.other.clone());
    check_subset(
        kai,
        "--entity octo/repo#1 across modules",
        &j.ids(&["--entity", "octo/repo#1"]),
        &repo1,
        &[o_jul, o_jan],
    );
    check_subset(
        kai,
        "jr --status error",
        &j.ids(&["jr", "--status", "error"]),
        &j.now_ids(|_, s| s == "error"),
        &[o_mar],
    );
    check_subset(
        kai,
        "jr --since 2h",
        &j.ids(&["jr", "--since", "2h"]),
        &j.now_ids(|_, _| true),
        &[],
    );
    check_subset(
        kai,
        "jr --since 2025-03-01",
        &j.ids(&["jr", "--since", "2025-03-01"]),
        &j.now_ids(|_, _| true),
        &[o_jul, o_mar],
    );
    check_subset(
        kai,
        "jr --since 2025-03-05T09:30:00Z (inclusive)",
        &j.ids(&["jr", "--since", "2025-03-05T09:30:00Z"]),
        &j.now_ids(|_, _| true),
        &[o_jul, o_mar],
    );
    check_subset(
        kai,
        "jr --since 2025-03-05T11:30:01+02:00",
        &j.ids(&["jr", "--since", "2025-03-05T11:30:01+02:00"]),
        &j.now_ids(|_, _| true),
        &[o_jul],
    );
    check_subset(
        kai,
        "combined",
        &j.ids(&[
            "jr",
            "--entity",
            "octo/repo#1",
            "--status",
            "skipped",
            "--since",
            "2025-06-01",
        ]),
        &j.now_ids(|e, s| e == "octo/repo#1" && s == "skipped"),
        &[o_jul],
    );

    // --limit keeps the newest.
    check_eq!(kai, j.ids(&["jr", "--limit", "2"]), all[..2].to_vec());
    check_eq!(kai, j.ids(&["jr", "--limit", "4"]), all[..4].to_vec());
    check_eq!(
        kai,
        j.ids(&["jr", "--status", "error", "--limit", "1"]),
        j.now_ids(|_, s| s == "error"),
        "the limit applies after the filters"
    );
    check_eq!(
        kai,
        j.ids(&[
            "jr",
            "--entity",
            "octo/repo#2",
            "--since",
            "2025-04-01",
            "--status",
            "done"
        ]),
        Vec::<String>::new()
    );
}

#[test]
fn journal_human_output_and_refusals() {
    let j = journal_fixture();
    let kai = &j.kai;
    let run = kai.run(&["journal", "jr"]);
    run.success();
    let lines: Vec<String> = run.stdout().lines().map(str::to_owned).collect();
    check_eq!(run, lines.len(), 6, "one line per entry");
    check!(
        run,
        lines[5].starts_with("2025-01-10 08:00:00")
            && lines[5].contains("done")
            && lines[5].contains("octo/repo#1"),
        "the oldest comes last, with its time, status and entity"
    );
    let run = kai.run(&["journal", "--status", "error"]);
    run.success();
    check!(
        run,
        run.stdout()
            .lines()
            .all(|l| l.contains("jr") && l.contains("error")),
        "across modules, each line names its module"
    );

    for (args, needle) in [
        (vec!["journal", "nosuch"], "there is no module named nosuch"),
        (vec!["journal", "--status", "fine"], "unknown status `fine`"),
        (
            vec!["journal", "--since", "yesterday"],
            "--since `yesterday`",
        ),
    ] {
        let run = kai.run(&args);
        run.expect_code(2);
        check!(
            run,
            run.stderr().contains(needle),
            "expected `{needle}` on stderr"
        );
    }
}

#[test]
fn journal_skips_a_broken_file_with_a_warning() {
    let j = journal_fixture();
    let kai = &j.kai;
    let broken = kai
        .events_dir("jr")
        .join("2025-05-01T00:00:00_octo-repo_1.json");
    std::fs::write(&broken, "{ this is not").unwrap();
    let run = kai.run(&["journal", "jr", "--json"]);
    run.success();
    check_eq!(run, run.json().as_array().map(Vec::len), Some(6));
    check!(
        run,
        run.stderr().contains("warning: skipped") && run.stderr().contains("2025-05-01T00:00:00"),
        "the broken file is named in a warning"
    );
    // A file that is not a journal entry's name is ignored.
    std::fs::write(kai.events_dir("jr").join("notes.txt"), "hello").unwrap();
    let run = kai.run(&["journal", "jr", "--json"]);
    run.success();
    check_eq!(run, run.json().as_array().map(Vec::len), Some(6));
}

// --- kai replay ------------------------------------------------------------------------------

#[test]
fn replay_runs_a_journaled_trigger_again_as_a_new_run() {
    let kai = Kai::new();
    let dir = kai.shell_module(
        "reviewer",
        "timeout: 3s\nentity: \"{repository.full_name}#{pull_request.number}\"\n",
        r#"#!/bin/sh
cat > context.json
echo '{"status":"done","summary":"reviewed"}'
"#,
    );
    let payload = json!({
        "action": "synchronize",
        "repository": {"full_name": "octo/repo"},
        "pull_request": {"number": 42},
    });
    let file = kai.scratch().join("payload.json");
    std::fs::write(&file, payload.to_string()).unwrap();
    let (run, first) = kai.run_module(
        "reviewer",
        &[
            "--event",
            "pull_request",
            "--payload",
            file.to_str().unwrap(),
        ],
    );
    run.success();
    let first_ctx = read_json(&dir.join("context.json")).unwrap();

    let before = kai.journal_files("reviewer");
    let run = kai.run(&["replay", first["run_id"].as_str().unwrap(), "--json"]);
    run.success();
    let replayed = run.json();
    let after = kai.journal_files("reviewer");
    check_eq!(
        run,
        after.len(),
        before.len() + 1,
        "a replay is a run of its own"
    );
    let (path, entry) = kai.entry_of("reviewer", replayed["run_id"].as_str().unwrap());
    check_entry(&run, &path, &entry);
    check_eq!(run, entry, replayed);
    check!(
        run,
        entry["run_id"] != first["run_id"],
        "a replay gets a new run id"
    );
    check_eq!(run, entry["entity"], "octo/repo#42");
    check_eq!(run, entry["trigger"], "webhook:pull_request:synchronize");
    let ctx = read_json(&dir.join("context.json")).unwrap();
    check_eq!(run, ctx["trigger"]["payload"], payload);
    check_eq!(run, ctx["trigger"]["event"], "pull_request");
    check_eq!(run, ctx["trigger"]["action"], "synchronize");
    // kai-sdk's `Trigger::delivery_id`: "Two runs of one module never share a delivery id
    // unless one is a retry." A replay is no retry: a module that skips deliveries it has seen
    // would otherwise skip every replay.
    check!(
        run,
        ctx["trigger"]["delivery_id"] != first_ctx["trigger"]["delivery_id"],
        "the replay reuses delivery id {} of run {}",
        first_ctx["trigger"]["delivery_id"],
        first["run_id"]
    );

    let run = kai.run(&["replay", "r_nosuch"]);
    run.expect_code(2);
    check!(
        run,
        run.stderr().contains("there is no run r_nosuch"),
        "an unknown run id is named"
    );
}
