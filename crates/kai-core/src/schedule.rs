//! When schedule triggers fire, and what to do about fire times that came due while kai was
//! not looking. Pure: the caller passes `now` and stores `last_fire`.
//!
//! # Cron and daylight saving time
//!
//! A cron expression is matched against the wall clock of the trigger's `tz` (UTC when absent),
//! so `0 9 * * MON-FRI` in Europe/Berlin fires at 09:00 Berlin time in summer and in winter.
//! Where the wall clock jumps:
//!
//! - A wall time that happens twice (the fall-back hour) fires once, at its first occurrence.
//!   This holds for every expression, `*/15 * * * *` included: the repeated hour is not run
//!   again. A cron line names wall times, and "a schedule never fires twice for one time";
//!   `every:` is the trigger for a steady beat in real time.
//! - A wall time that does not exist (the spring-forward gap) fires once, at the first instant
//!   after the gap: a daily `30 2 * * *` in Berlin runs at 03:00 on the last Sunday of March.
//!   Skipping would silently drop a day of a daily job; this is also what Vixie/ISC cron does
//!   for fixed-time jobs. Several gap times (`*/15` over 02:00–02:45) fold into that one fire.
//!
//! croner moves gap times forward only for "fixed-time" expressions (one hour, one minute):
//! `30 2,14 * * *` loses its spring-day 02:30 there. And a search from inside the second pass
//! of the repeated hour returns the first pass's 02:30, a time before the search started. So
//! croner is only asked about wall-clock (naive) times, evaluated as UTC where the clock never
//! jumps, and the rule above is applied here.

use chrono::{DateTime, NaiveDateTime, Offset, SecondsFormat, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::manifest::{Catchup, Trigger};

/// How many entries [`FirePlan::skipped`] lists at most.
pub const SKIPPED_LIST_CAP: usize = 100;

/// How many due cron times are walked one by one before the rest is extrapolated. Intervals
/// are always counted exactly, by arithmetic.
const CRON_EXACT_LIMIT: u64 = 10_000;

/// The fire times of one schedule trigger.
///
/// The first fire time strictly after `after`; `None` for triggers that are not schedules and
/// for a cron expression that never matches again. For `every:` the interval is counted from
/// `after`, which should be the stored last fire time: that keeps fire times on the grid
/// anchored when kai first saw the trigger.
pub fn next_fire(trigger: &Trigger, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match trigger {
        Trigger::Schedule { cron, tz, .. } => CronSchedule::new(cron.cron(), *tz).next_after(after),
        Trigger::Every { interval, .. } => {
            let step = nanos_of(interval.std());
            if step == 0 {
                return None;
            }
            add_nanos(after, step)
        }
        _ => None,
    }
}

/// What to do at one moment about one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// The fire time to run now, if any (for catch-up `once`, the latest missed time).
    pub run: Option<DateTime<Utc>>,
    /// Fire times that were due but are not run (missed while down with catchup skip, or the
    /// older ones folded into a `once` catch-up), oldest first, at most
    /// [`SKIPPED_LIST_CAP`] of them.
    pub skipped: Vec<DateTime<Utc>>,
    /// How many due fire times are not run, however long `skipped` is.
    pub skipped_count: u64,
    /// true when `skipped_count` was extrapolated rather than counted: only for a cron
    /// schedule with more than 10 000 due times, after walking the first 10 000 and finding
    /// the latest; the count assumes the rest are spaced like those.
    pub skipped_count_estimated: bool,
    /// What to store as the schedule's last handled fire time (never moves backwards).
    pub last_fire: DateTime<Utc>,
    /// true when `run` is a catch-up (a missed time) rather than an on-time fire.
    pub catch_up: bool,
}

impl FirePlan {
    fn nothing(last_fire: DateTime<Utc>) -> FirePlan {
        FirePlan {
            run: None,
            skipped: Vec::new(),
            skipped_count: 0,
            skipped_count_estimated: false,
            last_fire,
            catch_up: false,
        }
    }
}

