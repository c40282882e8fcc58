//! Durations as manifests and questions write them: `30s`, `15m`, `2h`, `7d`, `1h30m`, `0`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A duration written with units `s`, `m`, `h`, `d`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, Serialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub fn std(self) -> std::time::Duration {
        self.0
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Longest duration accepted anywhere: 366 days.
const MAX_SECS: u64 = 366 * 24 * 3600;

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration `{text}`: write a number with a unit s, m, h or d, such as 30s, 15m, 1h30m"
            )
        };
        let t = text.trim();
        if t == "0" {
            return Ok(Duration::ZERO);
        }
        if t.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(bad()),
            };
            if digits.is_empty() {
                return Err(bad());
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(bad)?;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        if total > MAX_SECS {
            return Err(format!("duration `{text}` is longer than 366 days"));
        }
        Ok(Duration::from_secs(total))
    }
}

impl TryFrom<String> for Duration {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Duration> for String {
    fn from(d: Duration) -> String {
        d.to_string()
    }
}

impl fmt::Display for Duration {
    /// The shortest form that reads back to the same value: `90s` is `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        let p = |s: &str| s.parse::<Duration>().map(|d| d.as_secs());
        assert_eq!(p("30s"), Ok(30));
        assert_eq!(p("15m"), Ok(900));
        assert_eq!(p("2h"), Ok(7200));
        assert_eq!(p("7d"), Ok(604800));
        assert_eq!(p("1h30m"), Ok(5400));
        assert_eq!(p("0"), Ok(0));
        assert_eq!(p("0s"), Ok(0));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "30",
            "m",
            "5x",
            "1.5h",
            "-3s",
            "3 s",
            "h1",
            "367d",
            "99999999999999999999s",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "5x".parse::<Duration>().unwrap_err(),
            "invalid duration `5x`: write a number with a unit s, m, h or d, such as 30s, 15m, 1h30m"
        );
    }

    #[test]
    fn displays_what_it_parses() {
        for s in ["30s", "15m", "1h30m", "7d", "1d2h3m4s"] {
            assert_eq!(s.parse::<Duration>().unwrap().to_string(), s);
        }
    }
}
