//! The daemon's moving parts: the dispatcher (inbox → runs or decisions), the queue (runs →
//! processes, within each module's limits), the scheduler and the manifest watcher. One
//! `Daemon` holds what they share; `serve` starts them and stops them.
//!
//! Data flows one way: an adapter (HTTP, scheduler, later Telegram and the API) accepts a
//! trigger into the durable inbox and wakes the dispatcher; the dispatcher asks the registry
//! and the guardrails and queues runs in the ledger; the queue starts them; the engine
//! journals them; what the owner is told goes through the durable outbox.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use chrono::{DateTime, Utc};
use kai_core::announce::{announce, Announcement};
use kai_core::guard::{admit, Admission, Reason};
use kai_core::registry::{Match, WebhookEvent};
use kai_core::{LoadedModule, Registry, Trigger as ManifestTrigger};
use kai_sdk::{Trigger, TriggerType};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::engine::{day_start, new_run_id, off_runtime, Engine, RunEnd};
use crate::ledger::OutMessage;
use crate::ledger::{Decision, Delivery, Dispatch, NewRun};
use crate::modules::load_registry;

/// Runs in flight, for the limits.
#[derive(Default)]
struct Running {
    per_module: HashMap<String, u32>,
    entities: HashSet<(String, String)>,
}

pub struct Daemon {
    pub engine: Arc<Engine>,
    registry: RwLock<Arc<Registry>>,
    wake: Notify,
    running: Mutex<Running>,
    /// Stops loops and the starting of new runs.
    pub shutdown: CancellationToken,
    /// Kills runs still going once the shutdown grace period is over.
    pub kill_runs: CancellationToken,
    pub tasks: TaskTracker,
}

fn decision(
    d: &Trigger,
    module: Option<&str>,
    entity: Option<&str>,
    reason: Reason,
    detail: String,
) -> Decision {
    Decision {
        at: Utc::now(),
        module: module.map(str::to_owned),
        entity: entity.map(str::to_owned),
        trigger: d.label(),
        delivery_id: d.delivery_id.clone(),
        reason: reason.as_str().to_owned(),
        detail,
    }
}