/// Decides what to do at `now` for a schedule whose last handled fire time is `last_fire`
/// (`None` = never seen before: then nothing in the past fires, and `last_fire` becomes `now`,
/// which is also where an `every:` grid is anchored).
///
/// A fire time `t` with `last_fire < t <= now` is due. At most one due time runs, and only the
/// latest: it runs when it is on time (`now - t <= grace`, the daemon's tick slack), or, when
/// it is older, if `catchup` is `once` (then `catch_up` is true). Every other due time is
/// skipped, with `skipped_count` saying how many. A schedule due more often than the daemon
/// looks therefore runs once per look, not once per fire time.
///
/// `last_fire` in the answer is the latest due time (or the old `last_fire` when nothing is
/// due, `now` going backwards included), so `run` is never at or before the stored value and
/// planning again with the answer's `last_fire` and the same `now` runs nothing.
pub fn plan(
    trigger: &Trigger,
    last_fire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    grace: std::time::Duration,
) -> FirePlan {
    let catchup = match trigger {
        Trigger::Schedule { catchup, .. } | Trigger::Every { catchup, .. } => *catchup,
        _ => return FirePlan::nothing(last_fire.unwrap_or(now)),
    };
    let Some(last) = last_fire else {
        return FirePlan::nothing(now);
    };
    if now <= last {
        return FirePlan::nothing(last);
    }
    let due = match trigger {
        Trigger::Schedule { cron, tz, .. } => CronSchedule::new(cron.cron(), *tz).due(last, now),
        Trigger::Every { interval, .. } => every_due(nanos_of(interval.std()), last, now),
        _ => None,
    };
    let Some(due) = due else {
        return FirePlan::nothing(last);
    };

    let grace = TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX);
    let on_time = now - due.latest <= grace;
    let run = (on_time || catchup == Catchup::Once).then_some(due.latest);
    FirePlan {
        run,
        skipped: due
            .oldest
            .into_iter()
            .filter(|&t| Some(t) != run)
            .take(SKIPPED_LIST_CAP)
            .collect(),
        skipped_count: due.count - u64::from(run.is_some()),
        skipped_count_estimated: due.estimated,
        last_fire: due.latest,
        catch_up: run.is_some() && !on_time,
    }
}

