//! Crashes: kai killed with SIGKILL at every point of a run, by the test (`kill -9`) or by
//! itself (`KAI_CRASH_AT`), then started again. Whatever the point, each run ends with exactly
//! one journal file of the right status, no partial file, no run left in flight in the ledger,
//! and no module process left alive.
//!
//! The restart is `kai run echo`: every `kai run` first recovers what dead kai processes left.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(3);

/// A module that records who it is and then sleeps, in the foreground, until killed.
fn sleeper(kai: &Kai) -> PathBuf {
    kai.shell_module(
        "sleeper",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat > context.json
echo "$KAI_RUN_ID" > run_id
echo $$ > module.pid
sleep 300
"#,
    )
}

/// A module that does its work at once and returns `done` with state.
fn worker(kai: &Kai) -> PathBuf {
    kai.shell_module(
        "worker",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat > context.json
echo "$KAI_RUN_ID" > run_id
echo "working" >&2
echo '{"status":"done","summary":"work done","details":{"items":3},"state":{"done":1}}'
"#,
    )
}

/// The pid the sleeper module wrote once it read its context.
fn module_pid(kai: &Kai, dir: &std::path::Path) -> i32 {
    wait_for_file(&dir.join("module.pid"), WAIT)
        .and_then(|t| t.trim().parse::<i32>().ok())
        .unwrap_or_else(|| kai.fail("the module never wrote module.pid"))
}