impl Daemon {
    pub fn new(engine: Arc<Engine>) -> Arc<Daemon> {
        let registry = load_registry(&engine.data.modules_dir());
        Arc::new(Daemon {
            engine,
            registry: RwLock::new(Arc::new(registry)),
            wake: Notify::new(),
            running: Mutex::new(Running::default()),
            shutdown: CancellationToken::new(),
            kill_runs: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Something changed: a delivery arrived, a run ended, the registry was reloaded.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Accepts a trigger into the inbox; `false` for a delivery id seen before.
    pub fn accept(&self, delivery: &Delivery) -> Result<bool> {
        let fresh = self.engine.ledger.accept(delivery)?;
        if fresh {
            self.wake();
        }
        Ok(fresh)
    }

    /// Logs a duplicate delivery against every module it would have reached.
    pub fn record_duplicate(&self, source: &str, trigger: &Trigger) {
        let registry = self.registry();
        let ev = WebhookEvent {
            source,
            event: trigger.event.as_deref().unwrap_or_default(),
            action: trigger.action.as_deref(),
            payload: &trigger.payload,
        };
        let detail = format!(
            "delivery {} was seen before",
            trigger.delivery_id.as_deref().unwrap_or("?")
        );
        let mut modules: Vec<Option<String>> = registry
            .match_webhook(&ev)
            .into_iter()
            .map(|m| match m {
                Match::Run { module, .. } | Match::Mismatch { module, .. } => {
                    Some(module.name().to_owned())
                }
            })
            .collect();
        if modules.is_empty() {
            modules.push(None);
        }
        for module in modules {
            let d = decision(
                trigger,
                module.as_deref(),
                None,
                Reason::Duplicate,
                detail.clone(),
            );
            if let Err(e) = self.engine.ledger.decide(&d) {
                warn!("cannot log a decision: {e:#}");
            }
        }
    }

    /// The dispatcher and the queue, until shutdown.
    pub async fn pump(self: Arc<Self>) {
        loop {
            let more = off_runtime(|| self.dispatch_inbox()).unwrap_or_else(|e| {
                warn!("dispatch failed, will retry: {e:#}");
                false
            });
            if let Err(e) = off_runtime(|| self.start_runs()) {
                warn!("starting runs failed, will retry: {e:#}");
            }
            let next = self.engine.ledger.next_not_before().ok().flatten();
            let pause = next
                .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            if more {
                // The inbox is not empty: go round again, but let other tasks in first.
                tokio::task::yield_now().await;
                if self.shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Turns waiting deliveries into runs and decisions: a few batches at a time, so that under
    /// a steady stream the queue still gets to start runs. Returns whether some are left.
    fn dispatch_inbox(&self) -> Result<bool> {
        for _ in 0..8 {
            // One transaction per batch, ended early whenever another writer waits.
            let batch = self.engine.ledger.undispatched(32)?;
            if batch.is_empty() {
                return Ok(false);
            }
            let registry = self.registry();
            let notes = self.engine.ledger.dispatch(|tx| {
                let mut told = false;
                for (n, (seq, delivery)) in batch.iter().enumerate() {
                    // Commit what is done and let the waiting writer (a webhook being
                    // acknowledged, a run finishing) in; the rest is picked up next round.
                    if n > 0 && self.engine.ledger.contended() {
                        break;
                    }
                    let (runs, decisions, note) = self.plan(tx, &registry, delivery)?;
                    for run in &runs {
                        tx.queue(run, *seq)?;
                    }
                    for d in &decisions {
                        debug!(module = ?d.module, reason = %d.reason, "{}", d.detail);
                        tx.decide(d)?;
                    }
                    if let Some(text) = note {
                        tx.enqueue(&OutMessage::to_chat(None, None, text))?;
                        told = true;
                    }
                    tx.done(*seq)?;
                }
                Ok(told)
            })?;
            if notes {
                self.engine.outbox_wake.notify_one();
            }
        }
        Ok(true)
    }

    /// What one delivery becomes: runs to queue, decisions to log, and an announcement when no
    /// module takes the event.
    fn plan(
        &self,
        tx: &Dispatch<'_>,
        registry: &Registry,
        d: &Delivery,
    ) -> Result<(Vec<NewRun>, Vec<Decision>, Option<String>)> {
        let mut runs = Vec::new();
        let mut decisions = Vec::new();
        let t = &d.trigger;
        let now = Utc::now();
        let consider = |module: &LoadedModule,
                        entity: String,
                        runs: &mut Vec<NewRun>,
                        decisions: &mut Vec<Decision>|
         -> Result<()> {
            let budget_day = module.manifest.budget.map(|_| day_start(now));
            let facts = tx.facts(module.name(), &entity, budget_day)?;
            // Two runs for one entity planned from one delivery cannot happen (one run per
            // module), and earlier deliveries of the batch are already in `tx`, so the facts
            // are the whole truth here.
            // A resume carries on a run the guardrails admitted already: it only waits for a
            // free slot (concurrency) and its entity's turn.
            let admission = match t.kind {
                TriggerType::Resume => Admission::Run,
                _ => admit(&module.manifest, &facts, now),
            };
            match admission {
                Admission::Run => {
                    let run_id = d.run_id.clone().unwrap_or_else(new_run_id);
                    let limit = module.manifest.concurrency.0;
                    if facts.active_runs >= limit {
                        decisions.push(decision(
                            t,
                            Some(module.name()),
                            Some(&entity),
                            Reason::Concurrency,
                            format!("run {run_id} queued: {limit} run(s) of {} already going (concurrency {limit})", module.name()),
                        ));
                    }
                    runs.push(NewRun {
                        run_id,
                        module: module.name().to_owned(),
                        entity,
                        trigger: t.clone(),
                        chat_id: d.chat_id.or(self.engine.config.chat_id()),
                    })
                }
                Admission::Decline(reason, detail) => decisions.push(decision(
                    t,
                    Some(module.name()),
                    Some(&entity),
                    reason,
                    detail,
                )),
            }
            Ok(())
        };
        if let Some(name) = &d.module {
            match registry.get(name) {
                Some(module) => {
                    let entity = match &d.entity {
                        Some(e) => e.clone(),
                        None => module
                            .manifest
                            .entity_for(&t.payload, t.kind.as_str())
                            .unwrap_or_else(|_| t.kind.as_str().to_owned()),
                    };
                    consider(module, entity, &mut runs, &mut decisions)?;
                }
                None => decisions.push(decision(
                    t,
                    Some(name),
                    d.entity.as_deref(),
                    Reason::Filter,
                    format!("module {name} is not loaded"),
                )),
            }
            return Ok((runs, decisions, None));
        }
        let event = t.event.as_deref().unwrap_or_default();
        let ev = WebhookEvent {
            source: &d.source,
            event,
            action: t.action.as_deref(),
            payload: &t.payload,
        };
        let matches = registry.match_webhook(&ev);
        let own = self.own_account(&d.source, &t.payload);
        let mut taken = false;
        for m in matches {
            taken = true;
            match m {
                Match::Run { module, entity } => match &own {
                    Some(login) => decisions.push(decision(
                        t,
                        Some(module.name()),
                        Some(&entity),
                        Reason::Loop,
                        format!("sent by kai's own account {login}"),
                    )),
                    None => consider(module, entity, &mut runs, &mut decisions)?,
                },
                Match::Mismatch { module, reason } => decisions.push(decision(
                    t,
                    Some(module.name()),
                    None,
                    Reason::Filter,
                    reason,
                )),
            }
        }
        let note = match (taken, d.source.as_str()) {
            (false, "github") => match announce(event, &t.payload) {
                Announcement::Text(text) => Some(text),
                Announcement::Ignored(why) => {
                    debug!("event not announced: {why}");
                    None
                }
            },
            _ => None,
        };
        Ok((runs, decisions, note))
    }

    /// The login of kai's own GitHub account when it sent this event.
    fn own_account(&self, source: &str, payload: &Value) -> Option<String> {
        let own = self.engine.config.github_login.as_deref()?;
        let sender = payload.get("sender")?.get("login")?.as_str()?;
        (source == "github" && sender.eq_ignore_ascii_case(own)).then(|| sender.to_owned())
    }

    /// Starts every queued run its module's limits allow.
    fn start_runs(self: &Arc<Self>) -> Result<()> {
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        let registry = self.registry();
        // Free slots per module: with a long backlog most waiting runs cannot start, and the
        // scan stops as soon as none can.
        let mut free: HashMap<String, u32> = registry
            .modules()
            .map(|m| {
                let limit = m.manifest.concurrency.0;
                (
                    m.name().to_owned(),
                    limit.saturating_sub(self.running_count(m.name())),
                )
            })
            .collect();
        if free.values().all(|&f| f == 0) {
            return Ok(());
        }
        for waiting in self.engine.ledger.startable(Utc::now(), 1000)? {
            if free.values().all(|&f| f == 0) {
                break;
            }
            if free.get(&waiting.module) == Some(&0) {
                continue;
            }
            let key = (waiting.module.clone(), waiting.entity.clone());
            let Some(module) = registry.get(&waiting.module).cloned() else {
                // The module went away while its run waited: the run ends, saying why.
                if let Some(row) = self.engine.ledger.get(&waiting.run_id)? {
                    let reason = format!("module {} is no longer loaded", row.module);
                    if let Err(e) = self.engine.abandon(&row, reason) {
                        warn!("cannot close run {}: {e:#}", row.run_id);
                    }
                }
                continue;
            };
            let limit = module.manifest.concurrency.0;
            {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                if running.entities.contains(&key) {
                    continue; // one run per entity at a time; this one waits its turn
                }
                if running.per_module.get(&key.0).copied().unwrap_or(0) >= limit {
                    continue;
                }
                *running.per_module.entry(key.0.clone()).or_default() += 1;
                running.entities.insert(key.clone());
            }
            if let Some(f) = free.get_mut(&key.0) {
                *f = f.saturating_sub(1);
            }
            let Some(row) = self.engine.ledger.get(&waiting.run_id)? else {
                self.release(&key);
                continue;
            };
            let daemon = self.clone();
            self.tasks.spawn(async move {
                let end = daemon.engine.start_queued(&module, &row, daemon.kill_runs.clone()).await;
                match end {
                    Ok(RunEnd::Finished(f)) => {
                        info!(run = %f.entry.run_id, module = %f.entry.module, status = %f.entry.status, "run finished")
                    }
                    Ok(RunEnd::Retrying { attempt, not_before }) => {
                        info!(run = %row.run_id, module = %row.module, attempt, %not_before, "run will be retried")
                    }
                    Ok(RunEnd::NotStartable) => debug!(run = %row.run_id, "run already taken or not due"),
                    Err(e) => warn!(run = %row.run_id, "run failed in kai: {e:#}"),
                }
                daemon.release(&key);
                daemon.wake();
            });
        }
        Ok(())
    }

    fn release(&self, key: &(String, String)) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = running.per_module.get_mut(&key.0) {
            *c = c.saturating_sub(1);
        }
        running.entities.remove(key);
    }

    fn running_count(&self, module: &str) -> u32 {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.per_module.get(module).copied().unwrap_or(0)
    }

    /// Reminds of questions and expires them, every `tick`, until shutdown.
    /// Also forgets, once an hour, messages sent and updates handled more than a week ago.
    pub async fn watch_questions(self: Arc<Self>, tick: Duration) {
        let mut pruned = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            if let Err(e) = crate::questions::sweep(&self.engine, Utc::now()) {
                warn!("cannot check questions' expiry, will retry: {e:#}");
            }
            if pruned.elapsed() >= Duration::from_secs(3600) {
                pruned = std::time::Instant::now();
                let week_ago = Utc::now() - chrono::Duration::days(7);
                if let Err(e) = off_runtime(|| self.engine.ledger.prune_chat(week_ago)) {
                    warn!("cannot prune the outbox: {e:#}");
                }
            }
            self.wake();
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Re-reads the manifests when any of them changed, every `every`, until shutdown.
    pub async fn watch_manifests(self: Arc<Self>, every: Duration) {
        let mut seen = manifest_fingerprint(&self.engine.data.modules_dir());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let now = manifest_fingerprint(&self.engine.data.modules_dir());
            if now == seen {
                continue;
            }
            seen = now;
            let registry = load_registry(&self.engine.data.modules_dir());
            for e in registry.errors() {
                warn!("module not loaded: {e}");
            }
            info!(
                modules = registry.len(),
                "manifests changed; modules reloaded"
            );
            *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
            self.wake();
        }
    }

    /// Fires schedules, every `tick`, until shutdown.
    pub async fn run_schedules(self: Arc<Self>, tick: Duration) {
        loop {
            if let Err(e) = self.fire_schedules(Utc::now(), tick) {
                warn!("schedules: {e:#}");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Handles every schedule trigger at `now`: fires what is due, logs what was missed.
    pub fn fire_schedules(&self, now: DateTime<Utc>, tick: Duration) -> Result<()> {
        use kai_core::schedule::{fire_key, plan};
        let grace = (tick * 2).max(Duration::from_secs(60));
        let registry = self.registry();
        let mut fired = false;
        for module in registry.modules() {
            for (index, trigger) in module.manifest.triggers.iter().enumerate() {
                let (label, catchup) = match trigger {
                    ManifestTrigger::Schedule { cron, tz, .. } => (
                        format!(
                            "{} {}",
                            cron.as_str(),
                            tz.map(|z| z.name()).unwrap_or("UTC")
                        ),
                        "schedule",
                    ),
                    ManifestTrigger::Every { interval, .. } => {
                        (format!("every {interval}"), "every")
                    }
                    _ => continue,
                };
                let key = format!("{index}:{label}");
                let last = self.engine.ledger.last_fire(module.name(), &key)?;
                let p = plan(trigger, last, now, grace);
                let trig = |fire: DateTime<Utc>| Trigger {
                    kind: TriggerType::Schedule,
                    source: None,
                    event: Some(label.clone()),
                    action: None,
                    delivery_id: Some(fire_key(module.name(), index, fire)),
                    payload: serde_json::json!({
                        "fire_time": fire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        "catch_up": p.catch_up,
                        "missed": p.skipped_count,
                    }),
                };
                let delivery = p.run.map(|fire| Delivery {
                    source: "schedule".into(),
                    delivery_id: fire_key(module.name(), index, fire),
                    trigger: trig(fire),
                    module: Some(module.name().to_owned()),
                    entity: None,
                    chat_id: None,
                    run_id: None,
                });
                let mut decisions = Vec::new();
                if p.skipped_count > 0 {
                    let first = p.skipped.first().copied().unwrap_or(now);
                    // `skipped` keeps only the first times of a long downtime; the last missed
                    // one is the latest due time before the one that runs, if one runs.
                    let last_missed = match p.run {
                        Some(run) => {
                            plan(trigger, last, run - chrono::Duration::seconds(1), grace).last_fire
                        }
                        None => p.last_fire,
                    };
                    let detail = format!(
                        "{} fire time(s) of {catchup} `{label}` passed while kai was down ({} to {}); {}",
                        p.skipped_count,
                        first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        last_missed.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        match (p.run.is_some(), p.catch_up) {
                            (true, true) => "one catch-up run instead",
                            (true, false) => "not run; the latest fire time runs on time",
                            (false, _) => "not run (catchup: skip)",
                        }
                    );
                    decisions.push(decision(
                        &trig(last_missed),
                        Some(module.name()),
                        None,
                        Reason::MissedSchedule,
                        detail,
                    ));
                }
                if delivery.is_some() || !decisions.is_empty() || last != Some(p.last_fire) {
                    self.engine.ledger.schedule_handled(
                        module.name(),
                        &key,
                        p.last_fire,
                        delivery.as_ref(),
                        &decisions,
                    )?;
                }
                fired |= delivery.is_some();
            }
        }
        if fired {
            self.wake();
        }
        Ok(())
    }
}

/// Names, sizes and times of every manifest: a change in any of them means reload.
fn manifest_fingerprint(modules_dir: &std::path::Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(modules_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path().join("module.yaml");
            let meta = std::fs::metadata(&path).ok()?;
            Some((
                path.to_string_lossy().into_owned(),
                meta.len(),
                meta.modified().ok(),
            ))
        })
        .collect();
    out.sort();
    out
}
