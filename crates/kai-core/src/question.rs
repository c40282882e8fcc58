//! Questions: a paused run's question, its timeline (asked, reminded, expired), how answers
//! are named in buttons, and what kai says about them. The clock is always a parameter.

use chrono::{DateTime, Utc};
use kai_sdk::Question;

/// When a question is asked, reminded of, and expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    pub asked_at: DateTime<Utc>,
    pub remind_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

const DAY: i64 = 86_400;

/// The reminder goes out a day before the expiry, or at half-life when the question is open
/// for less than two days.
pub fn timeline(asked_at: DateTime<Utc>, open_for: std::time::Duration) -> Timeline {
    let secs = open_for.as_secs().min(i64::MAX as u64 / 2) as i64;
    let expires_at = asked_at + chrono::Duration::seconds(secs);
    let remind_at = if secs >= 2 * DAY {
        expires_at - chrono::Duration::seconds(DAY)
    } else {
        asked_at + chrono::Duration::milliseconds(secs * 500)
    };
    Timeline {
        asked_at,
        remind_at,
        expires_at,
    }
}

/// What an open question needs at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Nothing,
    Remind,
    Expire,
}

pub fn due(t: &Timeline, reminded: bool, now: DateTime<Utc>) -> Due {
    if now >= t.expires_at {
        Due::Expire
    } else if !reminded && now >= t.remind_at {
        Due::Remind
    } else {
        Due::Nothing
    }
}

/// A button's `callback_data`: `q:<run_id>:<option index>` (Telegram allows 64 bytes; a run id
/// is 28).
pub fn button_data(run_id: &str, option: usize) -> String {
    format!("q:{run_id}:{option}")
}

/// The run id and option index a button names.
pub fn parse_button_data(data: &str) -> Option<(&str, usize)> {
    let rest = data.strip_prefix("q:")?;
    let (run_id, index) = rest.rsplit_once(':')?;
    Some((run_id, index.parse().ok()?))
}

/// "3 days", "5 hours", "40 minutes", "12 seconds": the largest unit that fits, rounded to
/// the nearest (three days less a second is still "3 days").
pub fn human_span(secs: i64) -> String {
    let secs = secs.max(0);
    let round = |unit: i64| (secs + unit / 2) / unit;
    let (n, unit) = match secs {
        s if s >= DAY => (round(DAY), "day"),
        s if s >= 3600 => (round(3600), "hour"),
        s if s >= 60 => (round(60), "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The question as kai posts it in the module's topic.
pub fn ask_text(entity: &str, q: &Question, t: &Timeline) -> String {
    let mut text = format!("❓ {entity}\n{}", q.text);
    let span = human_span((t.expires_at - t.asked_at).num_seconds());
    text.push_str(&format!("\n\nOpen for {span}"));
    match &q.default {
        Some(d) => text.push_str(&format!("; then \"{d}\".")),
        None => text.push('.'),
    }
    if q.options.is_empty() {
        text.push_str(" Reply to this message to answer.");
    }
    text
}

pub fn reminder_text(entity: &str, q: &Question, t: &Timeline, now: DateTime<Utc>) -> String {
    let left = human_span((t.expires_at - now).num_seconds());
    let then = match &q.default {
        Some(d) => format!("then kai goes on with \"{d}\""),
        None => "then it is closed unanswered".to_owned(),
    };
    format!("⏰ Still open, {left} left ({then}): {entity}\n{}", q.text)
}

pub fn expired_with_default_text(entity: &str, q: &Question, default: &str) -> String {
    format!(
        "⌛ No answer in time: going on with \"{default}\" for {entity}\n{}",
        q.text
    )
}

pub fn expired_text(entity: &str, q: &Question) -> String {
    format!(
        "⌛ No answer in time, and no default: closed as expired for {entity}\n{}",
        q.text
    )
}

/// The question message once answered (its buttons are gone).
pub fn answered_text(entity: &str, q: &Question, answer: &str, by: &str) -> String {
    format!("❓ {entity}\n{}\n\n✅ \"{answer}\" ({by})", q.text)
}

/// What a later answer is told.
pub fn already_answered_text(answer: &str, by: &str, at: DateTime<Utc>) -> String {
    format!(
        "Already answered by {by} at {}: \"{answer}\"",
        at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 4, 4, 12, 0, 0).unwrap()
    }

    #[test]
    fn long_questions_are_reminded_a_day_before() {
        let t = timeline(t0(), std::time::Duration::from_secs(7 * 86_400));
        assert_eq!(t.expires_at, t0() + chrono::Duration::days(7));
        assert_eq!(t.remind_at, t0() + chrono::Duration::days(6));
    }

    #[test]
    fn short_questions_are_reminded_at_half_life() {
        let t = timeline(t0(), std::time::Duration::from_secs(3600));
        assert_eq!(t.remind_at, t0() + chrono::Duration::minutes(30));
        let t = timeline(t0(), std::time::Duration::from_secs(86_400));
        assert_eq!(t.remind_at, t0() + chrono::Duration::hours(12));
    }

    #[test]
    fn due_follows_the_clock() {
        let t = timeline(t0(), std::time::Duration::from_secs(3 * 86_400));
        assert_eq!(due(&t, false, t0()), Due::Nothing);
        assert_eq!(
            due(&t, false, t0() + chrono::Duration::days(2)),
            Due::Remind
        );
        assert_eq!(
            due(&t, true, t0() + chrono::Duration::days(2)),
            Due::Nothing
        );
        assert_eq!(due(&t, true, t0() + chrono::Duration::days(3)), Due::Expire);
        // An expiry found late (kai was down) expires without a reminder first.
        assert_eq!(
            due(&t, false, t0() + chrono::Duration::days(9)),
            Due::Expire
        );
    }

    #[test]
    fn button_data_round_trips_and_fits() {
        let run = "r_01JD0000000000000000000000";
        let data = button_data(run, 3);
        assert!(data.len() <= 64);
        assert_eq!(parse_button_data(&data), Some((run, 3)));
        assert_eq!(parse_button_data("x:r:1"), None);
        assert_eq!(parse_button_data("q:r_1:x"), None);
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(3 * 86_400), "3 days");
        assert_eq!(human_span(3600), "1 hour");
        assert_eq!(human_span(59), "59 seconds");
        assert_eq!(human_span(3 * 86_400 - 1), "3 days");
        assert_eq!(human_span(23 * 3600), "23 hours");
    }
}
