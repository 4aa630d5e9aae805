//! Marathon's timestamps (`2015-08-26T22:33:24.225Z`, UTC, millisecond precision)
//! and its lenient boolean query parameters.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use model::UnixMillis;

/// `UnixMillis` -> `"2015-08-26T22:33:24.225Z"`.
pub fn format_time(t: UnixMillis) -> String {
    match Utc.timestamp_millis_opt(t.0).single() {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Any RFC 3339 timestamp (any offset, any sub-second precision) -> `UnixMillis`.
pub fn parse_time(s: &str) -> Option<UnixMillis> {
    DateTime::parse_from_rfc3339(s.trim()).ok().map(|dt| UnixMillis(dt.timestamp_millis()))
}

/// `true`/`false` in any case (`force=True`); anything else is `None`.
pub fn parse_bool_param(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_marathon() {
        let t = UnixMillis(1_440_628_404_225);
        assert_eq!(format_time(t), "2015-08-26T22:33:24.225Z");
        assert_eq!(format_time(UnixMillis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(UnixMillis(1000)), "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn parses_round_trip_and_offsets() {
        let t = UnixMillis(1_440_628_404_225);
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert_eq!(parse_time("2015-08-26T22:33:24.225+00:00"), Some(t));
        assert_eq!(parse_time("2015-08-27T00:33:24.225+02:00"), Some(t));
        assert_eq!(parse_time("2015-08-26T22:33:24Z"), Some(UnixMillis(1_440_628_404_000)));
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(UnixMillis(1500)));
        assert_eq!(format_time(UnixMillis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(UnixMillis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_time(UnixMillis(1_709_251_199_999)), "2024-02-29T23:59:59.999Z");
        assert_eq!(format_time(UnixMillis(-1)), "1969-12-31T23:59:59.999Z");
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time(""), None);
    }

    #[test]
    fn bool_params() {
        assert_eq!(parse_bool_param("True"), Some(true));
        assert_eq!(parse_bool_param("true"), Some(true));
        assert_eq!(parse_bool_param("FALSE"), Some(false));
        assert_eq!(parse_bool_param("1"), None);
        assert_eq!(parse_bool_param(""), None);
    }
}
