//! The run protocol (SPEC 3.3) and a module's data (SPEC 3.4), against real processes: shell
//! modules started by the real `kai run`, leaving real files behind.
//!
//! `Kai::run_module` checks, for every run here, that exactly one journal file appeared, that it
//! holds every SPEC 3.4 field, and that `kai run --json` printed that same entry.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Long enough for a process to die and be reaped on a busy machine.
const GONE_WITHIN: Duration = Duration::from_secs(3);

fn env_file(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A fresh kai whose module `name` (`timeout: 3s`) runs `script` once, in the foreground, and
/// fails: `kai run` exits 1 and the journal entry says `error`.
fn failed_run(name: &str, script: &str) -> (Kai, Run, Value) {
    let kai = Kai::new();
    kai.shell_module(name, "timeout: 3s\n", script);
    let (run, entry) = kai.run_module(name, &[]);
    run.expect_code(1);
    check_eq!(run, entry["status"], "error");
    (kai, run, entry)
}

#[test]
fn a_timeout_kills_the_module_and_its_grandchild() {
    let kai = Kai::new();
    let dir = kai.shell_module(
        "slow",
        "timeout: 2s\n",
        r#"#!/bin/sh
cat >/dev/null
sleep 300 &
echo $! > grandchild.pid
echo $$ > module.pid
echo "sleeping past the timeout" >&2
sleep 300
"#,
    );
    let mut reaper = Reaper::default();
    let (run, entry) = kai.run_module("slow", &[]);
    let grandchild = read_pid(&dir.join("grandchild.pid"))
        .unwrap_or_else(|| run.fail("the module never wrote grandchild.pid"));
    let module = read_pid(&dir.join("module.pid")).unwrap();
    reaper.watch(grandchild);
    run.expect_code(1);
    check_eq!(run, entry["status"], "timeout");
    check_eq!(run, entry["summary"], "timed out after 2s (timeout)");
    check_eq!(run, entry["error"], "timed out after 2s (timeout)");
    check!(
        run,
        entry["duration_seconds"].as_f64().is_some_and(|d| d >= 2.0),
        "the module was stopped before its timeout"
    );
    check!(
        run,
        entry["stderr_tail"]
            .as_str()
            .is_some_and(|t| t.contains("sleeping past the timeout")),
        "the stderr tail is kept on a timeout"
    );
    check!(
        run,
        wait_gone(module, GONE_WITHIN),
        "the module process {module} is still alive after its timeout"
    );
    check!(
        run,
        wait_gone(grandchild, GONE_WITHIN),
        "the module's grandchild {grandchild} (`sleep 300 &`) outlived the run's timeout"
    );
}

#[test]
fn an_idle_timeout_kills_a_module_that_stops_talking() {
    let kai = Kai::new();
    kai.shell_module(
        "quiet",
        "timeout: 3s\nidle_timeout: 1s\n",
        r#"#!/bin/sh
cat >/dev/null
echo "working..." >&2
exec sleep 300
"#,
    );
    let (run, entry) = kai.run_module("quiet", &[]);
    run.expect_code(1);
    check_eq!(run, entry["status"], "timeout");
    check_eq!(
        run,
        entry["summary"],
        "timed out: no output for 1s (idle_timeout)"
    );
    check_eq!(
        run,
        entry["error"],
        "timed out: no output for 1s (idle_timeout)"
    );
}

#[test]
fn garbage_on_stdout_is_an_error() {
    let (_kai, run, entry) = failed_run(
        "garbage",
        "#!/bin/sh\ncat >/dev/null\necho 'this is not JSON at all'\n",
    );
    let error = entry["error"].as_str().unwrap_or_default();
    check!(
        run,
        error.starts_with("the output on stdout is not one JSON object"),
        "error: {error}"
    );
    check!(
        run,
        error.contains("this is not JSON"),
        "the error quotes the start of the output: {error}"
    );
}

#[test]
fn no_output_on_stdout_is_an_error() {
    let (_kai, run, entry) = failed_run(
        "mute",
        "#!/bin/sh\ncat >/dev/null\necho 'only on stderr' >&2\n",
    );
    check_eq!(
        run,
        entry["error"],
        "printed no result on stdout (expected one JSON object)"
    );
    check_eq!(run, entry["stderr_tail"], "only on stderr");
}

#[test]
fn an_unknown_result_field_is_an_error() {
    let (kai, run, entry) = failed_run(
        "typo",
        "#!/bin/sh\ncat >/dev/null\necho '{\"status\":\"done\",\"summary\":\"ok\",\"stat\":{}}'\n",
    );
    let error = entry["error"].as_str().unwrap_or_default();
    check!(
        run,
        error.starts_with("the result is not valid: unknown field `stat`"),
        "error: {error}"
    );
    check!(
        run,
        kai.state("typo").is_none(),
        "an invalid result changes no state"
    );
}

#[test]
fn exit_code_3_is_an_error_with_the_stderr_tail() {
    let (kai, run, entry) = failed_run(
        "crash",
        r#"#!/bin/sh
cat >/dev/null
echo "step 1: fine" >&2
echo "fatal: the disk is on fire" >&2
exit 3
"#,
    );
    check_eq!(run, entry["error"], "exited with code 3");
    check_eq!(run, entry["summary"], "exited with code 3");
    let tail = entry["stderr_tail"].as_str().unwrap_or_default();
    check!(
        run,
        tail.contains("fatal: the disk is on fire") && tail.contains("step 1: fine"),
        "stderr_tail: {tail:?}"
    );
    check!(run, entry.get("retry").is_none(), "no retry was asked for");

    // The human output says so too.
    let human = kai.run(&["run", "crash"]);
    human.expect_code(1);
    check!(
        human,
        human.stdout().contains("exited with code 3")
            && human.stdout().contains("fatal: the disk is on fire")
            && human.stdout().contains("journal: "),
        "`kai run` prints the outcome, the stderr tail and the journal file"
    );
}

#[test]
fn five_mib_on_stdout_is_refused_and_the_group_killed_at_once() {
    let kai = Kai::new();
    // The module would otherwise go on until its timeout: a `timeout` status would mean the
    // group was not killed when the output grew too big.
    let dir = kai.shell_module(
        "chatty",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat >/dev/null
sleep 300 &
echo $! > grandchild.pid
head -c 5242880 /dev/zero | tr '\0' 'x'
sleep 300
"#,
    );
    let mut reaper = Reaper::default();
    let (run, entry) = kai.run_module("chatty", &[]);
    let grandchild = read_pid(&dir.join("grandchild.pid")).unwrap();
    reaper.watch(grandchild);
    run.expect_code(1);
    check_eq!(run, entry["status"], "error");
    check_eq!(run, entry["error"], "the result is bigger than 1 MiB");
    check!(
        run,
        wait_gone(grandchild, GONE_WITHIN),
        "the module's grandchild {grandchild} outlived the oversized result"
    );
    let size = std::fs::metadata(kai.journal_files("chatty").first().expect("a journal file"))
        .unwrap()
        .len();
    check!(
        run,
        size < 64 * 1024,
        "the journal file does not carry the output ({size} bytes)"
    );
}

#[test]
fn a_paused_run_writes_its_checkpoint_and_question() {
    let kai = Kai::new();
    kai.shell_module(
        "asker",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat >/dev/null
cat <<'JSON'
{"status":"paused","summary":"Waiting: deploy to staging?",
 "question":{"text":"PR #42 passed CI. Deploy to staging?","options":["yes","no"],"expires":"3d","default":"no"},
 "checkpoint":{"step":2,"sha":"abc123"},"state":{"asked":1}}
JSON
"#,
    );
    let (run, entry) = kai.run_module("asker", &["--entity", "octo/repo#42"]);
    run.success();
    let question = json!({
        "text": "PR #42 passed CI. Deploy to staging?",
        "options": ["yes", "no"],
        "expires": "3d",
        "default": "no",
    });
    check_eq!(run, entry["status"], "paused");
    check_eq!(run, entry["summary"], "Waiting: deploy to staging?");
    check_eq!(run, entry["question"], question);
    check!(run, entry.get("error").is_none(), "a pause is no error");

    let run_id = entry["run_id"].as_str().unwrap();
    let pending: Vec<_> = std::fs::read_dir(kai.pending_dir("asker"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let expected = kai.pending_dir("asker").join(format!("{run_id}.json"));
    check_eq!(run, pending, vec![expected.clone()]);
    let checkpoint = read_json(&expected).unwrap_or_else(|e| run.fail(e));
    check_eq!(run, checkpoint["run_id"], run_id);
    check_eq!(run, checkpoint["module"], "asker");
    check_eq!(run, checkpoint["entity"], "octo/repo#42");
    check_eq!(run, checkpoint["chat_id"], CHAT_ID);
    check_eq!(run, checkpoint["question"], question);
    check_eq!(
        run,
        checkpoint["checkpoint"],
        json!({"step": 2, "sha": "abc123"})
    );
    check_eq!(run, checkpoint["original_trigger"]["type"], "invoke");
    check_eq!(
        run,
        checkpoint["original_trigger"]["delivery_id"],
        entry["delivery_id"]
    );
    let asked = checkpoint["asked_at"].as_str().and_then(epoch_seconds);
    let expires = checkpoint["expires_at"].as_str().and_then(epoch_seconds);
    check!(
        run,
        asked.is_some() && expires.is_some(),
        "asked_at and expires_at are RFC 3339 times"
    );
    check_eq!(
        run,
        expires.unwrap() - asked.unwrap(),
        3 * 86_400,
        "the question expires 3d after it was asked"
    );
    check_eq!(run, kai.state("asker"), Some(json!({"asked": 1})));
}

#[test]
fn a_question_without_expiry_gets_seven_days() {
    let kai = Kai::new();
    kai.shell_module(
        "asker",
        "timeout: 3s\n",
        "#!/bin/sh\ncat >/dev/null\necho '{\"status\":\"paused\",\"summary\":\"?\",\"question\":{\"text\":\"Go?\"}}'\n",
    );
    let (run, entry) = kai.run_module("asker", &[]);
    run.success();
    check_eq!(run, entry["status"], "paused");
    let path = kai
        .pending_dir("asker")
        .join(format!("{}.json", entry["run_id"].as_str().unwrap()));
    let checkpoint = read_json(&path).unwrap_or_else(|e| run.fail(e));
    let asked = checkpoint["asked_at"].as_str().and_then(epoch_seconds);
    let expires = checkpoint["expires_at"].as_str().and_then(epoch_seconds);
    check_eq!(
        run,
        expires.zip(asked).map(|(e, a)| e - a),
        Some(7 * 86_400)
    );
}

#[test]
fn a_skipped_run_is_journaled_as_skipped() {
    let kai = Kai::new();
    kai.shell_module(
        "skipper",
        "timeout: 3s\n",
        "#!/bin/sh\ncat >/dev/null\necho 'not an error' >&2\necho '{\"status\":\"skipped\",\"summary\":\"Draft PR, nothing to do\"}'\n",
    );
    let (run, entry) = kai.run_module("skipper", &[]);
    run.success();
    check_eq!(run, entry["status"], "skipped");
    check_eq!(run, entry["summary"], "Draft PR, nothing to do");
    for field in ["error", "stderr_tail", "retry", "question"] {
        check!(
            run,
            entry.get(field).is_none(),
            "a skipped run has no `{field}`"
        );
    }
    check!(
        run,
        !kai.pending_dir("skipper").exists()
            || std::fs::read_dir(kai.pending_dir("skipper"))
                .unwrap()
                .next()
                .is_none(),
        "only a pause writes a checkpoint"
    );
}

#[test]
fn an_error_with_retry_is_journaled_with_retry() {
    let (_kai, run, entry) = failed_run(
        "flaky",
        r#"#!/bin/sh
cat >/dev/null
echo "GET /repos/octo/repo: 502 Bad Gateway" >&2
echo '{"status":"error","summary":"GitHub returned 502 twice","retry":true,"details":{"http_status":502}}'
"#,
    );
    check_eq!(run, entry["summary"], "GitHub returned 502 twice");
    check_eq!(run, entry["error"], "GitHub returned 502 twice");
    check_eq!(run, entry["retry"], true);
    check_eq!(run, entry["details"], json!({"http_status": 502}));
    check_eq!(
        run,
        entry["stderr_tail"],
        "GET /repos/octo/repo: 502 Bad Gateway"
    );
}

#[test]
fn state_carries_from_one_run_to_the_next() {
    let kai = Kai::new();
    let dir = kai.shell_module(
        "counter",
        "timeout: 3s\n",
        r#"#!/bin/sh
ctx=$(cat)
case "$ctx" in *'"keep":true'*)
  echo '{"status":"done","summary":"no state this time"}'
  exit 0;;
esac
n=$(printf '%s' "$ctx" | sed -n 's/.*"state":{"count":\([0-9]*\)}.*/\1/p')
n=$(( ${n:-0} + 1 ))
printf '%s' "$ctx" > "context-$n.json"
printf '{"status":"done","summary":"count %d","details":{"count":%d},"state":{"count":%d}}\n' "$n" "$n" "$n"
"#,
    );
    for n in 1..=3 {
        let (run, entry) = kai.run_module("counter", &[]);
        run.success();
        check_eq!(run, entry["summary"], format!("count {n}"));
        check_eq!(run, kai.state("counter"), Some(json!({"count": n})));
    }
    let first = read_json(&dir.join("context-1.json")).unwrap_or_else(|e| kai.fail(e));
    check_eq!(kai, first["state"], json!({}), "the first run gets {{}}");
    let second = read_json(&dir.join("context-2.json")).unwrap_or_else(|e| kai.fail(e));
    check_eq!(kai, second["state"], json!({"count": 1}));

    // A result without `state` leaves the state as it was.
    let (run, entry) = kai.run_module("counter", &["--data", r#"{"keep":true}"#]);
    run.success();
    check_eq!(run, entry["summary"], "no state this time");
    check_eq!(run, kai.state("counter"), Some(json!({"count": 3})));
    let (run, entry) = kai.run_module("counter", &[]);
    run.success();
    check_eq!(run, entry["summary"], "count 4");
    check_eq!(kai, kai.journal_files("counter").len(), 5);
}

#[test]
fn the_context_and_environment_are_as_documented() {
    let mut kai = Kai::new();
    kai.env("KAI_TEST_LISTED", "passed through")
        .env("KAI_TEST_UNLISTED", "must not leak")
        .env("SOME_HOST_VARIABLE", "must not leak either");
    let dir = kai.shell_module(
        "nosy",
        "timeout: 3s\nsettings: { model: sonnet, max_budget_usd: 1.5 }\nenv: [KAI_TEST_LISTED]\n",
        r#"#!/bin/sh
cat > context.json
env > env.txt
pwd > cwd.txt
echo '{"status":"done","summary":"saw it all"}'
"#,
    );
    let (run, entry) = kai.run_module(
        "nosy",
        &[
            "--entity",
            "octo/repo#42",
            "--data",
            r#"{"pr": 42, "why": "test"}"#,
        ],
    );
    run.success();
    let ctx = read_json(&dir.join("context.json")).unwrap_or_else(|e| run.fail(e));
    let keys: Vec<&str> = ctx
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for key in [
        "protocol", "run_id", "module", "attempt", "trigger", "entity", "chat_id", "settings",
        "state", "resume",
    ] {
        check!(
            run,
            keys.contains(&key),
            "the context has no `{key}`: {ctx}"
        );
    }
    check_eq!(run, ctx["protocol"], 1);
    check_eq!(run, ctx["run_id"], entry["run_id"]);
    check_eq!(run, ctx["module"], "nosy");
    check_eq!(run, ctx["attempt"], 1);
    check_eq!(run, ctx["trigger"]["type"], "invoke");
    check_eq!(run, ctx["trigger"]["delivery_id"], entry["delivery_id"]);
    check_eq!(
        run,
        ctx["trigger"]["payload"],
        json!({"pr": 42, "why": "test"})
    );
    check_eq!(run, ctx["entity"], "octo/repo#42");
    check_eq!(run, ctx["chat_id"], CHAT_ID);
    check_eq!(
        run,
        ctx["settings"],
        json!({"model": "sonnet", "max_budget_usd": 1.5})
    );
    check_eq!(run, ctx["state"], json!({}));
    check_eq!(run, ctx["resume"], Value::Null);

    check_eq!(run, entry["entity"], "octo/repo#42");
    check_eq!(run, entry["trigger"], "invoke");
    check_eq!(run, entry["chat_id"], CHAT_ID);
    check_eq!(run, entry["attempt"], 1);

    let env = env_file(&std::fs::read_to_string(dir.join("env.txt")).unwrap());
    let get = |k: &str| env.get(k).map(String::as_str);
    check_eq!(run, get("KAI_PROTOCOL"), Some("1"));
    check_eq!(run, get("KAI_MODULE"), Some("nosy"));
    check_eq!(run, get("KAI_RUN_ID"), entry["run_id"].as_str());
    let module_dir = kai.module_dir("nosy");
    check_eq!(run, get("KAI_MODULE_DIR"), module_dir.to_str());
    check!(
        run,
        get("KAI_API_URL").is_some_and(|u| u.starts_with("http://")),
        "KAI_API_URL: {:?}",
        get("KAI_API_URL")
    );
    check!(
        run,
        get("KAI_RUN_TOKEN").is_some_and(|t| t.len() >= 16),
        "KAI_RUN_TOKEN: {:?}",
        get("KAI_RUN_TOKEN")
    );
    check_eq!(run, get("KAI_CLAUDE_BIN"), Some("claude"));
    check!(run, get("PATH").is_some(), "PATH is passed");
    check!(run, get("HOME").is_some(), "HOME is passed");
    check_eq!(run, get("KAI_TEST_LISTED"), Some("passed through"));
    for leak in [
        "KAI_TEST_UNLISTED",
        "SOME_HOST_VARIABLE",
        "KAI_DATA_DIR",
        "KAI_NOTIFY_CHAT",
        "KAI_LOG",
    ] {
        check!(
            run,
            get(leak).is_none(),
            "{leak} leaked into the module's environment"
        );
    }
    let cwd = std::fs::read_to_string(dir.join("cwd.txt")).unwrap();
    check_eq!(
        run,
        std::fs::canonicalize(cwd.trim()).unwrap(),
        std::fs::canonicalize(&dir).unwrap(),
        "a module runs in its directory"
    );

    // A second run gets a new run id, delivery id and token.
    kai.run_module("nosy", &[]).0.success();
    let env2 = env_file(&std::fs::read_to_string(dir.join("env.txt")).unwrap());
    check!(
        kai,
        env2["KAI_RUN_TOKEN"] != env["KAI_RUN_TOKEN"] && env2["KAI_RUN_ID"] != env["KAI_RUN_ID"],
        "each run has its own token and id"
    );
    let ctx2 = read_json(&dir.join("context.json")).unwrap();
    check!(
        kai,
        ctx2["trigger"]["delivery_id"] != ctx["trigger"]["delivery_id"],
        "each run has its own delivery id"
    );
}

#[test]
fn secrets_never_reach_the_journal() {
    let mut kai = Kai::new();
    let github_token = "ghp_integrationTestSecret0123456789";
    kai.env("KAI_GITHUB_TOKEN", github_token);
    let dir = kai.shell_module(
        "leaky",
        "timeout: 3s\nenv: [KAI_GITHUB_TOKEN]\n",
        r#"#!/bin/sh
cat >/dev/null
echo "$KAI_GITHUB_TOKEN" > token.txt
echo "$KAI_RUN_TOKEN" > run-token.txt
echo "using token $KAI_GITHUB_TOKEN and $KAI_RUN_TOKEN" >&2
printf '{"status":"error","summary":"failed with %s","details":{"token":"%s","run":"%s"}}\n' \
  "$KAI_GITHUB_TOKEN" "$KAI_GITHUB_TOKEN" "$KAI_RUN_TOKEN"
"#,
    );
    let (run, entry) = kai.run_module("leaky", &[]);
    run.expect_code(1);
    let given = std::fs::read_to_string(dir.join("token.txt")).unwrap();
    check_eq!(
        run,
        given.trim(),
        github_token,
        "the listed secret reaches the module"
    );
    let run_token = std::fs::read_to_string(dir.join("run-token.txt")).unwrap();
    let run_token = run_token.trim();
    let path = kai.journal_files("leaky").pop().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    check!(
        run,
        !text.contains(github_token) && !text.contains(run_token),
        "a secret is in the journal file {}",
        path.display()
    );
    check!(
        run,
        !run.stdout().contains(github_token) && !run.stderr().contains(github_token),
        "a secret is in kai's output"
    );
    check_eq!(run, entry["summary"], "failed with [redacted]");
    check_eq!(
        run,
        entry["details"],
        json!({"token": "[redacted]", "run": "[redacted]"})
    );
}

#[test]
fn a_webhook_run_from_the_command_line_uses_the_entity_template() {
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
        "action": "opened",
        "repository": {"full_name": "octo/repo"},
        "pull_request": {"number": 42, "draft": false},
    });
    let file = kai.scratch().join("payload.json");
    std::fs::write(&file, payload.to_string()).unwrap();
    let (run, entry) = kai.run_module(
        "reviewer",
        &[
            "--event",
            "pull_request",
            "--payload",
            file.to_str().unwrap(),
        ],
    );
    run.success();
    check_eq!(run, entry["entity"], "octo/repo#42");
    check_eq!(run, entry["trigger"], "webhook:pull_request:opened");
    let path = kai.journal_files("reviewer").pop().unwrap();
    check!(
        run,
        path.to_string_lossy().ends_with("_octo-repo_42.json"),
        "the file name carries the entity's slug: {}",
        path.display()
    );
    let ctx = read_json(&dir.join("context.json")).unwrap();
    check_eq!(
        run,
        ctx["trigger"],
        json!({
            "type": "webhook",
            "source": "github",
            "event": "pull_request",
            "action": "opened",
            "delivery_id": entry["delivery_id"],
            "payload": payload,
        })
    );
}

#[test]
fn runs_in_the_same_second_get_files_of_their_own() {
    let kai = Kai::new();
    kai.shell_module(
        "quick",
        "timeout: 3s\n",
        "#!/bin/sh\ncat >/dev/null\necho '{\"status\":\"done\",\"summary\":\"quick\"}'\n",
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (run, entry) = kai.run_module("quick", &["--entity", "octo/repo#7"]);
        run.success();
        ids.push(entry["run_id"].as_str().unwrap().to_owned());
    }
    let journal = kai.journal("quick");
    check_eq!(kai, journal.len(), 5);
    for id in &ids {
        kai.entry_of("quick", id);
    }
}

#[test]
fn the_whole_group_is_killed_when_a_module_ends() {
    let kai = Kai::new();
    let dir = kai.shell_module(
        "leaver",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat >/dev/null
sleep 300 >/dev/null 2>&1 &
echo $! > background.pid
echo '{"status":"done","summary":"left a child behind"}'
"#,
    );
    let mut reaper = Reaper::default();
    let (run, entry) = kai.run_module("leaver", &[]);
    let child = read_pid(&dir.join("background.pid")).unwrap();
    reaper.watch(child);
    run.success();
    check_eq!(run, entry["status"], "done");
    check!(
        run,
        wait_gone(child, GONE_WITHIN),
        "the module's background child {child} outlived its run"
    );
}

#[test]
fn more_broken_results_are_errors() {
    let kai = Kai::new();
    let cases = [
        (
            "two",
            r#"echo '{"status":"done"}'; echo '{"status":"done"}'"#,
            "the output on stdout is not one JSON object",
        ),
        (
            "latin1",
            r#"printf '{"status":"done","summary":"caf\351"}\n'"#,
            "the output on stdout is not UTF-8",
        ),
        (
            "array",
            r#"echo '[{"status":"done"}]'"#,
            "the result on stdout is not a JSON object",
        ),
        (
            "signal",
            r#"echo '{"status":"done"}'; kill -SEGV $$"#,
            "killed by signal 11 (SIGSEGV)",
        ),
        (
            "nostatus",
            r#"echo '{"summary":"forgot the status"}'"#,
            "the result is not valid: missing field `status`",
        ),
    ];
    for (name, body, error) in cases {
        kai.shell_module(
            name,
            "timeout: 3s\n",
            &format!("#!/bin/sh\ncat >/dev/null\n{body}\n"),
        );
        let (run, entry) = kai.run_module(name, &[]);
        run.expect_code(1);
        check_eq!(run, entry["status"], "error", "module {name}");
        check!(
            run,
            entry["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(error)),
            "module {name}: error {} should start with {error:?}",
            entry["error"]
        );
    }
}

#[test]
fn a_module_that_cannot_start_is_a_journaled_error() {
    let kai = Kai::new();
    kai.write_module(
        "missing",
        "name: missing\ndescription: x\nrun: [\"./not-there\"]\ntimeout: 3s\n",
        &[],
    );
    let (run, entry) = kai.run_module("missing", &[]);
    run.expect_code(1);
    check_eq!(run, entry["status"], "error");
    check!(
        run,
        entry["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("could not start: ") && e.contains("not-there")),
        "error: {}",
        entry["error"]
    );
    kai.write_module(
        "noexec",
        "name: noexec\ndescription: x\nrun: [\"./main.sh\"]\ntimeout: 3s\n",
        &[("main.sh", "echo no shebang, no exec bit\n")],
    );
    let (run, entry) = kai.run_module("noexec", &[]);
    run.expect_code(1);
    check!(
        run,
        entry["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("could not start: ")),
        "error: {}",
        entry["error"]
    );
}

#[test]
fn a_broken_state_file_fails_the_run_and_is_kept() {
    let kai = Kai::new();
    let dir = kai.shell_module(
        "stateful",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat >/dev/null
touch ran
echo '{"status":"done","summary":"ok","state":{"fresh":true}}'
"#,
    );
    std::fs::write(dir.join("state.json"), "{ broken by hand").unwrap();
    let (run, entry) = kai.run_module("stateful", &[]);
    run.expect_code(1);
    check_eq!(run, entry["status"], "error");
    check!(
        run,
        entry["error"]
            .as_str()
            .is_some_and(|e| e.contains("state.json is not valid JSON")),
        "the error names the state file: {}",
        entry["error"]
    );
    check!(
        run,
        !dir.join("ran").exists(),
        "the module does not run on a state it cannot be given"
    );
    check_eq!(
        run,
        std::fs::read_to_string(dir.join("state.json")).unwrap(),
        "{ broken by hand",
        "the broken state is left for a person to fix"
    );
}

#[test]
fn a_big_payload_reaches_the_module_whole() {
    let kai = Kai::new();
    let dir = kai.shell_module(
        "reader",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat > context.json
echo '{"status":"done","summary":"read it"}'
"#,
    );
    let blob = "x".repeat(3 * 1024 * 1024);
    let payload = json!({"blob": blob, "n": 1});
    let file = kai.scratch().join("big.json");
    std::fs::write(&file, payload.to_string()).unwrap();
    let (run, _) = kai.run_module("reader", &["--payload", file.to_str().unwrap()]);
    run.success();
    let ctx = read_json(&dir.join("context.json")).unwrap_or_else(|e| run.fail(e));
    check!(
        run,
        ctx["trigger"]["payload"] == payload,
        "the payload arrived changed"
    );
}

#[test]
fn an_entity_cannot_steer_the_journal_file_elsewhere() {
    let kai = Kai::new();
    kai.shell_module(
        "quick",
        "timeout: 3s\n",
        "#!/bin/sh\ncat >/dev/null\necho '{\"status\":\"done\",\"summary\":\"ok\"}'\n",
    );
    for entity in ["../../../escape", "/etc/passwd", ".hidden", "a b:c@d"] {
        let (run, entry) = kai.run_module("quick", &["--entity", entity]);
        run.success();
        check_eq!(run, entry["entity"], entity);
    }
    let names: Vec<String> = kai
        .journal_files("quick")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    check_eq!(kai, names.len(), 4);
    check!(
        kai,
        names
            .iter()
            .all(|n| !n.contains('/') && !n.starts_with('.')),
        "names: {names:?}"
    );
    check!(
        kai,
        !kai.data_dir().join("escape").exists() && !kai.module_dir("escape").exists(),
        "nothing was written outside events/"
    );
}

#[test]
fn secrets_never_reach_a_question_or_its_checkpoint() {
    let mut kai = Kai::new();
    let github_token = "ghp_integrationTestSecret0123456789";
    kai.env("KAI_GITHUB_TOKEN", github_token);
    kai.shell_module(
        "asker",
        "timeout: 3s\nenv: [KAI_GITHUB_TOKEN]\n",
        r#"#!/bin/sh
cat >/dev/null
printf '{"status":"paused","summary":"asking","question":{"text":"Push with %s?","options":["yes %s","no"]},"checkpoint":{"token":"%s"}}\n' \
  "$KAI_GITHUB_TOKEN" "$KAI_GITHUB_TOKEN" "$KAI_GITHUB_TOKEN"
"#,
    );
    let (run, entry) = kai.run_module("asker", &[]);
    run.success();
    check_eq!(run, entry["status"], "paused");
    let run_id = entry["run_id"].as_str().unwrap();
    let pending = kai.pending_dir("asker").join(format!("{run_id}.json"));
    for path in [kai.journal_files("asker").pop().unwrap(), pending] {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| run.fail(e));
        check!(
            run,
            !text.contains(github_token),
            "the secret is in {}",
            path.display()
        );
    }
    check!(
        run,
        !run.stdout().contains(github_token),
        "the secret is in kai's output"
    );
}
