//! Guardrails: whether a trigger that reached a module becomes a run, and when a queued run
//! may start. The facts (what is queued, running, spent) come from the ledger; the rules live
//! here so that they can be tested without one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::journal::JournalStatus;
use crate::manifest::{Manifest, Notify, PerEntity};

/// Why a trigger that reached a module started no run: the why-not log's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The delivery id was seen before.
    Duplicate,
    /// A run for the same entity started less than `cooldown` ago.
    Cooldown,
    /// Folded into a run for the same entity that is waiting to start.
    Coalesced,
    /// `per_entity: skip` and a run for the same entity is queued or running.
    Skipped,
    /// The module is disabled (manifest or switch).
    Disabled,
    /// The module's spending today reached `budget.usd_per_day`.
    Budget,
    /// The payload did not pass the trigger's `where` filters (or the entity template).
    Filter,
    /// The run waits: the module already has `concurrency` runs going.
    Concurrency,
    /// The event came from kai's own GitHub account.
    Loop,
    /// A schedule fire time passed while kai was down (`catchup: skip`).
    MissedSchedule,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Duplicate => "duplicate",
            Reason::Cooldown => "cooldown",
            Reason::Coalesced => "coalesced",
            Reason::Skipped => "skipped",
            Reason::Disabled => "disabled",
            Reason::Budget => "budget",
            Reason::Filter => "filter",
            Reason::Concurrency => "concurrency",
            Reason::Loop => "loop",
            Reason::MissedSchedule => "missed_schedule",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the ledger knows about a module and an entity when a trigger arrives.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Switched off by hand (or by the budget): `Some(why)`.
    pub switched_off: Option<String>,
    pub spent_today_usd: f64,
    /// The budget was lifted for today by a manual enable.
    pub budget_waived: bool,
    /// When the last run for this entity was created.
    pub last_run_at: Option<DateTime<Utc>>,
    /// A run for this entity waiting to start.
    pub queued: Option<String>,
    /// A run for this entity in flight.
    pub running: Option<String>,
    /// Runs of the module queued or in flight, any entity.
    pub active_runs: u32,
}

/// The answer for one trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Run,
    Decline(Reason, String),
}

/// Decides whether a trigger for `manifest` becomes a run.
pub fn admit(manifest: &Manifest, facts: &Facts, now: DateTime<Utc>) -> Admission {
    if !manifest.enabled {
        return Admission::Decline(
            Reason::Disabled,
            "disabled in its manifest (enabled: false)".into(),
        );
    }
    if let Some(why) = &facts.switched_off {
        return Admission::Decline(Reason::Disabled, format!("disabled: {why}"));
    }
    if let Some(budget) = manifest.budget {
        if !facts.budget_waived && facts.spent_today_usd >= budget.usd_per_day.0 {
            return Admission::Decline(
                Reason::Budget,
                format!(
                    "budget reached: ${:.2} spent today of ${:.2}",
                    facts.spent_today_usd, budget.usd_per_day.0
                ),
            );
        }
    }
    match manifest.per_entity {
        PerEntity::Skip => {
            if let Some(id) = facts.running.as_ref().or(facts.queued.as_ref()) {
                return Admission::Decline(
                    Reason::Skipped,
                    format!("per_entity skip: run {id} is in progress"),
                );
            }
        }
        PerEntity::Coalesce => {
            if let Some(id) = &facts.queued {
                return Admission::Decline(
                    Reason::Coalesced,
                    format!("coalesced into waiting run {id}"),
                );
            }
        }
        PerEntity::Queue => {}
    }
    if !manifest.cooldown.is_zero() {
        if let Some(last) = facts.last_run_at {
            let since = now - last;
            let cooldown = chrono::Duration::seconds(manifest.cooldown.as_secs() as i64);
            if since < cooldown {
                return Admission::Decline(
                    Reason::Cooldown,
                    format!(
                        "cooldown {}: the last run for this entity was {}s ago",
                        manifest.cooldown,
                        since.num_seconds()
                    ),
                );
            }
        }
    }
    Admission::Run
}

/// Whether an outcome is announced under the module's `notify:` rule. `previous` is the status
/// of the last finished run for the same entity, if any. A question is always sent.
pub fn announce_outcome(
    notify: Notify,
    status: JournalStatus,
    previous: Option<JournalStatus>,
) -> bool {
    if status == JournalStatus::Paused {
        return true;
    }
    match notify {
        Notify::All => true,
        Notify::Changes => status.is_failure() || previous != Some(status),
        Notify::Errors => status.is_failure(),
        Notify::None => false,
    }
}

