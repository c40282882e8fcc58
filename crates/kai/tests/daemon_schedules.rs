//! Schedules at the daemon level, with a clock the test controls: the real engine and daemon
//! in-process on a temporary data directory, `fire_schedules` called at chosen simulated
//! times, and the ledger (`kai.db`) read for what fired and what was logged as missed. Then the
//! daemon's queue is started for real, to see each fire become exactly one run.

mod daemon_support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use daemon_support::*;
use kai::config::{Config, SettingsArgs};
use kai::daemon::Daemon;
use kai::engine::Engine;
use kai::runner::ProcessRunner;
use serde_json::{json, Value};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

/// The daemon of `k`'s data directory, in this process.
fn daemon(k: &Kaid) -> Arc<Daemon> {
    let config = Config::resolve(&SettingsArgs {
        data_dir: Some(k.data_dir()),
        ..Default::default()
    })
    .unwrap_or_else(|e| k.fail(format!("config: {e:#}")));
    let engine = Engine::open(config, Arc::new(ProcessRunner))
        .unwrap_or_else(|e| k.fail(format!("engine: {e:#}")));
    Daemon::new(Arc::new(engine))
}

/// `fire_schedules` at `now`, as the daemon's 1 s tick would.
fn fire(k: &Kaid, d: &Daemon, now: &str) {
    k.note(format!("fire_schedules at {now}"));
    d.fire_schedules(utc(now), Duration::from_secs(1))
        .unwrap_or_else(|e| k.fail(format!("fire_schedules at {now}: {e:#}")));
}

