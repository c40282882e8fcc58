//! End to end: the guardrails of SPEC 3.2 as the real daemon applies them to real webhook
//! deliveries: `per_entity: coalesce`, `concurrency`, one run per entity at a time, `budget`.

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use daemon_support::*;
use serde_json::json;

/// A module script that records when each run starts and ends (`spans.log`: `start|end RUN_ID
/// NANOS`) and how many runs of the module it saw going at once (`seen.log`), using one marker
/// file per run in flight. Each run then sleeps `secs`, and, with `gate`, first waits for the
/// file `go` in the module's directory (at most 60 s), so that the test decides when runs end.
fn recorder(secs: &str, gate: bool) -> String {
    let wait = if gate {
        "n=0\nwhile [ ! -e \"$d/go\" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done\n"
    } else {
        ""
    };
    format!(
        r#"#!/bin/sh
cat > /dev/null
d="$KAI_MODULE_DIR"
echo "start $KAI_RUN_ID $(date +%s%N)" >> "$d/spans.log"
: > "$d/running.$KAI_RUN_ID"
ls "$d" | grep -c '^running\.' >> "$d/seen.log"
{wait}sleep {secs}
ls "$d" | grep -c '^running\.' >> "$d/seen.log"
rm -f "$d/running.$KAI_RUN_ID"
echo "end $KAI_RUN_ID $(date +%s%N)" >> "$d/spans.log"
echo '{{"status":"done","summary":"recorded"}}'
"#
    )
}

/// Runs of the module in `dir` going now (their marker files).
fn running_now(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("running."))
                .count()
        })
        .unwrap_or(0)
}

/// Lets gated runs of the module in `dir` go on.
fn open_gate(dir: &Path) {
    std::fs::write(dir.join("go"), "").unwrap();
}

/// The most runs that were going at once according to `spans.log`, and the spans per run.
fn max_overlap(dir: &Path) -> (usize, BTreeMap<String, (u128, u128)>) {
    let text = std::fs::read_to_string(dir.join("spans.log")).unwrap_or_default();
    let mut spans: BTreeMap<String, (u128, u128)> = BTreeMap::new();
    let mut events: Vec<(u128, i32)> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [kind, run, nanos] = parts[..] else {
            continue;
        };
        let Ok(t) = nanos.parse::<u128>() else {
            continue;
        };
        let span = spans.entry(run.to_owned()).or_insert((0, 0));
        if kind == "start" {
            span.0 = t;
            events.push((t, 1));
        } else {
            span.1 = t;
            events.push((t, -1));
        }
    }
    // Ends before starts at the same instant: touching spans do not overlap.
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    (max as usize, spans)
}

/// The largest count in `seen.log`.
fn max_seen(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("seen.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn ten_synchronize_deliveries_within_a_second_coalesce_into_at_most_two_runs() {
    let mut k = Kaid::new();
    let dir = k.write_module(
        "coalescer",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nper_entity: coalesce\nnotify: none\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        ),
        &recorder("0.2", true),
    );
    k.start();
    let body = fixture("pull_request.synchronize.json").body;
    // The first run waits at the gate until all ten are in: the burst meets a run going.
    let started = std::time::Instant::now();
    let ids: Vec<String> = (0..10).map(|_| k.deliver("pull_request", &body)).collect();
    k.note(format!("10 deliveries sent in {:?}", started.elapsed()));
    require!(
        k,
        poll(PATIENCE, || k.inbox().iter().all(|(_, _, d)| *d)),
        "the deliveries were not dispatched"
    );
    open_gate(&dir);
    k.wait_journal("coalescer", 1);
    k.wait_settled();

    let journal = k.journal("coalescer");
    let coalesced = k.decisions_for("coalescer", "coalesced");
    let runs = journal.len();
    require!(
        k,
        (1..=2).contains(&runs),
        "a burst for one PR gives at most 2 runs (one going, one waiting); got {runs}"
    );
    require_eq!(
        k,
        coalesced.len(),
        10 - runs,
        "every delivery that did not run is a coalesced decision"
    );
    // Each delivery is accounted for exactly once: a run or a decision.
    let mut accounted: Vec<String> = journal
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap_or("").to_owned())
        .chain(
            coalesced
                .iter()
                .map(|d| d.delivery_id.clone().unwrap_or_default()),
        )
        .collect();
    accounted.sort();
    let mut expected = ids.clone();
    expected.sort();
    require_eq!(
        k,
        accounted,
        expected,
        "each delivery is a run or a decision, once"
    );
    require_eq!(
        k,
        journal[0]["delivery_id"],
        json!(ids[0]),
        "the first delivery runs"
    );
    let run_ids: BTreeSet<String> = journal
        .iter()
        .map(|e| e["run_id"].as_str().unwrap_or("").to_owned())
        .collect();
    for d in &coalesced {
        require_eq!(
            k,
            d.entity.as_deref(),
            Some("Codertocat/Hello-World#2"),
            "{d:?}"
        );
        let into = d.detail.rsplit(' ').next().unwrap_or("");
        require!(
            k,
            run_ids.contains(into),
            "a coalesced delivery names the run it was folded into: {d:?}"
        );
    }
    let (overlap, _) = max_overlap(&dir);
    require_eq!(k, overlap, 1, "runs for one entity never overlap");
    k.stop();
}

