//! Several kai processes at once on one data directory: `kai run` in several terminals, or
//! restarts racing each other after a crash. Each process must carry its own runs to exactly
//! one journal file, and each run a dead process left behind must be recovered exactly once.
//!
//! Races are not deterministic: each test repeats its round a few times, so that a race that
//! is there shows up; when the code is right, every round passes.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use common::*;

const ROUNDS: usize = 6;
const AT_ONCE: usize = 8;

fn quick(kai: &Kai) {
    kai.shell_module(
        "quick",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat >/dev/null
echo '{"status":"done","summary":"quick"}'
"#,
    );
}

/// Starts `AT_ONCE` commands at once and waits for all of them.
fn all_at_once(kai: &Kai, args: &[Vec<String>]) -> Vec<Run> {
    let started: Vec<Background> = args
        .iter()
        .map(|a| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            kai.spawn(&a)
        })
        .collect();
    started.into_iter().map(|bg| kai.finish(bg)).collect()
}

#[test]
fn concurrent_runs_all_finish_with_one_journal_file_each() {
    // The first round starts on an empty data directory: the ledger is created by several
    // processes at once.
    let kai = Kai::new();
    quick(&kai);
    for round in 0..ROUNDS {
        let args: Vec<Vec<String>> = (0..AT_ONCE)
            .map(|i| {
                vec![
                    "run".into(),
                    "quick".into(),
                    "--entity".into(),
                    format!("round{round}-run{i}"),
                ]
            })
            .collect();
        for run in all_at_once(&kai, &args) {
            check!(
                run,
                run.code() == Some(0),
                "round {round}: a `kai run` beside others failed"
            );
        }
        check_eq!(
            kai,
            kai.journal("quick").len(),
            (round + 1) * AT_ONCE,
            "round {round}: one journal file per run"
        );
    }
    kai.check_ledger_settled();
}

#[test]
fn concurrent_restarts_recover_each_crashed_run_once() {
    let kai = Kai::new();
    let dir = kai.shell_module(
        "sleeper",
        "timeout: 3s\n",
        r#"#!/bin/sh
cat >/dev/null
echo "$KAI_RUN_ID" > "started-$KAI_RUN_ID"
exec sleep 300
"#,
    );
    let started = || -> usize {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("started-"))
            .count()
    };
    for round in 0..ROUNDS {
        // Three kai processes, each killed with SIGKILL while its module sleeps. Each is
        // started once the one before it is running, so none recovers another.
        let mut killed = Vec::new();
        for i in 0..3 {
            let before = started();
            let bg = kai.spawn(&["run", "sleeper", "--entity", &format!("r{round}-{i}")]);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while started() == before {
                if std::time::Instant::now() > deadline {
                    kai.fail("the module never started");
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            killed.push(bg);
        }
        for bg in killed {
            bg.signal(libc::SIGKILL);
            kai.finish(bg).expect_killed();
        }
        let crashed: Vec<String> = kai
            .ledger()
            .into_iter()
            .filter(|(_, row)| row.phase == "running")
            .map(|(id, _)| id)
            .collect();
        check_eq!(
            kai,
            crashed.len(),
            3,
            "round {round}: three runs left in flight"
        );

        let args: Vec<Vec<String>> = (0..AT_ONCE)
            .map(|_| vec!["run".into(), "echo".into()])
            .collect();
        let runs = all_at_once(&kai, &args);
        let mut recovered: BTreeMap<&str, usize> = BTreeMap::new();
        for run in &runs {
            check!(
                run,
                run.code() == Some(0),
                "round {round}: a restart beside others failed"
            );
            for id in &crashed {
                if run.stderr().contains(&format!("recovered run {id} ")) {
                    *recovered.entry(id.as_str()).or_default() += 1;
                }
            }
        }
        for id in &crashed {
            check_eq!(
                kai,
                recovered.get(id.as_str()).copied(),
                Some(1),
                "round {round}: run {id} must be recovered by exactly one restart"
            );
            let (_, entry) = kai.entry_of("sleeper", id);
            check_eq!(kai, entry["status"], "interrupted");
        }
        kai.check_every_json_parses();
        kai.check_ledger_settled();
    }
}