/// Back-off before attempt `next` (2 or 3) of a run whose module asked for a retry.
pub fn retry_delay(base: std::time::Duration, next_attempt: u32) -> std::time::Duration {
    base * 3u32.pow(next_attempt.saturating_sub(2))
}

/// Attempts a run gets at most: the first and two retries.
pub const MAX_ATTEMPTS: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse("m", &format!("name: m\ndescription: d\nrun: [x]\n{extra}")).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 4, 4, 12, 0, 0).unwrap()
    }

    #[test]
    fn a_plain_module_runs() {
        assert_eq!(
            admit(&manifest(""), &Facts::default(), now()),
            Admission::Run
        );
    }

    #[test]
    fn disabled_wins_over_everything() {
        let m = manifest("enabled: false\n");
        assert!(matches!(
            admit(&m, &Facts::default(), now()),
            Admission::Decline(Reason::Disabled, _)
        ));
        let facts = Facts {
            switched_off: Some("by hand".into()),
            ..Default::default()
        };
        assert_eq!(
            admit(&manifest(""), &facts, now()),
            Admission::Decline(Reason::Disabled, "disabled: by hand".into())
        );
    }

    #[test]
    fn budget_stops_until_waived() {
        let m = manifest("budget: { usd_per_day: 1.0 }\n");
        let mut facts = Facts {
            spent_today_usd: 1.0,
            ..Default::default()
        };
        assert_eq!(
            admit(&m, &facts, now()),
            Admission::Decline(
                Reason::Budget,
                "budget reached: $1.00 spent today of $1.00".into()
            )
        );
        facts.budget_waived = true;
        assert_eq!(admit(&m, &facts, now()), Admission::Run);
        facts = Facts {
            spent_today_usd: 0.99,
            ..Default::default()
        };
        assert_eq!(admit(&m, &facts, now()), Admission::Run);
    }

    #[test]
    fn per_entity_rules() {
        let waiting = Facts {
            queued: Some("r_1".into()),
            ..Default::default()
        };
        let going = Facts {
            running: Some("r_2".into()),
            ..Default::default()
        };
        let coalesce = manifest("per_entity: coalesce\n");
        assert_eq!(
            admit(&coalesce, &waiting, now()),
            Admission::Decline(Reason::Coalesced, "coalesced into waiting run r_1".into())
        );
        assert_eq!(
            admit(&coalesce, &going, now()),
            Admission::Run,
            "one may wait behind a running one"
        );
        let skip = manifest("per_entity: skip\n");
        assert!(matches!(
            admit(&skip, &going, now()),
            Admission::Decline(Reason::Skipped, _)
        ));
        assert!(matches!(
            admit(&skip, &waiting, now()),
            Admission::Decline(Reason::Skipped, _)
        ));
        let queue = manifest("");
        assert_eq!(admit(&queue, &going, now()), Admission::Run);
    }

    #[test]
    fn cooldown_counts_from_the_last_run() {
        let m = manifest("cooldown: 10m\n");
        let recent = Facts {
            last_run_at: Some(now() - chrono::Duration::minutes(3)),
            ..Default::default()
        };
        assert_eq!(
            admit(&m, &recent, now()),
            Admission::Decline(
                Reason::Cooldown,
                "cooldown 10m: the last run for this entity was 180s ago".into()
            )
        );
        let old = Facts {
            last_run_at: Some(now() - chrono::Duration::minutes(11)),
            ..Default::default()
        };
        assert_eq!(admit(&m, &old, now()), Admission::Run);
    }

    #[test]
    fn notify_rules() {
        use JournalStatus::*;
        assert!(announce_outcome(Notify::None, Paused, None));
        assert!(!announce_outcome(Notify::None, Error, None));
        assert!(announce_outcome(Notify::Errors, Timeout, Some(Timeout)));
        assert!(!announce_outcome(Notify::Errors, Done, Some(Error)));
        assert!(announce_outcome(Notify::Changes, Done, Some(Error)));
        assert!(announce_outcome(Notify::Changes, Done, None));
        assert!(!announce_outcome(Notify::Changes, Done, Some(Done)));
        assert!(announce_outcome(Notify::Changes, Error, Some(Error)));
        assert!(announce_outcome(Notify::All, Done, Some(Done)));
    }

    #[test]
    fn retries_back_off() {
        let base = std::time::Duration::from_secs(10);
        assert_eq!(retry_delay(base, 2), std::time::Duration::from_secs(10));
        assert_eq!(retry_delay(base, 3), std::time::Duration::from_secs(30));
    }
}