/// A stable key naming one fire time of one trigger of one module, used as the delivery id so
/// the durable inbox refuses a second fire of the same time:
/// `schedule:<module>:<trigger index>:<RFC 3339 UTC fire time>`. Whole seconds, so that a
/// store keeping less precision than chrono still yields the same key.
pub fn fire_key(module: &str, trigger_index: usize, fire: DateTime<Utc>) -> String {
    format!(
        "schedule:{module}:{trigger_index}:{}",
        fire.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// The due fire times in `(last, now]`, never empty.
struct Due {
    /// The oldest due times in order, one more than the skipped list can hold, so that the
    /// list stays full when the latest of them is the one that runs.
    oldest: Vec<DateTime<Utc>>,
    latest: DateTime<Utc>,
    count: u64,
    estimated: bool,
}

fn every_due(step: i128, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<Due> {
    if step == 0 {
        return None;
    }
    let n = (nanos_since_epoch(now) - nanos_since_epoch(last)) / step;
    if n <= 0 {
        return None;
    }
    let listed = n.min(SKIPPED_LIST_CAP as i128 + 1);
    Some(Due {
        oldest: (1..=listed)
            .map_while(|k| add_nanos(last, k * step))
            .collect(),
        latest: add_nanos(last, n * step)?,
        count: u64::try_from(n).unwrap_or(u64::MAX),
        estimated: false,
    })
}

/// A cron expression read in one time zone.
struct CronSchedule {
    cron: croner::Cron,
    tz: Tz,
}

impl CronSchedule {
    fn new(cron: croner::Cron, tz: Option<Tz>) -> CronSchedule {
        CronSchedule {
            cron,
            tz: tz.unwrap_or(Tz::UTC),
        }
    }

    /// The first fire time strictly after `after`.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole seconds, so dropping the fraction changes no comparison.
        let after = whole_second(after)?;
        // `instant_of` never decreases as the wall time grows, and the wall time of `after`
        // maps to `after` or (second pass of a repeated hour) earlier, so no later fire hides
        // before it. The loop only passes wall times of the repeated hour that map back
        // before `after`; offsets differ by hours, so it ends.
        let mut wall = self.tz.from_utc_datetime(&after.naive_utc()).naive_local();
        loop {
            wall = self
                .cron
                .find_next_occurrence(&wall.and_utc(), false)
                .ok()?
                .naive_utc();
            let t = self.instant_of(wall)?;
            if t > after {
                return Some(t);
            }
        }
    }

    /// The latest fire time at or before `at`.
    fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = whole_second(at)?;
        // In the second pass of a repeated hour, wall times later than the current one
        // already fired (at their first occurrence), so the search starts from the wall time
        // `at` would show under the larger of the offsets of the last day.
        let offset = |t: DateTime<Utc>| {
            self.tz
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        };
        let ahead = offset(at).max(offset(at - TimeDelta::days(1)));
        let mut wall = at.naive_utc() + TimeDelta::seconds(i64::from(ahead));
        let mut inclusive = true;
        loop {
            wall = self
                .cron
                .find_previous_occurrence(&wall.and_utc(), inclusive)
                .ok()?
                .naive_utc();
            inclusive = false;
            let t = self.instant_of(wall)?;
            if t <= at {
                return Some(t);
            }
        }
    }

    /// The instant a matching wall time fires at: the module's DST rule.
    fn instant_of(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            chrono::LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            chrono::LocalResult::None => self.end_of_gap(wall),
        }
    }

    /// The first instant whose wall time is past `wall`, a wall time inside a gap: the moment
    /// the clock lands after the jump.
    fn end_of_gap(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        let past = |secs: i64| {
            DateTime::from_timestamp(secs, 0)
                .map(|t| self.tz.from_utc_datetime(&t.naive_utc()).naive_local() > wall)
        };
        // UTC offsets lie within ±15 h, so a day either side brackets the jump; real zones
        // never jump twice within a day, so "past `wall`" flips once in between.
        let mut lo = wall.and_utc().timestamp() - 86_400;
        let mut hi = wall.and_utc().timestamp() + 86_400;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if past(mid)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        DateTime::from_timestamp(hi, 0)
    }

    fn due(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<Due> {
        let mut oldest = Vec::new();
        let mut count: u64 = 0;
        let mut first: Option<DateTime<Utc>> = None;
        let mut latest = last;
        while let Some(t) = self.next_after(latest).filter(|&t| t <= now) {
            if count == CRON_EXACT_LIMIT {
                // Walking a year of a minutely cron would take seconds; extrapolate from the
                // spacing of the times walked so far up to the real latest due time.
                let end = self.latest_at_or_before(now).map_or(t, |end| end.max(t));
                let walked = (latest - first?).num_seconds();
                let per_fire = (walked as f64 / (count - 1) as f64).max(1.0);
                let rest = ((end - latest).num_seconds() as f64 / per_fire).round() as u64;
                return Some(Due {
                    oldest,
                    latest: end,
                    count: count + rest.max(1),
                    estimated: true,
                });
            }
            if oldest.len() <= SKIPPED_LIST_CAP {
                oldest.push(t);
            }
            first.get_or_insert(t);
            count += 1;
            latest = t;
        }
        (count > 0).then_some(Due {
            oldest,
            latest,
            count,
            estimated: false,
        })
    }
}

fn whole_second(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.timestamp(), 0)
}