/// The schedule fires of `module` in the inbox: (delivery id, trigger).
fn fires(k: &Kaid, module: &str) -> Vec<(String, Value)> {
    let conn = k.db();
    let mut stmt = conn
        .prepare(
            "SELECT delivery_id, trigger_json FROM deliveries
             WHERE source = 'schedule' AND module = ?1 ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([module], |r| {
        let t: String = r.get(1)?;
        Ok((r.get(0)?, serde_json::from_str(&t).unwrap_or(Value::Null)))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn fire_ids(k: &Kaid, module: &str) -> Vec<String> {
    fires(k, module).into_iter().map(|(id, _)| id).collect()
}

/// The stored last fire time of each schedule trigger of `module`.
fn last_fires(k: &Kaid, module: &str) -> Vec<(String, String)> {
    let conn = k.db();
    let mut stmt = conn
        .prepare("SELECT trigger, last_fire FROM schedules WHERE module = ?1 ORDER BY trigger")
        .unwrap();
    stmt.query_map([module], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Runs the daemon's queue for real until `module` has `n` journal entries, then stops it.
fn run_queue(k: &Kaid, d: &Arc<Daemon>, module: &str, n: usize) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pump = rt.spawn(d.clone().pump());
    let ok = poll(PATIENCE, || {
        k.journal(module).len() >= n && k.runs().iter().all(|r| r.phase == "finished")
    });
    d.shutdown.cancel();
    rt.block_on(async {
        let _ = pump.await;
        d.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(20), d.tasks.wait()).await;
    });
    require!(k, ok, "{module} should have {n} journal entries");
    // Nothing more appears once the queue has stopped with everything finished.
    k.journal(module)
}

#[test]
fn an_interval_fires_once_per_due_time_and_never_twice_for_one_time() {
    let k = Kaid::new();
    k.write_module("ticker", "triggers:\n  - every: 1m\n", SAVE_CONTEXT);
    let d = daemon(&k);

    fire(&k, &d, "2030-01-07T08:00:00Z");
    require!(
        k,
        fire_ids(&k, "ticker").is_empty(),
        "first sight fires nothing"
    );
    let stored = last_fires(&k, "ticker");
    require_eq!(k, stored.len(), 1, "first sight is remembered: {stored:?}");
    require!(
        k,
        stored[0].1.starts_with("2030-01-07T08:00:00"),
        "the grid is anchored at first sight: {stored:?}"
    );

    fire(&k, &d, "2030-01-07T08:00:30Z");
    require!(k, fire_ids(&k, "ticker").is_empty(), "not due yet");

    fire(&k, &d, "2030-01-07T08:01:00Z");
    let first = "schedule:ticker:0:2030-01-07T08:01:00Z".to_owned();
    require_eq!(
        k,
        fire_ids(&k, "ticker"),
        vec![first.clone()],
        "on time: one fire"
    );
    let (_, t) = &fires(&k, "ticker")[0];
    require_eq!(k, t["type"], json!("schedule"), "{t}");
    require_eq!(k, t["event"], json!("every 1m"), "{t}");
    require_eq!(
        k,
        t["payload"],
        json!({"fire_time": "2030-01-07T08:01:00Z", "catch_up": false, "missed": 0}),
        "{t}"
    );

    // The same moment again, and later within the same minute: nothing more.
    fire(&k, &d, "2030-01-07T08:01:00Z");
    fire(&k, &d, "2030-01-07T08:01:00Z");
    fire(&k, &d, "2030-01-07T08:01:45Z");
    require_eq!(
        k,
        fire_ids(&k, "ticker"),
        vec![first.clone()],
        "never twice for one time"
    );

    fire(&k, &d, "2030-01-07T08:02:05Z");
    let second = "schedule:ticker:0:2030-01-07T08:02:00Z".to_owned();
    require_eq!(
        k,
        fire_ids(&k, "ticker"),
        vec![first.clone(), second.clone()],
        "the next minute fires"
    );
    require!(
        k,
        d.engine
            .ledger
            .decisions(Some("ticker"), None, 100)
            .unwrap()
            .is_empty(),
        "nothing was missed"
    );

    let journal = run_queue(&k, &d, "ticker", 2);
    require_eq!(k, journal.len(), 2, "each fire is one run");
    let ids: Vec<Value> = journal.iter().map(|e| e["delivery_id"].clone()).collect();
    require_eq!(k, ids, vec![json!(first), json!(second)], "the runs' fires");
    for e in &journal {
        require_eq!(k, e["trigger"], json!("schedule:every 1m"), "{e}");
        require_eq!(k, e["status"], json!("done"), "{e}");
    }
    drop(d);

    // After a restart the stored fire time still holds: the same moment fires nothing.
    let d = daemon(&k);
    fire(&k, &d, "2030-01-07T08:02:05Z");
    fire(&k, &d, "2030-01-07T08:02:30Z");
    require_eq!(
        k,
        fire_ids(&k, "ticker").len(),
        2,
        "a restart fires nothing again"
    );

    // Three days down (catchup skip, the default): the minute just passed is on time and
    // fires; the 4319 before it are not run, and the why-not log says so.
    fire(&k, &d, "2030-01-10T08:02:30Z");
    let f = fires(&k, "ticker");
    require_eq!(k, f.len(), 3, "one fire after the downtime: {f:?}");
    require_eq!(
        k,
        f[2].0,
        "schedule:ticker:0:2030-01-10T08:02:00Z",
        "the on-time fire"
    );
    require_eq!(
        k,
        f[2].1["payload"],
        json!({"fire_time": "2030-01-10T08:02:00Z", "catch_up": false, "missed": 4319}),
        "the on-time fire's payload"
    );
    let missed: Vec<_> = d
        .engine
        .ledger
        .decisions(Some("ticker"), None, 100)
        .unwrap()
        .into_iter()
        .filter(|d| d.reason == "missed_schedule")
        .collect();
    require_eq!(
        k,
        missed.len(),
        1,
        "one decision for the downtime: {missed:?}"
    );
    let m = &missed[0];
    require_eq!(k, m.reason, "missed_schedule", "{m:?}");
    require!(
        k,
        m.detail.contains("4319 fire time(s)")
            && m.detail.contains("2030-01-07T08:03:00Z")
            && m.detail.contains("2030-01-10T08:01:00Z"),
        "the decision says what was missed: {m:?}"
    );
    require!(
        k,
        !m.detail.contains("catch-up"),
        "with catchup skip nothing is caught up (the run is the on-time fire), yet the \
         decision says: {}",
        m.detail
    );
}

#[test]
fn a_berlin_schedule_fires_on_time_and_skips_a_three_day_downtime_with_a_decision() {
    let k = Kaid::new();
    k.write_module(
        "daily-skip",
        "triggers:\n  - schedule: \"0 9 * * *\"\n    tz: Europe/Berlin\n    catchup: skip\n",
        SAVE_CONTEXT,
    );
    let d = daemon(&k);
    // 08:59:30 in Berlin (summer time, UTC+2).
    fire(&k, &d, "2030-06-03T06:59:30Z");
    require!(
        k,
        fire_ids(&k, "daily-skip").is_empty(),
        "first sight fires nothing"
    );
    fire(&k, &d, "2030-06-03T07:00:10Z");
    let on_time = "schedule:daily-skip:0:2030-06-03T07:00:00Z".to_owned();
    require_eq!(
        k,
        fire_ids(&k, "daily-skip"),
        vec![on_time.clone()],
        "09:00 Berlin fires once"
    );
    fire(&k, &d, "2030-06-03T07:00:10Z");
    fire(&k, &d, "2030-06-03T07:00:50Z");
    fire(&k, &d, "2030-06-03T08:00:00Z");
    require_eq!(
        k,
        fire_ids(&k, "daily-skip").len(),
        1,
        "never twice for one time"
    );

    // Down from then until 12:00 Berlin three days later: three 09:00s passed.
    fire(&k, &d, "2030-06-06T10:00:00Z");
    fire(&k, &d, "2030-06-06T10:00:00Z");
    require_eq!(
        k,
        fire_ids(&k, "daily-skip").len(),
        1,
        "catchup skip runs nothing"
    );
    let missed = d
        .engine
        .ledger
        .decisions(Some("daily-skip"), None, 100)
        .unwrap();
    require_eq!(
        k,
        missed.len(),
        1,
        "one decision for the downtime: {missed:?}"
    );
    let m = &missed[0];
    require_eq!(k, m.reason, "missed_schedule", "{m:?}");
    require_eq!(k, m.trigger, "schedule:0 9 * * * Europe/Berlin", "{m:?}");
    require_eq!(
        k,
        m.delivery_id.as_deref(),
        Some("schedule:daily-skip:0:2030-06-06T07:00:00Z"),
        "{m:?}"
    );
    require!(
        k,
        m.detail.contains("3 fire time(s)")
            && m.detail.contains("2030-06-04T07:00:00Z")
            && m.detail.contains("2030-06-06T07:00:00Z")
            && m.detail.contains("catchup: skip"),
        "the decision says what was missed: {m:?}"
    );
    // The same through the why-not log's table.
    let rows = k.decisions(Some("daily-skip"));
    require_eq!(k, rows.len(), 1, "{rows:?}");
    require_eq!(k, rows[0].reason, "missed_schedule", "{rows:?}");

    // The next day runs on time again.
    fire(&k, &d, "2030-06-07T07:00:05Z");
    require_eq!(
        k,
        fire_ids(&k, "daily-skip"),
        vec![
            on_time.clone(),
            "schedule:daily-skip:0:2030-06-07T07:00:00Z".to_owned()
        ],
        "the next 09:00 fires"
    );
    require_eq!(
        k,
        k.decisions(Some("daily-skip")).len(),
        1,
        "no new decision"
    );

    let journal = run_queue(&k, &d, "daily-skip", 2);
    require_eq!(k, journal.len(), 2, "two fires, two runs");
    for e in &journal {
        require_eq!(
            k,
            e["trigger"],
            json!("schedule:0 9 * * * Europe/Berlin"),
            "{e}"
        );
        require_eq!(k, e["status"], json!("done"), "{e}");
    }
}

#[test]
fn catchup_once_gives_exactly_one_run_after_a_three_day_downtime() {
    let k = Kaid::new();
    k.write_module(
        "daily-once",
        "triggers:\n  - schedule: \"0 9 * * *\"\n    tz: Europe/Berlin\n    catchup: once\n",
        SAVE_CONTEXT,
    );
    let d = daemon(&k);
    fire(&k, &d, "2030-06-03T06:00:00Z");
    require!(
        k,
        fire_ids(&k, "daily-once").is_empty(),
        "first sight fires nothing"
    );

    // Down until 12:00 Berlin three days later: 09:00 on the 3rd, 4th, 5th and 6th passed.
    fire(&k, &d, "2030-06-06T10:00:00Z");
    fire(&k, &d, "2030-06-06T10:00:00Z");
    fire(&k, &d, "2030-06-06T10:00:30Z");
    let f = fires(&k, "daily-once");
    require_eq!(k, f.len(), 1, "one catch-up fire: {f:?}");
    require_eq!(
        k,
        f[0].0,
        "schedule:daily-once:0:2030-06-06T07:00:00Z",
        "the latest missed time"
    );
    require_eq!(
        k,
        f[0].1["payload"],
        json!({"fire_time": "2030-06-06T07:00:00Z", "catch_up": true, "missed": 3}),
        "the catch-up fire's payload"
    );
    let missed = d
        .engine
        .ledger
        .decisions(Some("daily-once"), None, 100)
        .unwrap();
    require_eq!(k, missed.len(), 1, "{missed:?}");
    require_eq!(k, missed[0].reason, "missed_schedule", "{missed:?}");
    require!(
        k,
        missed[0].detail.contains("3 fire time(s)")
            && missed[0].detail.contains("one catch-up run instead"),
        "{missed:?}"
    );

    let journal = run_queue(&k, &d, "daily-once", 1);
    require_eq!(k, journal.len(), 1, "exactly one run");
    let e = &journal[0];
    require_eq!(
        k,
        e["delivery_id"],
        json!("schedule:daily-once:0:2030-06-06T07:00:00Z"),
        "{e}"
    );
    let ctx = k.saved_context("daily-once", e["run_id"].as_str().unwrap());
    require_eq!(k, ctx["trigger"]["type"], json!("schedule"), "{ctx}");
    require_eq!(
        k,
        ctx["trigger"]["payload"]["catch_up"],
        json!(true),
        "{ctx}"
    );
    require_eq!(k, k.runs().len(), 1, "one run in the ledger");
}