/// The `sleep` the sleeper module started, once it has.
fn sleep_of(kai: &Kai, module: i32) -> i32 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(&pid) = children_of(module).first() {
            return pid;
        }
        if std::time::Instant::now() > deadline {
            kai.fail(format!("the module {module} never started its sleep"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `kai run sleeper`, waits until the module sleeps, and kills kai with SIGKILL.
/// Returns the run id, the module's pid and its `sleep`'s pid.
fn kill_mid_run(kai: &Kai, reaper: &mut Reaper) -> (String, i32, i32) {
    let dir = sleeper(kai);
    let bg = kai.spawn(&["run", "sleeper"]);
    let module = module_pid(kai, &dir);
    reaper.watch(module);
    let sleep = sleep_of(kai, module);
    reaper.watch(sleep);
    bg.signal(libc::SIGKILL);
    kai.finish(bg).expect_killed();
    let run_id = std::fs::read_to_string(dir.join("run_id")).unwrap();
    check!(
        kai,
        kai.journal_files("sleeper").is_empty(),
        "nothing is journaled before the restart"
    );
    (run_id.trim().to_owned(), module, sleep)
}

/// Runs `kai run worker` with `KAI_CRASH_AT=point`; returns the run id.
fn crash_at(kai: &Kai, module: &str, point: &str) -> String {
    let mut cmd = kai.command(&["run", module]);
    cmd.env("KAI_CRASH_AT", point);
    kai.exec(cmd).expect_killed();
    let run_id = std::fs::read_to_string(kai.module_dir(module).join("run_id"))
        .unwrap_or_else(|_| kai.fail("the module never ran"));
    run_id.trim().to_owned()
}

/// Starts kai again (`kai run echo`); checks that it says it recovered `run_id` with `status`.
fn restart(kai: &Kai, module: &str, run_id: &str, status: &str) -> Run {
    let run = kai.run(&["run", "echo"]);
    run.success();
    let line = format!("recovered run {run_id} of {module}: {status}");
    check!(
        run,
        run.stderr().contains(&line),
        "the restart must say `{line}`"
    );
    run
}

/// After recovery: no partial file anywhere, nothing in flight in the ledger, and starting
/// again recovers nothing more.
fn check_settled(kai: &Kai) {
    kai.check_every_json_parses();
    kai.check_ledger_settled();
    let again = kai.run(&["run", "echo"]);
    again.success();
    check!(
        again,
        !again.stderr().contains("recovered"),
        "a second restart must have nothing left to recover"
    );
}

#[test]
fn kill_9_mid_run_is_journaled_interrupted_once() {
    let kai = Kai::new();
    let mut reaper = Reaper::default();
    let (run_id, _, _) = kill_mid_run(&kai, &mut reaper);
    let row = kai.ledger().remove(&run_id);
    check_eq!(
        kai,
        row.map(|r| r.phase),
        Some("running".to_string()),
        "the killed run is in flight in the ledger"
    );

    let run = restart(&kai, "sleeper", &run_id, "interrupted");
    let (path, entry) = kai.entry_of("sleeper", &run_id);
    check_entry(&run, &path, &entry);
    check_eq!(run, entry["status"], "interrupted");
    check_eq!(
        run,
        entry["error"],
        "interrupted: kai stopped while the run was in flight"
    );
    check_eq!(run, kai.journal_files("sleeper").len(), 1);
    let ctx = read_json(&kai.module_dir("sleeper").join("context.json")).unwrap();
    check_eq!(
        run,
        entry["delivery_id"],
        ctx["trigger"]["delivery_id"],
        "the journal keeps the run's own trigger"
    );
    check_eq!(run, entry["entity"], ctx["entity"]);
    check_eq!(run, entry["chat_id"], CHAT_ID);
    check_settled(&kai);
    check_eq!(kai, kai.journal_files("sleeper").len(), 1);
}

/// kai records each attempt's process group in the ledger as soon as it exists; the restart's
/// recovery kills the group before journaling the run, so neither the module nor what it
/// started outlives the recovery. (Between the crash and the restart the module may go on:
/// kai does not use PR_SET_PDEATHSIG, which fires when the spawning *thread* exits.)
#[test]
fn kill_9_mid_run_leaves_no_module_process_behind() {
    let kai = Kai::new();
    let mut reaper = Reaper::default();
    let (run_id, module, sleep) = kill_mid_run(&kai, &mut reaper);
    restart(&kai, "sleeper", &run_id, "interrupted");
    check!(
        kai,
        wait_gone(module, WAIT),
        "the module process {module} outlived the recovery of its run"
    );
    check!(
        kai,
        wait_gone(sleep, WAIT),
        "the module's `sleep 300` (pid {sleep}, process group {module}) is still running \
         after kai was killed and the run recovered as interrupted"
    );
}

#[test]
fn crash_after_exit_is_journaled_interrupted_once() {
    let kai = Kai::new();
    worker(&kai);
    let run_id = crash_at(&kai, "worker", "after-exit");
    check!(
        kai,
        kai.journal_files("worker").is_empty(),
        "nothing is journaled before the restart"
    );
    let run = restart(&kai, "worker", &run_id, "interrupted");
    let (path, entry) = kai.entry_of("worker", &run_id);
    check_entry(&run, &path, &entry);
    check_eq!(run, entry["status"], "interrupted");
    check_eq!(run, kai.journal_files("worker").len(), 1);
    check_settled(&kai);
}

#[test]
fn crash_before_journal_writes_the_real_outcome_once() {
    let kai = Kai::new();
    worker(&kai);
    let run_id = crash_at(&kai, "worker", "before-journal");
    check!(
        kai,
        kai.journal_files("worker").is_empty(),
        "no journal file before the restart"
    );
    check_eq!(
        kai,
        kai.ledger().remove(&run_id).map(|r| r.phase),
        Some("finishing".to_string())
    );
    let run = restart(&kai, "worker", &run_id, "done");
    let (path, entry) = kai.entry_of("worker", &run_id);
    check_entry(&run, &path, &entry);
    check_eq!(run, entry["status"], "done");
    check_eq!(run, entry["summary"], "work done");
    check_eq!(run, entry["details"], json!({"items": 3}));
    check_eq!(run, kai.state("worker"), Some(json!({"done": 1})));
    check_eq!(run, kai.journal_files("worker").len(), 1);
    check_settled(&kai);
}

#[test]
fn crash_before_journal_of_a_paused_run_still_writes_its_checkpoint() {
    let kai = Kai::new();
    kai.shell_module(
        "asker",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat >/dev/null
echo "$KAI_RUN_ID" > run_id
echo '{"status":"paused","summary":"deploy?","question":{"text":"Deploy?","options":["yes","no"]},"checkpoint":{"step":1}}'
"#,
    );
    let run_id = crash_at(&kai, "asker", "before-journal");
    let pending = kai.pending_dir("asker").join(format!("{run_id}.json"));
    check!(kai, !pending.exists(), "no checkpoint before the restart");
    let run = restart(&kai, "asker", &run_id, "paused");
    let (path, entry) = kai.entry_of("asker", &run_id);
    check_entry(&run, &path, &entry);
    check_eq!(run, entry["status"], "paused");
    let checkpoint = read_json(&pending).unwrap_or_else(|e| run.fail(e));
    check_eq!(run, checkpoint["question"], entry["question"]);
    check_eq!(run, checkpoint["checkpoint"], json!({"step": 1}));
    check_settled(&kai);
}

#[test]
fn crash_after_journal_leaves_exactly_one_file() {
    let kai = Kai::new();
    worker(&kai);
    let run_id = crash_at(&kai, "worker", "after-journal");
    let files = kai.journal_files("worker");
    check_eq!(kai, files.len(), 1, "the file was written before the crash");
    let before = std::fs::read(&files[0]).unwrap();
    check_eq!(
        kai,
        kai.ledger().remove(&run_id).map(|r| r.phase),
        Some("finishing".to_string())
    );
    let run = restart(&kai, "worker", &run_id, "done");
    let (path, entry) = kai.entry_of("worker", &run_id);
    check_entry(&run, &path, &entry);
    check_eq!(run, entry["status"], "done");
    check_eq!(run, kai.journal_files("worker"), files);
    check!(
        run,
        std::fs::read(&path).unwrap() == before,
        "recovery rewrote the journal file with other content"
    );
    check_settled(&kai);
}

#[test]
fn a_crash_during_recovery_is_recovered_too() {
    let kai = Kai::new();
    worker(&kai);
    let run_id = crash_at(&kai, "worker", "after-exit");
    // The first restart dies while it journals the interrupted run...
    let mut cmd = kai.command(&["run", "echo"]);
    cmd.env("KAI_CRASH_AT", "after-journal");
    kai.exec(cmd).expect_killed();
    check_eq!(kai, kai.journal_files("worker").len(), 1);
    // ...and the second one finishes the job without a second file.
    let run = restart(&kai, "worker", &run_id, "interrupted");
    let (path, entry) = kai.entry_of("worker", &run_id);
    check_entry(&run, &path, &entry);
    check_eq!(run, entry["status"], "interrupted");
    check_eq!(run, kai.journal_files("worker").len(), 1);
    check_settled(&kai);
}

#[test]
fn ctrl_c_interrupts_the_run_and_journals_it() {
    let kai = Kai::new();
    let mut reaper = Reaper::default();
    // The module reads its context before it says it is ready: by then kai has installed its
    // Ctrl-C handler (it does so before it writes the context).
    let dir = sleeper(&kai);
    let bg = kai.spawn(&["run", "sleeper", "--json"]);
    let module = module_pid(&kai, &dir);
    reaper.watch(module);
    bg.signal(libc::SIGINT);
    let run = kai.finish(bg);
    run.expect_code(1);
    let entry = run.json();
    check_eq!(run, entry["status"], "interrupted");
    check_eq!(run, entry["error"], "interrupted: kai shut down");
    let (path, file_entry) = kai.entry_of("sleeper", entry["run_id"].as_str().unwrap());
    check_entry(&run, &path, &file_entry);
    check_eq!(run, file_entry, entry);
    check!(
        run,
        wait_gone(module, WAIT),
        "the module {module} outlived the interrupted run"
    );
    check_settled(&kai);
}

#[test]
fn sigterm_interrupts_the_run_and_journals_it() {
    // `kill PID`, a closed terminal's service manager, `timeout(1)`: a foreground `kai run`
    // told to stop must stop as on Ctrl-C, recording its run as interrupted and taking the
    // module's whole process group with it, not die and leave both to a later recovery.
    let kai = Kai::new();
    let mut reaper = Reaper::default();
    let dir = sleeper(&kai);
    let bg = kai.spawn(&["run", "sleeper", "--json"]);
    let module = module_pid(&kai, &dir);
    reaper.watch(module);
    let sleep = sleep_of(&kai, module);
    reaper.watch(sleep);
    bg.signal(libc::SIGTERM);
    let run = kai.finish(bg);
    let files = kai.journal_files("sleeper");
    check_eq!(
        run,
        files.len(),
        1,
        "the run is journaled by the kai that was stopped, before it exits"
    );
    let entry = read_json(&files[0]).unwrap_or_else(|e| run.fail(e));
    check_entry(&run, &files[0], &entry);
    check_eq!(run, entry["status"], "interrupted");
    run.expect_code(1);
    check!(
        run,
        wait_gone(sleep, WAIT),
        "the module's `sleep` {sleep} outlived the stopped run"
    );
    check_settled(&kai);
}

#[test]
fn recovery_leaves_the_runs_of_a_live_kai_alone() {
    let kai = Kai::new();
    let dir = kai.shell_module(
        "waiter",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat >/dev/null
echo "$KAI_RUN_ID" > run_id
while [ ! -e go ]; do sleep 0.02; done
echo '{"status":"done","summary":"went"}'
"#,
    );
    let bg = kai.spawn(&["run", "waiter", "--json"]);
    let run_id = wait_for_file(&dir.join("run_id"), WAIT)
        .unwrap_or_else(|| kai.fail("the module never started"));
    let run_id = run_id.trim();
    let other = kai.run(&["run", "echo"]);
    other.success();
    check!(
        other,
        !other.stderr().contains("recovered"),
        "a second kai must not recover the runs of a kai that is alive"
    );
    std::fs::write(dir.join("go"), "").unwrap();
    let run = kai.finish(bg);
    run.success();
    check_eq!(run, run.json()["status"], "done");
    let (_, entry) = kai.entry_of("waiter", run_id);
    check_eq!(run, entry["status"], "done");
    check_eq!(run, kai.journal_files("waiter").len(), 1);
    check_settled(&kai);
}

#[test]
fn exited_kai_processes_leave_no_owner_lock_files() {
    // `owners/` holds "one lock file per running kai process" (data_dir.rs). Once every kai
    // process is gone, whether it ended normally or crashed and was recovered, none is left;
    // otherwise the directory grows by one file per `kai run`, forever.
    let kai = Kai::new();
    worker(&kai);
    for _ in 0..3 {
        kai.run(&["run", "worker"]).success();
    }
    let run_id = crash_at(&kai, "worker", "after-exit");
    restart(&kai, "worker", &run_id, "interrupted");
    let locks = kai.owner_locks();
    check!(
        kai,
        locks.is_empty(),
        "no kai process is running, yet owners/ holds {} lock files: {locks:?}",
        locks.len()
    );
}