fn nanos_of(d: std::time::Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

fn nanos_since_epoch(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

fn add_nanos(t: DateTime<Utc>, nanos: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = nanos.rem_euclid(1_000_000_000) as i64;
    t.checked_add_signed(TimeDelta::try_seconds(secs)?)?
        .checked_add_signed(TimeDelta::nanoseconds(sub))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Duration;
    use crate::manifest::CronSpec;
    use chrono_tz::{America::New_York, Europe::Berlin};

    const GRACE: std::time::Duration = std::time::Duration::from_secs(60);

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .with_timezone(&Utc)
    }

    fn local(tz: Tz, text: &str) -> DateTime<Utc> {
        let wall = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap();
        tz.from_local_datetime(&wall)
            .single()
            .unwrap_or_else(|| panic!("{text} is not one instant in {tz}"))
            .with_timezone(&Utc)
    }

    fn cron(expr: &str, tz: Option<Tz>, catchup: Catchup) -> Trigger {
        Trigger::Schedule {
            cron: CronSpec::parse(expr).unwrap(),
            tz,
            catchup,
        }
    }

    fn every(text: &str, catchup: Catchup) -> Trigger {
        Trigger::Every {
            interval: text.parse::<Duration>().unwrap(),
            catchup,
        }
    }

    /// Every fire time in `(from, to]`.
    fn fires(trigger: &Trigger, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = from;
        while let Some(t) = next_fire(trigger, at).filter(|&t| t <= to) {
            out.push(t);
            at = t;
        }
        out
    }

    fn walls(tz: Tz, times: &[DateTime<Utc>]) -> Vec<String> {
        times
            .iter()
            .map(|t| t.with_timezone(&tz).format("%a %m-%d %H:%M %Z").to_string())
            .collect()
    }

    #[test]
    fn berlin_nine_oclock_stays_at_nine_across_spring_forward() {
        let t = cron("0 9 * * *", Some(Berlin), Catchup::Skip);
        let got = fires(&t, utc("2025-03-28T12:00:00Z"), utc("2025-04-01T12:00:00Z"));
        assert_eq!(
            got,
            vec![
                utc("2025-03-29T08:00:00Z"),
                utc("2025-03-30T07:00:00Z"),
                utc("2025-03-31T07:00:00Z"),
                utc("2025-04-01T07:00:00Z"),
            ]
        );
        assert!(walls(Berlin, &got).iter().all(|w| w.contains(" 09:00 ")));
    }

    #[test]
    fn berlin_weekday_nine_oclock_stays_at_nine_across_fall_back() {
        let t = cron("0 9 * * MON-FRI", Some(Berlin), Catchup::Skip);
        let got = fires(&t, utc("2025-10-23T12:00:00Z"), utc("2025-10-28T12:00:00Z"));
        assert_eq!(
            walls(Berlin, &got),
            vec![
                "Fri 10-24 09:00 CEST",
                "Mon 10-27 09:00 CET",
                "Tue 10-28 09:00 CET"
            ]
        );
        assert_eq!(got[0], utc("2025-10-24T07:00:00Z"));
        assert_eq!(got[1], utc("2025-10-27T08:00:00Z"));
    }

    #[test]
    fn new_york_nine_oclock_stays_at_nine_across_both_changes() {
        let t = cron("0 9 * * *", Some(New_York), Catchup::Skip);
        let spring = fires(&t, utc("2025-03-08T00:00:00Z"), utc("2025-03-10T23:00:00Z"));
        assert_eq!(
            spring,
            vec![
                utc("2025-03-08T14:00:00Z"),
                utc("2025-03-09T13:00:00Z"),
                utc("2025-03-10T13:00:00Z"),
            ]
        );
        let fall = fires(&t, utc("2025-11-01T00:00:00Z"), utc("2025-11-03T23:00:00Z"));
        assert_eq!(
            fall,
            vec![
                utc("2025-11-01T13:00:00Z"),
                utc("2025-11-02T14:00:00Z"),
                utc("2025-11-03T14:00:00Z"),
            ]
        );
    }

    #[test]
    fn berlin_half_past_two_in_the_spring_gap_fires_once_at_the_end_of_the_gap() {
        let t = cron("30 2 * * *", Some(Berlin), Catchup::Skip);
        let got = fires(&t, utc("2025-03-28T12:00:00Z"), utc("2025-04-01T12:00:00Z"));
        assert_eq!(
            walls(Berlin, &got),
            vec![
                "Sat 03-29 02:30 CET",
                "Sun 03-30 03:00 CEST",
                "Mon 03-31 02:30 CEST",
                "Tue 04-01 02:30 CEST"
            ]
        );
        assert_eq!(got[1], utc("2025-03-30T01:00:00Z"));
    }

    #[test]
    fn berlin_half_past_two_on_the_fall_back_day_fires_once() {
        let t = cron("30 2 * * *", Some(Berlin), Catchup::Skip);
        let got = fires(&t, utc("2025-10-25T12:00:00Z"), utc("2025-10-27T12:00:00Z"));
        assert_eq!(
            got,
            vec![utc("2025-10-26T00:30:00Z"), utc("2025-10-27T01:30:00Z")]
        );
        // Asked from inside the second pass of the repeated hour, it does not go back to
        // 02:30 of the first pass, nor fire at the second 02:30.
        assert_eq!(
            next_fire(&t, utc("2025-10-26T01:10:00Z")),
            Some(utc("2025-10-27T01:30:00Z"))
        );
    }

    #[test]
    fn new_york_dst_days_fire_once_for_gap_and_repeated_times() {
        // 02:00–03:00 does not exist on 9 March 2025; 01:00–02:00 happens twice on 2 November.
        let gap = cron("30 2 * * *", Some(New_York), Catchup::Skip);
        let got = fires(
            &gap,
            utc("2025-03-08T12:00:00Z"),
            utc("2025-03-10T12:00:00Z"),
        );
        assert_eq!(
            walls(New_York, &got),
            vec!["Sun 03-09 03:00 EDT", "Mon 03-10 02:30 EDT"]
        );
        let fall = fires(
            &gap,
            utc("2025-11-01T12:00:00Z"),
            utc("2025-11-03T12:00:00Z"),
        );
        assert_eq!(
            walls(New_York, &fall),
            vec!["Sun 11-02 02:30 EST", "Mon 11-03 02:30 EST"]
        );
        let repeated = cron("30 1 * * *", Some(New_York), Catchup::Skip);
        let got = fires(
            &repeated,
            utc("2025-11-01T12:00:00Z"),
            utc("2025-11-03T12:00:00Z"),
        );
        assert_eq!(
            walls(New_York, &got),
            vec!["Sun 11-02 01:30 EDT", "Mon 11-03 01:30 EST"]
        );
    }

    #[test]
    fn wildcard_cron_runs_each_wall_time_once_through_both_changes() {
        let t = cron("*/15 * * * *", Some(Berlin), Catchup::Skip);
        let spring = fires(&t, utc("2025-03-30T00:30:00Z"), utc("2025-03-30T01:20:00Z"));
        assert_eq!(
            walls(Berlin, &spring),
            vec![
                "Sun 03-30 01:45 CET",
                "Sun 03-30 03:00 CEST",
                "Sun 03-30 03:15 CEST"
            ]
        );
        let fall = fires(&t, utc("2025-10-25T23:30:00Z"), utc("2025-10-26T02:20:00Z"));
        assert_eq!(
            walls(Berlin, &fall),
            vec![
                "Sun 10-26 01:45 CEST",
                "Sun 10-26 02:00 CEST",
                "Sun 10-26 02:15 CEST",
                "Sun 10-26 02:30 CEST",
                "Sun 10-26 02:45 CEST",
                "Sun 10-26 03:00 CET",
                "Sun 10-26 03:15 CET"
            ]
        );
    }

    #[test]
    fn the_gap_rule_holds_for_expressions_with_several_hours() {
        // croner alone drops this one's 02:30 on the spring day.
        let t = cron("30 2,14 * * *", Some(Berlin), Catchup::Skip);
        let got = fires(&t, utc("2025-03-29T12:00:00Z"), utc("2025-03-30T20:00:00Z"));
        assert_eq!(
            walls(Berlin, &got),
            vec![
                "Sat 03-29 14:30 CET",
                "Sun 03-30 03:00 CEST",
                "Sun 03-30 14:30 CEST"
            ]
        );
        let fall = fires(&t, utc("2025-10-25T20:00:00Z"), utc("2025-10-26T20:00:00Z"));
        assert_eq!(
            walls(Berlin, &fall),
            vec!["Sun 10-26 02:30 CEST", "Sun 10-26 14:30 CET"]
        );
    }

    #[test]
    fn a_zero_interval_never_fires() {
        let t = Trigger::Every {
            interval: Duration::ZERO,
            catchup: Catchup::Once,
        };
        let last = utc("2025-05-01T00:00:00Z");
        assert_eq!(next_fire(&t, last), None);
        let p = plan(&t, Some(last), utc("2025-05-02T00:00:00Z"), GRACE);
        assert_eq!(p, FirePlan::nothing(last));
    }

    #[test]
    fn latest_fire_found_from_inside_the_repeated_hour() {
        let s = CronSchedule::new("*/15 * * * *".parse().unwrap(), Some(Berlin));
        // 02:10 CET, second pass: 02:45 CEST (00:45Z) already fired.
        assert_eq!(
            s.latest_at_or_before(utc("2025-10-26T01:10:00Z")),
            Some(utc("2025-10-26T00:45:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2025-10-26T02:00:00Z")),
            Some(utc("2025-10-26T02:00:00Z"))
        );
        let gap = CronSchedule::new("30 2 * * *".parse().unwrap(), Some(Berlin));
        assert_eq!(
            gap.latest_at_or_before(utc("2025-03-30T05:00:00Z")),
            Some(utc("2025-03-30T01:00:00Z"))
        );
    }

    #[test]
    fn weekday_schedule_skips_the_weekend() {
        let t = cron("0 9 * * MON-FRI", Some(Berlin), Catchup::Skip);
        let friday = local(Berlin, "2025-06-06 09:00");
        assert_eq!(
            next_fire(&t, friday),
            Some(local(Berlin, "2025-06-09 09:00"))
        );
        let got = fires(&t, friday, local(Berlin, "2025-06-16 08:00"));
        assert_eq!(got.len(), 5);
        assert!(walls(Berlin, &got).iter().all(|w| !w.starts_with("S")));
    }

    #[test]
    fn default_time_zone_is_utc() {
        let t = cron("0 9 * * *", None, Catchup::Skip);
        assert_eq!(
            next_fire(&t, utc("2025-07-01T09:00:00Z")),
            Some(utc("2025-07-02T09:00:00Z"))
        );
    }

    #[test]
    fn intervals_count_from_the_stored_last_fire() {
        let t = every("30m", Catchup::Skip);
        let anchor = utc("2025-01-01T10:07:13Z");
        assert_eq!(next_fire(&t, anchor), Some(utc("2025-01-01T10:37:13Z")));

        let on_time = plan(&t, Some(anchor), utc("2025-01-01T10:37:40Z"), GRACE);
        assert_eq!(on_time.run, Some(utc("2025-01-01T10:37:13Z")));
        assert!(!on_time.catch_up);
        assert_eq!(on_time.last_fire, utc("2025-01-01T10:37:13Z"));

        // Down for 95 minutes: 10:37, 11:07, 11:37 were due; the grid stays anchored.
        let late = plan(&t, Some(anchor), utc("2025-01-01T11:42:13Z"), GRACE);
        assert_eq!(late.run, None);
        assert_eq!(late.skipped_count, 3);
        assert_eq!(late.last_fire, utc("2025-01-01T11:37:13Z"));
        assert_eq!(
            next_fire(&t, late.last_fire),
            Some(utc("2025-01-01T12:07:13Z"))
        );
    }

    #[test]
    fn first_sight_fires_nothing() {
        let now = utc("2025-05-05T09:00:30Z");
        for t in [
            cron("* * * * *", None, Catchup::Once),
            every("1s", Catchup::Once),
        ] {
            let p = plan(&t, None, now, GRACE);
            assert_eq!(p, FirePlan::nothing(now), "{t}");
        }
    }

    #[test]
    fn non_schedule_triggers_have_no_fire_times() {
        let t = Trigger::Command {
            name: "review".into(),
        };
        let now = utc("2025-05-05T09:00:00Z");
        assert_eq!(next_fire(&t, now), None);
        let last = utc("2025-05-01T00:00:00Z");
        assert_eq!(plan(&t, Some(last), now, GRACE), FirePlan::nothing(last));
    }

    #[test]
    fn catchup_skip_after_three_days_down() {
        let t = cron("0 9 * * *", None, Catchup::Skip);
        let p = plan(
            &t,
            Some(utc("2025-05-01T09:00:00Z")),
            utc("2025-05-04T12:00:00Z"),
            GRACE,
        );
        assert_eq!(p.run, None);
        assert!(!p.catch_up);
        assert_eq!(p.skipped_count, 3);
        assert!(!p.skipped_count_estimated);
        assert_eq!(
            p.skipped,
            vec![
                utc("2025-05-02T09:00:00Z"),
                utc("2025-05-03T09:00:00Z"),
                utc("2025-05-04T09:00:00Z"),
            ]
        );
        assert_eq!(p.last_fire, utc("2025-05-04T09:00:00Z"));

        let hourly = plan(
            &every("1h", Catchup::Skip),
            Some(utc("2025-05-01T09:00:00Z")),
            utc("2025-05-04T09:30:00Z"),
            GRACE,
        );
        assert_eq!(hourly.run, None);
        assert_eq!(hourly.skipped_count, 72);
        assert_eq!(hourly.last_fire, utc("2025-05-04T09:00:00Z"));
    }

    #[test]
    fn catchup_once_runs_the_latest_missed_time() {
        let t = cron("0 9 * * *", Some(Berlin), Catchup::Once);
        let p = plan(
            &t,
            Some(local(Berlin, "2025-05-01 09:00")),
            local(Berlin, "2025-05-04 12:00"),
            GRACE,
        );
        assert_eq!(p.run, Some(local(Berlin, "2025-05-04 09:00")));
        assert!(p.catch_up);
        assert_eq!(
            p.skipped,
            vec![
                local(Berlin, "2025-05-02 09:00"),
                local(Berlin, "2025-05-03 09:00"),
            ]
        );
        assert_eq!(p.skipped_count, 2);
        assert_eq!(p.last_fire, local(Berlin, "2025-05-04 09:00"));

        let i = plan(
            &every("1h", Catchup::Once),
            Some(utc("2025-05-01T09:00:00Z")),
            utc("2025-05-01T12:30:00Z"),
            GRACE,
        );
        assert_eq!(i.run, Some(utc("2025-05-01T12:00:00Z")));
        assert!(i.catch_up);
        assert_eq!(i.skipped_count, 2);
    }

    #[test]
    fn on_time_fire_runs_within_grace_and_not_after() {
        let t = cron("0 9 * * *", None, Catchup::Skip);
        let last = utc("2025-05-01T09:00:00Z");
        let p = plan(&t, Some(last), utc("2025-05-02T09:00:30Z"), GRACE);
        assert_eq!(p.run, Some(utc("2025-05-02T09:00:00Z")));
        assert!(!p.catch_up);
        assert_eq!(p.skipped_count, 0);

        let edge = plan(&t, Some(last), utc("2025-05-02T09:01:00Z"), GRACE);
        assert_eq!(edge.run, Some(utc("2025-05-02T09:00:00Z")));

        let late = plan(&t, Some(last), utc("2025-05-02T09:01:01Z"), GRACE);
        assert_eq!(late.run, None);
        assert_eq!(late.skipped, vec![utc("2025-05-02T09:00:00Z")]);

        // Back after days away just as a fire time comes due: the missed days are skipped,
        // today's runs on time.
        let back = plan(&t, Some(last), utc("2025-05-04T09:00:20Z"), GRACE);
        assert_eq!(back.run, Some(utc("2025-05-04T09:00:00Z")));
        assert!(!back.catch_up);
        assert_eq!(back.skipped_count, 2);
    }

    #[test]
    fn planning_twice_at_the_same_moment_fires_once() {
        let now = utc("2025-05-04T09:00:20Z");
        for t in [
            cron("0 9 * * *", None, Catchup::Skip),
            cron("0 9 * * *", None, Catchup::Once),
            every("30m", Catchup::Once),
            every("1s", Catchup::Skip),
        ] {
            let first = plan(&t, Some(utc("2025-05-01T09:00:00Z")), now, GRACE);
            assert!(first.run.is_some(), "{t}");
            let again = plan(&t, Some(first.last_fire), now, GRACE);
            assert_eq!(again, FirePlan::nothing(first.last_fire), "{t}");
        }
    }

    #[test]
    fn last_fire_never_moves_backwards() {
        let t = cron("0 9 * * *", None, Catchup::Once);
        let last = utc("2025-05-04T09:00:00Z");
        // The clock went back a day.
        let p = plan(&t, Some(last), utc("2025-05-03T09:00:10Z"), GRACE);
        assert_eq!(p, FirePlan::nothing(last));
        let same = plan(&t, Some(last), last, GRACE);
        assert_eq!(same, FirePlan::nothing(last));
    }

    /// A daemon ticking every 20 s through both Berlin changes: every fire time runs once,
    /// on time, and the stored last fire only grows.
    #[test]
    fn ticking_through_dst_changes_runs_each_time_once() {
        for (expr, from, expected) in [
            ("*/15 * * * *", "2025-03-29T22:00:00Z", 96),
            ("*/15 * * * *", "2025-10-25T22:00:00Z", 92),
            ("30 2 * * *", "2025-03-29T22:00:00Z", 1),
            ("30 2 * * *", "2025-10-25T22:00:00Z", 1),
        ] {
            let t = cron(expr, Some(Berlin), Catchup::Skip);
            let start = utc(from);
            let mut last = plan(&t, None, start, GRACE).last_fire;
            let mut runs = Vec::new();
            let mut now = start;
            while now < start + TimeDelta::days(1) {
                now += TimeDelta::seconds(20);
                let p = plan(&t, Some(last), now, GRACE);
                assert!(p.last_fire >= last);
                assert_eq!(p.skipped_count, 0, "{expr} at {now}");
                if let Some(run) = p.run {
                    assert!(run > last && run <= now && !p.catch_up);
                    runs.push(run);
                }
                last = p.last_fire;
            }
            // Spring: 24 real hours are 96 quarter hours; 02:00–02:45 fold into 03:00, which
            // is one of them. Autumn: 24 real hours show only 23 hours of wall clock (00:00 to
            // 23:00), as the repeated hour does not run again.
            assert_eq!(runs.len(), expected, "{expr} from {from}");
            let mut distinct = runs.clone();
            distinct.dedup();
            assert_eq!(distinct, runs);
        }
    }

    #[test]
    fn skipped_list_is_capped_but_counted_exactly() {
        let p = plan(
            &every("1m", Catchup::Once),
            Some(utc("2025-05-01T00:00:00Z")),
            utc("2025-05-02T00:00:30Z"),
            GRACE,
        );
        assert_eq!(p.run, Some(utc("2025-05-02T00:00:00Z")));
        assert!(!p.catch_up);
        assert_eq!(p.skipped_count, 1439);
        assert_eq!(p.skipped.len(), SKIPPED_LIST_CAP);
        assert_eq!(p.skipped[0], utc("2025-05-01T00:01:00Z"));
        assert_eq!(p.skipped[99], utc("2025-05-01T01:40:00Z"));

        let c = plan(
            &cron("* * * * *", None, Catchup::Skip),
            Some(utc("2025-05-01T00:00:00Z")),
            utc("2025-05-02T00:00:30Z"),
            GRACE,
        );
        assert_eq!(c.run, Some(utc("2025-05-02T00:00:00Z")));
        assert_eq!(c.skipped_count, 1439);
        assert_eq!(c.skipped.len(), SKIPPED_LIST_CAP);
        assert!(!c.skipped_count_estimated);
    }

    #[test]
    fn a_year_down_with_every_second_is_fast_and_exact() {
        let started = std::time::Instant::now();
        let last = utc("2024-01-01T00:00:00Z");
        let now = utc("2025-01-01T00:00:00.5Z");
        let p = plan(&every("1s", Catchup::Skip), Some(last), now, GRACE);
        // 2024 is a leap year: 366 days of seconds, the last of them on time.
        assert_eq!(p.run, Some(utc("2025-01-01T00:00:00Z")));
        assert_eq!(p.skipped_count, 366 * 86_400 - 1);
        assert!(!p.skipped_count_estimated);
        assert_eq!(p.skipped.len(), SKIPPED_LIST_CAP);
        assert_eq!(p.last_fire, utc("2025-01-01T00:00:00Z"));

        // With no grace even the latest second is missed, so `once` catches it up.
        let once = plan(
            &every("1s", Catchup::Once),
            Some(last),
            now + TimeDelta::hours(1),
            std::time::Duration::ZERO,
        );
        assert_eq!(once.run, Some(utc("2025-01-01T01:00:00Z")));
        assert!(once.catch_up);
        assert_eq!(once.skipped_count, 366 * 86_400 + 3_600 - 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_year_down_with_a_minutely_cron_is_bounded_and_estimated() {
        let started = std::time::Instant::now();
        let t = cron("* * * * *", Some(Berlin), Catchup::Once);
        let last = utc("2024-01-01T00:00:00Z");
        let now = utc("2025-01-01T00:00:30Z");
        let p = plan(&t, Some(last), now, GRACE);
        assert_eq!(p.run, Some(utc("2025-01-01T00:00:00Z")));
        assert_eq!(p.last_fire, utc("2025-01-01T00:00:00Z"));
        assert!(p.skipped_count_estimated);
        // 366 days of minutes, less the 60 wall times of the repeated October hour, less the
        // one that runs; the extrapolation cannot see the DST hours, so allow for them.
        let exact: i64 = 366 * 1440 - 60 - 1;
        assert!(
            (p.skipped_count as i64 - exact).abs() <= 120,
            "{}",
            p.skipped_count
        );
        assert_eq!(p.skipped.len(), SKIPPED_LIST_CAP);
        assert_eq!(p.skipped[0], utc("2024-01-01T00:01:00Z"));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn fire_key_names_module_trigger_and_utc_second() {
        let fire = local(Berlin, "2025-06-02 09:00") + TimeDelta::milliseconds(250);
        assert_eq!(
            fire_key("pr-review", 1, fire),
            "schedule:pr-review:1:2025-06-02T07:00:00Z"
        );
    }
}