#[test]
fn concurrency_is_never_exceeded_and_one_entity_runs_one_at_a_time() {
    let mut k = Kaid::new();
    let pair = k.write_module(
        "pair",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nconcurrency: 2\nnotify: none\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        ),
        &recorder("0.3", true),
    );
    let single = k.write_module(
        "one-entity",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}\"\nconcurrency: 5\nper_entity: queue\nnotify: none\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        ),
        &recorder("0.5", false),
    );
    k.start();
    // Six pull requests: six entities for `pair`, one entity for `one-entity`.
    let ids: Vec<String> = (101..=106)
        .map(|n| k.deliver("pull_request", &synchronize_for_pr(n)))
        .collect();
    // Two runs of `pair` go and wait at the gate; the other four must wait for them.
    require!(
        k,
        poll(PATIENCE, || running_now(&pair) == 2),
        "two runs of pair should be going"
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    require_eq!(
        k,
        running_now(&pair),
        2,
        "with two runs going, concurrency 2 starts no third"
    );
    require!(
        k,
        poll(PATIENCE, || k.decisions_for("pair", "concurrency").len()
            == 4),
        "the four runs that wait for the limit are logged as concurrency decisions"
    );
    open_gate(&pair);
    k.wait_journal("pair", 6);
    k.wait_journal("one-entity", 6);
    k.wait_settled();

    let (overlap, spans) = max_overlap(&pair);
    let seen = max_seen(&pair);
    k.note(format!(
        "pair: overlap {overlap}, seen {seen}, spans {spans:?}"
    ));
    require_eq!(k, spans.len(), 6, "pair ran six times");
    require!(
        k,
        overlap <= 2,
        "concurrency 2 exceeded: {overlap} runs at once"
    );
    require!(
        k,
        seen <= 2,
        "concurrency 2 exceeded: a run saw {seen} runs going"
    );
    require_eq!(k, overlap, 2, "two runs were held going at once");
    let waits = k.decisions_for("pair", "concurrency");
    require_eq!(
        k,
        waits.len(),
        4,
        "one concurrency decision per waiting run"
    );
    let waited: BTreeSet<String> = waits.iter().map(|d| d.detail.clone()).collect();
    require_eq!(
        k,
        waited.len(),
        waits.len(),
        "one concurrency decision per waiting run"
    );
    let got: BTreeSet<String> = k
        .journal("pair")
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap_or("").to_owned())
        .collect();
    require_eq!(
        k,
        got,
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        "each ran once"
    );

    let (overlap, spans) = max_overlap(&single);
    k.note(format!("one-entity: overlap {overlap}, spans {spans:?}"));
    require_eq!(
        k,
        spans.len(),
        6,
        "one-entity ran six times (per_entity: queue)"
    );
    require_eq!(
        k,
        overlap,
        1,
        "runs for one entity never overlap, whatever the concurrency"
    );
    require_eq!(k, max_seen(&single), 1, "one-entity saw another run going");
    k.stop();
}

#[test]
fn a_budget_stops_the_module_says_so_and_enable_lifts_it() {
    let mut k = Kaid::new();
    k.write_module(
        "spender",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nbudget: {{ usd_per_day: 0.5 }}\nnotify: none\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        ),
        "#!/bin/sh\ncat > /dev/null\necho '{\"status\":\"done\",\"summary\":\"spent\",\"details\":{\"cost_usd\":0.3}}'\n",
    );
    k.start();
    let send = |n: u64| k.deliver("pull_request", &synchronize_for_pr(n));

    let first = send(1);
    k.wait_journal("spender", 1);
    k.wait_settled();
    require!(
        k,
        k.log_lines(&["budget reached"]).is_empty(),
        "$0.30 of $0.50 is within the budget"
    );
    let second = send(2);
    k.wait_journal("spender", 2);
    k.wait_settled();
    let line = k.wait_log(&["kai::notify", "[spender]", "budget reached"]);
    require!(
        k,
        line.contains("$0.60 spent today of $0.50") && line.contains("kai modules enable spender"),
        "the budget note says how much and what to do: {line}"
    );

    let third = send(3);
    let fourth = send(4);
    require!(
        k,
        poll(PATIENCE, || k.decisions_for("spender", "budget").len() == 2),
        "deliveries over the budget are budget decisions"
    );
    k.wait_settled();
    require_eq!(k, k.journal("spender").len(), 2, "no run over the budget");
    let budget = k.decisions_for("spender", "budget");
    let declined: Vec<Option<String>> = budget.iter().map(|d| d.delivery_id.clone()).collect();
    require_eq!(
        k,
        declined,
        vec![Some(third.clone()), Some(fourth.clone())],
        "the budget decisions"
    );
    for d in &budget {
        require!(
            k,
            d.detail
                .contains("budget reached: $0.60 spent today of $0.50"),
            "{d:?}"
        );
    }
    let listed = k.kai_json(&["journal", "--decisions", "spender", "--json"]);
    require!(
        k,
        listed
            .as_array()
            .is_some_and(|a| a.iter().filter(|d| d["reason"] == "budget").count() == 2),
        "kai journal --decisions lists the budget decisions"
    );

    // A manual enable lifts the budget for the day.
    let out = k.kai(&["modules", "enable", "spender"]);
    require!(k, out.status.success(), "kai modules enable spender failed");
    let fifth = send(5);
    let journal = k.wait_journal("spender", 3);
    k.wait_settled();
    let ran: Vec<&str> = journal
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap_or(""))
        .collect();
    require_eq!(
        k,
        ran,
        vec![first.as_str(), second.as_str(), fifth.as_str()],
        "runs before the budget, and after the enable"
    );
    require_eq!(
        k,
        k.log_lines(&["budget reached"]).len(),
        1,
        "the budget note comes once"
    );
    k.stop();
}
