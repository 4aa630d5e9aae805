//! Cron expressions of job schedules and their fire times in a time zone.
//!
//! Metronome's form is five fields (minute hour day-of-month month
//! day-of-week, day-of-week 0-7 with 0 and 7 for Sunday); six fields add a
//! leading seconds field (a Wharf extension, so tests and short periods need
//! not wait minutes); seven are seconds to year. The `cron` crate does the
//! matching; this module translates Unix day-of-week numbers to its 1-7
//! (Sunday = 1) and applies the time zone rules: a local time that a DST
//! change skips does not fire, and one that occurs twice fires once (at its
//! first occurrence).
//!
//! Pure: the instant to start from is always an argument.

use crate::UnixMillis;
use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("Cron expression '{0}' must have 5 fields (or 6 with leading seconds, 7 with a year)")]
    Fields(String),
    #[error("Cron expression '{expr}' is not valid: {reason}")]
    Syntax { expr: String, reason: String },
    #[error("Cron expression '{0}' never fires")]
    Never(String),
    #[error("Unknown time zone '{0}'")]
    TimeZone(String),
}

/// A parsed schedule clock: expression and zone.
#[derive(Debug, Clone)]
pub struct CronClock {
    schedule: cron::Schedule,
    tz: Tz,
}

impl CronClock {
    pub fn parse(expr: &str, timezone: &str) -> Result<CronClock, CronError> {
        let tz = Tz::from_str(timezone).map_err(|_| CronError::TimeZone(timezone.to_string()))?;
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let full: Vec<String> = match fields.len() {
            5 => std::iter::once("0".to_string()).chain(fields.iter().map(|f| f.to_string())).collect(),
            6 | 7 => fields.iter().map(|f| f.to_string()).collect(),
            _ => return Err(CronError::Fields(expr.to_string())),
        };
        let mut full = full;
        full[5] = unix_days_of_week(&full[5]);
        let schedule = cron::Schedule::from_str(&full.join(" "))
            .map_err(|e| CronError::Syntax { expr: expr.to_string(), reason: e.to_string() })?;
        let clock = CronClock { schedule, tz };
        // Impossible dates (`0 0 31 2 *`) would never fire: refuse them, as
        // Metronome does (METRONOME-236).
        if clock.next_after(UnixMillis(0)).is_none() {
            return Err(CronError::Never(expr.to_string()));
        }
        Ok(clock)
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: UnixMillis) -> Option<UnixMillis> {
        let start = Utc.timestamp_millis_opt(after.0).single()?.with_timezone(&self.tz);
        // The crate walks local times: after an instant in the second pass
        // of a repeated hour it may offer the first pass again, so only
        // instants later in real time count; the second pass of a repeated
        // local time is skipped (it fired at the first).
        self.schedule
            .after(&start)
            .take(1000)
            .map(|t| (t.timestamp_millis(), t))
            .find(|(ms, t)| *ms > after.0 && !is_second_pass(&self.tz, t))
            .map(|(ms, _)| UnixMillis(ms))
    }
}

fn is_second_pass(tz: &Tz, t: &DateTime<Tz>) -> bool {
    match tz.from_local_datetime(&t.naive_local()) {
        LocalResult::Ambiguous(first, _) => first.timestamp_millis() != t.timestamp_millis(),
        _ => false,
    }
}

