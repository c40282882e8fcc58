//! End to end: what survives `kill -9` (SPEC 4: "a valid delivery is written durably before the
//! 202"; "after a crash or restart, queued runs start, and runs that were in flight are retried
//! or recorded as interrupted; nothing is silently dropped") and what a retry looks like.

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_support::*;
use serde_json::{json, Value};

/// What one delivery got.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Accepted,
    Duplicate,
    Other(u16, String),
    /// No answer: refused, reset, or the daemon died mid-request.
    Failed(String),
}

fn classify(id: &str, r: std::io::Result<Response>) -> Answer {
    match r {
        Ok(r) if r.status == 202 && r.json() == json!({"accepted": true, "delivery_id": id}) => {
            Answer::Accepted
        }
        Ok(r) if r.status == 200 && r.json() == json!({"duplicate": true, "delivery_id": id}) => {
            Answer::Duplicate
        }
        Ok(r) => Answer::Other(r.status, r.text()),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

fn send(port: u16, secret: &str, id: &str, body: &[u8]) -> Answer {
    let headers = [
        ("X-GitHub-Event", "pull_request".to_owned()),
        ("X-GitHub-Delivery", id.to_owned()),
        ("X-Hub-Signature-256", sign(secret, body)),
    ];
    classify(id, post(port, "/webhook/github", &headers, body))
}

/// Delivery ids per module in its journal, with how many entries each has.
fn journal_counts(k: &Kaid, module: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in k.journal(module) {
        let id = e["delivery_id"].as_str().unwrap_or("").to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

#[test]
fn random_sigkills_lose_no_accepted_delivery_and_count_none_twice() {
    const MODULES: [&str; 2] = ["durable-a", "durable-b"];
    let mut k = Kaid::new();
    for m in MODULES {
        k.write_module(
            m,
            &format!(
                "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nconcurrency: 4\nnotify: none\n",
                github_trigger("pull_request", Some(&["synchronize"]))
            ),
            "#!/bin/sh\ncat > /dev/null\nsleep 0.2\necho '{\"status\":\"done\",\"summary\":\"ok\"}'\n",
        );
    }
    let mut rng = Rng::from_time();
    k.note(format!("random seed {}", rng.seed()));
    k.start();

    // The stream: one delivery after another, each a fresh id for a PR of its own, to
    // whichever daemon is up; what each got is recorded.
    let port = Arc::new(AtomicU16::new(k.port()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<(String, u64, Answer)>>> = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let (port, stop, sent) = (port.clone(), stop.clone(), sent.clone());
        let secret = k.secret();
        let mut rng = Rng::new(rng.next());
        std::thread::spawn(move || {
            let mut pr = 1000;
            while !stop.load(Ordering::SeqCst) {
                let p = port.load(Ordering::SeqCst);
                if p == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                pr += 1;
                let id = delivery_id();
                let answer = send(p, &secret, &id, &synchronize_for_pr(pr));
                sent.lock().unwrap().push((id, pr, answer));
                std::thread::sleep(Duration::from_millis(rng.range(10, 40)));
            }
        })
    };
    for round in 0..4 {
        let up = rng.range(300, 1200);
        std::thread::sleep(Duration::from_millis(up));
        k.note(format!("round {round}: SIGKILL after {up} ms up"));
        // No new request goes to the old port once the daemon is dead (another test's daemon
        // may get it); the request in flight, if any, meets the crash.
        port.store(0, Ordering::SeqCst);
        k.kill();
        k.start();
        port.store(k.port(), Ordering::SeqCst);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    sender.join().expect("the sender thread");
    let first: Vec<(String, u64, Answer)> = sent.lock().unwrap().clone();
    let count = |want: fn(&Answer) -> bool| first.iter().filter(|(_, _, a)| want(a)).count();
    k.note(format!(
        "{} deliveries: {} accepted, {} failed, {} other",
        first.len(),
        count(|a| *a == Answer::Accepted),
        count(|a| matches!(a, Answer::Failed(_))),
        count(|a| matches!(a, Answer::Other(..)))
    ));
    for (id, _, a) in &first {
        require!(
            k,
            matches!(a, Answer::Accepted | Answer::Failed(_)),
            "delivery {id} got {a:?}: a fresh id is accepted or the daemon was down"
        );
    }
    require!(
        k,
        count(|a| *a == Answer::Accepted) > 10,
        "too few deliveries went through"
    );

    // Let everything settle and check the first rule before GitHub redelivers anything.
    k.wait_settled();
    let accepted: BTreeSet<String> = first
        .iter()
        .filter(|(_, _, a)| *a == Answer::Accepted)
        .map(|(id, _, _)| id.clone())
        .collect();
    for m in MODULES {
        let counts = journal_counts(&k, m);
        for id in &accepted {
            require_eq!(
                k,
                counts.get(id).copied().unwrap_or(0),
                1,
                "{m}: delivery {id} got a 202 and must have exactly one journal entry"
            );
        }
        for (id, n) in &counts {
            require!(k, *n == 1, "{m}: delivery {id} is journaled {n} times");
        }
    }

    // GitHub redelivers what got no answer, with the same id: each is now accepted (it was
    // not stored) or a duplicate (it was, just before the crash), and runs once either way.
    let mut redelivered = 0;
    for (id, pr, a) in &first {
        if matches!(a, Answer::Failed(_)) {
            let again = send(k.port(), &k.secret(), id, &synchronize_for_pr(*pr));
            k.note(format!("redelivery of {id}: {again:?}"));
            require!(
                k,
                matches!(again, Answer::Accepted | Answer::Duplicate),
                "a redelivery of {id} got {again:?}"
            );
            redelivered += 1;
        }
    }
    k.note(format!("{redelivered} redelivered"));
    k.wait_settled();

    let all: BTreeSet<String> = first.iter().map(|(id, _, _)| id.clone()).collect();
    for m in MODULES {
        require!(
            k,
            poll(PATIENCE, || journal_counts(&k, m).len() == all.len()),
            "{m}: every delivery should have run once"
        );
        let counts = journal_counts(&k, m);
        require_eq!(
            k,
            counts.keys().cloned().collect::<BTreeSet<_>>(),
            all,
            "{m}: the journaled deliveries"
        );
        for (id, n) in &counts {
            require!(k, *n == 1, "{m}: delivery {id} is journaled {n} times");
        }
        let entries = k.journal(m);
        let run_ids: BTreeSet<&str> = entries
            .iter()
            .filter_map(|e| e["run_id"].as_str())
            .collect();
        require_eq!(
            k,
            run_ids.len(),
            entries.len(),
            "{m}: a run id in two files"
        );
        for e in &entries {
            require!(
                k,
                e["status"] == "done" || e["status"] == "interrupted",
                "{m}: unexpected outcome {e}"
            );
        }
        let retried = entries.iter().filter(|e| e["attempt"] != json!(1)).count();
        k.note(format!("{m}: {retried} runs needed more than one attempt"));
    }
    let inbox: Vec<String> = k.inbox().into_iter().map(|(_, id, _)| id).collect();
    require_eq!(
        k,
        inbox.iter().cloned().collect::<BTreeSet<_>>(),
        all,
        "the inbox"
    );
    require_eq!(k, inbox.len(), all.len(), "a delivery twice in the inbox");
    let runs = k.runs();
    require_eq!(
        k,
        runs.len(),
        all.len() * MODULES.len(),
        "runs in the ledger"
    );
    require!(
        k,
        runs.iter().all(|r| r.phase == "finished"),
        "every run is finished"
    );
    k.print_notes();
    k.stop();
}

#[test]
fn a_run_in_flight_when_kai_is_killed_runs_again_and_is_journaled_once() {
    let mut k = Kaid::new();
    let dir = k.write_module(
        "long",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nnotify: none\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        ),
        r#"#!/bin/sh
ctx=$(cat)
case "$ctx" in
  *'"attempt":1,'*)
    echo $$ > "$KAI_MODULE_DIR/first.pid"
    sleep 20
    echo '{"status":"done","summary":"first attempt"}'
    ;;
  *) echo '{"status":"done","summary":"again"}' ;;
esac
"#,
    );
    k.start();
    let id = k.deliver(
        "pull_request",
        &fixture("pull_request.synchronize.json").body,
    );
    require!(
        k,
        poll(PATIENCE, || dir.join("first.pid").exists()),
        "the first attempt did not start"
    );
    k.kill();
    // The orphaned first attempt is in its own process group: end it.
    if let Some(pid) = std::fs::read_to_string(dir.join("first.pid"))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    {
        // SAFETY: signalling a process group this test's module started.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    require!(k, k.journal("long").is_empty(), "nothing is journaled yet");
    k.start();
    k.wait_log(&["requeued a run left in flight", "module=long"]);
    let journal = k.wait_journal("long", 1);
    k.wait_settled();
    std::thread::sleep(Duration::from_millis(500));
    let journal2 = k.journal("long");
    require_eq!(k, journal2.len(), 1, "one journal entry for the run");
    require_eq!(k, journal, journal2, "the journal");
    let e = &journal[0];
    require_eq!(k, e["delivery_id"], json!(id), "{e}");
    require_eq!(
        k,
        e["attempt"],
        json!(2),
        "the run resumed as attempt 2: {e}"
    );
    require_eq!(k, e["summary"], json!("again"), "{e}");
    let runs = k.runs();
    require_eq!(k, runs.len(), 1, "one run, not a new one: {runs:?}");
    require_eq!(k, runs[0].attempt, 2, "{runs:?}");
    k.stop();
}

#[test]
fn a_module_asking_for_a_retry_runs_again_and_is_journaled_once() {
    let mut k = Kaid::new();
    k.write_module(
        "flaky",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nnotify: none\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        ),
        r#"#!/bin/sh
ctx=$(cat)
echo "$KAI_RUN_ID" >> "$KAI_MODULE_DIR/attempts.log"
case "$ctx" in
  *'"attempt":3,'*) echo '{"status":"done","summary":"third time lucky"}' ;;
  *) echo '{"status":"error","summary":"GitHub returned 502","retry":true}' ;;
esac
"#,
    );
    k.start();
    let id = k.deliver(
        "pull_request",
        &fixture("pull_request.synchronize.json").body,
    );
    let journal = k.wait_journal("flaky", 1);
    k.wait_settled();
    let e: &Value = &journal[0];
    require_eq!(
        k,
        k.journal("flaky").len(),
        1,
        "one journal entry for three attempts"
    );
    require_eq!(k, e["attempt"], json!(3), "{e}");
    require_eq!(k, e["status"], json!("done"), "{e}");
    require_eq!(k, e["delivery_id"], json!(id), "{e}");
    let attempts =
        std::fs::read_to_string(k.module_dir("flaky").join("attempts.log")).unwrap_or_default();
    let attempts: Vec<&str> = attempts.lines().collect();
    require_eq!(k, attempts.len(), 3, "three attempts");
    require!(
        k,
        attempts.iter().all(|r| *r == e["run_id"]),
        "the attempts are one run: {attempts:?}"
    );
    require_eq!(
        k,
        k.log_lines(&["run will be retried", "module=flaky"]).len(),
        2,
        "two retries are logged"
    );
    k.stop();
}

#[test]
fn deliveries_arriving_while_runs_finish_leave_no_run_behind() {
    // Webhook intake writes to the ledger on its own connection while runs are being
    // finished on the other: every run must still end journaled, none stuck in `running`.
    const MODULES: usize = 6;
    const SENDERS: usize = 6;
    const EACH: usize = 20;
    let mut k = Kaid::new();
    for i in 0..MODULES {
        k.write_module(
            &format!("fast-{i}"),
            &format!(
                "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nconcurrency: 8\nnotify: none\n",
                github_trigger("pull_request", Some(&["synchronize"]))
            ),
            "#!/bin/sh\ncat > /dev/null\necho '{\"status\":\"done\",\"summary\":\"ok\"}'\n",
        );
    }
    k.start();
    let port = k.port();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let secret = k.secret();
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|i| {
                        let id = delivery_id();
                        let pr = (s * EACH + i) as u64 + 1;
                        let answer = send(port, &secret, &id, &synchronize_for_pr(pr));
                        (id, answer)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for s in senders {
        for (id, answer) in s.join().expect("a sender thread") {
            require_eq!(k, answer, Answer::Accepted, "delivery {id}");
            ids.insert(id);
        }
    }
    let settled = poll(PATIENCE, || {
        k.settled() || !k.log_lines(&["run failed in kai"]).is_empty()
    }) && k.settled();
    let failed = k.log_lines(&["run failed in kai"]);
    require!(
        k,
        failed.is_empty(),
        "{} runs failed inside kai and were left behind: {:?}",
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    require!(k, settled, "runs are left unfinished in the ledger");
    for i in 0..MODULES {
        let m = format!("fast-{i}");
        let counts = journal_counts(&k, &m);
        require_eq!(
            k,
            counts.keys().cloned().collect::<BTreeSet<_>>(),
            ids,
            "{m}: every delivery ran"
        );
        require!(
            k,
            counts.values().all(|n| *n == 1),
            "{m}: a delivery ran twice"
        );
    }
    k.stop();
}

#[test]
fn ctrl_c_lets_runs_finish_within_the_grace_interrupts_the_rest_and_keeps_the_queue() {
    let mut k = Kaid::new();
    k.write_module(
        "quick",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nconcurrency: 2\nnotify: none\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        ),
        &sleeper("2"),
    );
    // The first run hangs (until kai kills it); later ones finish at once.
    k.write_module(
        "stuck",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nnotify: none\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        ),
        r#"#!/bin/sh
cat > "$KAI_MODULE_DIR/ctx-$KAI_RUN_ID.json"
if [ ! -e "$KAI_MODULE_DIR/hung" ]; then
  : > "$KAI_MODULE_DIR/hung"
  sleep 60
fi
echo '{"status":"done","summary":"ok"}'
"#,
    );
    k.start();
    let d1 = k.deliver("pull_request", &synchronize_for_pr(1));
    let d2 = k.deliver("pull_request", &synchronize_for_pr(2));
    // quick runs both at once; stuck runs d1 and keeps d2 waiting (concurrency 1).
    let started = |m: &str| {
        std::fs::read_dir(k.module_dir(m))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("ctx-"))
                    .count()
            })
            .unwrap_or(0)
    };
    require!(
        k,
        poll(PATIENCE, || started("quick") == 2 && started("stuck") == 1),
        "the runs did not start"
    );
    require!(
        k,
        poll(PATIENCE, || !k
            .decisions_for("stuck", "concurrency")
            .is_empty()),
        "stuck's second run should wait for the concurrency limit"
    );
    k.stop();
    k.wait_log(&["stopping: runs in flight get"]);
    k.wait_log(&["stopped"]);

    let quick = k.journal("quick");
    require_eq!(
        k,
        quick.len(),
        2,
        "runs that end within the grace are journaled"
    );
    for e in &quick {
        require_eq!(k, e["status"], json!("done"), "{e}");
    }
    let stuck = k.journal("stuck");
    require_eq!(k, stuck.len(), 1, "the hung run is journaled");
    require_eq!(k, stuck[0]["delivery_id"], json!(d1), "{}", stuck[0]);
    require_eq!(k, stuck[0]["status"], json!("interrupted"), "{}", stuck[0]);
    let waiting: Vec<RunRow> = k
        .runs()
        .into_iter()
        .filter(|r| r.phase != "finished")
        .collect();
    require_eq!(k, waiting.len(), 1, "one run still queued: {waiting:?}");
    require_eq!(k, waiting[0].phase, "queued", "{waiting:?}");
    require_eq!(k, waiting[0].delivery_id, Some(d2.clone()), "{waiting:?}");

    // The queued run starts after a restart; the interrupted one is not run again.
    k.start();
    let stuck = k.wait_journal("stuck", 2);
    k.wait_settled();
    std::thread::sleep(Duration::from_millis(500));
    let stuck2 = k.journal("stuck");
    require_eq!(k, stuck2.len(), 2, "nothing more ran");
    require_eq!(k, stuck, stuck2, "the journal");
    let done: Vec<&Value> = stuck.iter().filter(|e| e["status"] == "done").collect();
    require_eq!(k, done.len(), 1, "{stuck:?}");
    require_eq!(k, done[0]["delivery_id"], json!(d2), "the queued run ran");
    require_eq!(k, k.journal("quick").len(), 2, "quick ran nothing more");
    k.stop();
}