/// Unix day-of-week numbers (0-7, Sunday 0 or 7) to the crate's (1-7,
/// Sunday 1). Names, `*` and `?` pass unchanged.
fn unix_days_of_week(field: &str) -> String {
    let map = |n: &str| -> String {
        match n.parse::<u8>() {
            Ok(d) if d <= 7 => ((d % 7) + 1).to_string(),
            _ => n.to_string(),
        }
    };
    field
        .split(',')
        .map(|item| {
            let (base, step) = match item.split_once('/') {
                Some((b, s)) => (b, Some(s)),
                None => (item, None),
            };
            let base = match base.split_once('-') {
                // `x-7` ends on Sunday, which is 1 for the crate: x..Saturday plus Sunday.
                Some((a, "7")) if step.is_none() && a != "0" => format!("{}-7,1", map(a)),
                Some((a, "7")) => format!("{}-7", map(a)),
                Some((a, b)) => format!("{}-{}", map(a), map(b)),
                None => map(base),
            };
            match step {
                Some(s) => format!("{base}/{s}"),
                None => base,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, Timelike};
    use proptest::prelude::*;

    fn at(tz: &str, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> UnixMillis {
        let tz = Tz::from_str(tz).expect("zone");
        let naive = NaiveDate::from_ymd_opt(y, mo, d).and_then(|d| d.and_hms_opt(h, mi, 0)).expect("date");
        UnixMillis(tz.from_local_datetime(&naive).earliest().expect("exists").timestamp_millis())
    }

    fn local(tz: &str, t: UnixMillis) -> DateTime<Tz> {
        let tz = Tz::from_str(tz).expect("zone");
        Utc.timestamp_millis_opt(t.0).single().expect("instant").with_timezone(&tz)
    }

    #[test]
    fn five_fields_fire_on_minutes() {
        let c = CronClock::parse("*/15 * * * *", "UTC").expect("valid");
        let t = c.next_after(at("UTC", 2026, 1, 1, 10, 7)).expect("fires");
        assert_eq!(t, at("UTC", 2026, 1, 1, 10, 15));
    }

    #[test]
    fn six_fields_have_seconds() {
        let c = CronClock::parse("*/5 * * * * *", "UTC").expect("valid");
        let base = at("UTC", 2026, 1, 1, 10, 0);
        assert_eq!(c.next_after(base), Some(UnixMillis(base.0 + 5000)));
    }

    #[test]
    fn unix_days_of_week() {
        // 2026-12-06 is a Sunday.
        for expr in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN", "0 9 * * 5-7"] {
            let c = CronClock::parse(expr, "UTC").expect("valid");
            let t = c.next_after(at("UTC", 2026, 12, 5, 10, 0)).expect("fires");
            assert_eq!(t, at("UTC", 2026, 12, 6, 9, 0), "{expr}");
        }
        let c = CronClock::parse("0 9 * * 1-5", "UTC").expect("valid");
        assert_eq!(c.next_after(at("UTC", 2026, 12, 5, 10, 0)), Some(at("UTC", 2026, 12, 7, 9, 0)));
    }

    #[test]
    fn bad_expressions_and_zones() {
        assert!(matches!(CronClock::parse("* * *", "UTC"), Err(CronError::Fields(_))));
        assert!(matches!(CronClock::parse("61 * * * *", "UTC"), Err(CronError::Syntax { .. })));
        assert!(matches!(CronClock::parse("0 0 31 2 *", "UTC"), Err(CronError::Never(_))));
        assert!(matches!(CronClock::parse("* * * * *", "Mars/Olympus"), Err(CronError::TimeZone(_))));
    }

    #[test]
    fn dst_gap_skips_and_overlap_fires_once() {
        // Berlin 2026-03-29: 02:00 -> 03:00; 2026-10-25: 03:00 -> 02:00.
        let c = CronClock::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        let t = c.next_after(at("Europe/Berlin", 2026, 3, 28, 12, 0)).expect("fires");
        assert_eq!(local("Europe/Berlin", t).day(), 30, "the skipped 02:30 does not fire");
        let first = c.next_after(at("Europe/Berlin", 2026, 10, 24, 12, 0)).expect("fires");
        assert_eq!(local("Europe/Berlin", first).day(), 25);
        let next = c.next_after(first).expect("fires");
        assert_eq!(local("Europe/Berlin", next).day(), 26, "the repeated 02:30 fires once");
    }

    const ZONES: [&str; 5] = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"];
    const EXPRS: [&str; 7] =
        ["* * * * *", "*/7 * * * *", "30 2 * * *", "0 1-3 * * *", "15,45 * * * 1-5", "*/20 * * * * *", "0 0 1 * *"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Fire times are strictly increasing, match the expression's local
        /// minute, never repeat a local time (DST overlap) and none is
        /// skipped between two consecutive ones (checked minute by minute
        /// through the local calendar).
        #[test]
        fn fire_times_over_dst(zone in 0..ZONES.len(), expr in 0..EXPRS.len(), start in 1_767_225_600_000i64..1_830_297_600_000i64) {
            let (zone, expr) = (ZONES[zone], EXPRS[expr]);
            let c = CronClock::parse(expr, zone).expect("valid");
            let mut t = UnixMillis(start);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..6 {
                let n = c.next_after(t).expect("fires");
                prop_assert!(n > t);
                let l = local(zone, n);
                prop_assert!(seen.insert(l.naive_local()), "{} fired twice at {}", expr, l);
                if expr == "30 2 * * *" {
                    prop_assert_eq!((l.hour(), l.minute()), (2, 30));
                }
                // Nothing fires strictly between t and n: each whole second in
                // between is not a match of the expression (sampled per minute
                // for minute expressions).
                let step = if expr.split_whitespace().count() == 6 { 1000 } else { 60_000 };
                let mut m = (t.0 / step + 1) * step;
                while m < n.0 {
                    let lm = local(zone, UnixMillis(m));
                    let first_pass = !is_second_pass(&lm.timezone(), &lm);
                    prop_assert!(!(first_pass && c.schedule.includes(lm)), "{} skipped {}", expr, lm);
                    m += step;
                }
                t = n;
            }
        }
    }
}
