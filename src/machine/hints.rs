//! What a server's answer says about when to try again: `Retry-After` on a
//! 429 or 503, as delta-seconds or an HTTP date. Pure: the wall clock is
//! passed in, read once to turn a date into a wait; no deadline uses it.

use std::time::Duration;

/// The wait a `Retry-After` value asks for, at wall-clock `now_unix`
/// (seconds since 1970). A date in the past is no wait.
///
/// # Errors
/// Says which part of the value is wrong.
pub(crate) fn retry_after(value: &str, now_unix: u64) -> Result<Duration, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("empty Retry-After".into());
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Delta-seconds; a huge number is capped by the caller.
        return Ok(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = http_date(v)?;
    Ok(Duration::from_secs(at.saturating_sub(now_unix)))
}

/// Seconds since 1970 of an HTTP date in any of the three forms RFC 9110
/// accepts: `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37
/// GMT`, `Sun Nov  6 08:49:37 1994`.
fn http_date(v: &str) -> Result<u64, String> {
    if v.len() > 64 {
        return Err(format!("date too long ({} bytes)", v.len()));
    }
    let mut month = None;
    let mut time = None;
    let mut numbers = Vec::new();
    for tok in v.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
        if tok.contains(':') {
            if time.replace(clock(tok)?).is_some() {
                return Err(format!("two times of day in {v:?}"));
            }
        } else if tok.bytes().all(|b| b.is_ascii_digit()) {
            numbers.push(tok);
        } else if let Some(m) = month_of(tok) {
            if month.replace(m).is_some() {
                return Err(format!("two months in {v:?}"));
            }
        } else if !(is_weekday(tok) || tok == "GMT" || tok == "UTC") {
            return Err(format!("unexpected {tok:?} in date {v:?}"));
        }
    }
    let month = month.ok_or_else(|| format!("no month in date {v:?}"))?;
    let (h, m, s) = time.ok_or_else(|| format!("no time of day in date {v:?}"))?;
    let [day, year] = numbers[..] else {
        return Err(format!("expected a day and a year in date {v:?}"));
    };
    let day: u32 = day.parse().map_err(|_| format!("bad day {day:?}"))?;
    let mut year: i64 = year.parse().map_err(|_| format!("bad year {year:?}"))?;
    if year < 100 {
        // RFC 850's two-digit years: 70-99 are 19xx.
        year += if year < 70 { 2000 } else { 1900 };
    }
    if !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        return Err(format!("day or year out of range in date {v:?}"));
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s);
    u64::try_from(secs).map_err(|_| format!("date before 1970: {v:?}"))
}

fn clock(t: &str) -> Result<(u32, u32, u32), String> {
    let mut parts = t.split(':');
    let mut next = |max: u32| -> Result<u32, String> {
        parts
            .next()
            .filter(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse().ok())
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("bad time of day {t:?}"))
    };
    let hms = (next(23)?, next(59)?, next(60)?);
    if parts.next().is_some() {
        return Err(format!("bad time of day {t:?}"));
    }
    Ok(hms)
}

fn month_of(t: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == t).map(|i| i as u32 + 1)
}

fn is_weekday(t: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    DAYS.iter()
        .any(|d| t == *d || (t.starts_with(d) && t.ends_with("day") && t.len() <= 9))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// well-known algorithm, written out here).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The delay after a refused upgrade or a failed poll: the backoff's, or
/// longer when a 429 or 503 carried `Retry-After`, capped at `max`.
pub(crate) fn hinted(
    delay: Duration,
    status: Option<u16>,
    retry_after_value: Option<&str>,
    now_unix: u64,
    max: Duration,
) -> Duration {
    if !matches!(status, Some(429 | 503)) {
        return delay;
    }
    match retry_after_value.map(|v| retry_after(v, now_unix)) {
        Some(Ok(wait)) => delay.max(wait.min(max)),
        Some(Err(e)) => {
            log::debug!("ignoring Retry-After: {e}");
            delay
        }
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, RFC 9110's example.
    const EXAMPLE: u64 = 784_111_777;

    #[test]
    fn the_three_date_forms_and_delta_seconds() {
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(http_date(v), Ok(EXAMPLE), "{v}");
        }
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", EXAMPLE),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(retry_after("120", 0), Ok(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE + 5),
            Ok(Duration::ZERO),
            "a date in the past is no wait"
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Ok(0));
        assert_eq!(
            http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Ok(1_835_438_400)
        );
    }

    #[test]
    fn a_bad_value_says_which_part_is_wrong() {
        assert!(retry_after("", 0).unwrap_err().contains("empty"));
        assert!(retry_after("soon", 0).unwrap_err().contains("\"soon\""));
        assert!(retry_after("Sun, 06 Nov 1994 25:00:00 GMT", 0)
            .unwrap_err()
            .contains("time of day"));
        assert!(retry_after("Sun, 06 1994 08:49:37 GMT", 0)
            .unwrap_err()
            .contains("no month"));
        assert!(retry_after("Sun, 32 Nov 1994 08:49:37 GMT", 0)
            .unwrap_err()
            .contains("out of range"));
        assert!(retry_after("-5", 0).is_err());
    }

    #[test]
    fn only_429_and_503_are_hints_and_the_wait_is_capped() {
        let d = Duration::from_millis(10);
        let max = Duration::from_secs(60);
        assert_eq!(
            hinted(d, Some(503), Some("5"), 0, max),
            Duration::from_secs(5)
        );
        assert_eq!(
            hinted(d, Some(429), Some("5"), 0, max),
            Duration::from_secs(5)
        );
        assert_eq!(hinted(d, Some(500), Some("5"), 0, max), d);
        assert_eq!(hinted(d, Some(503), None, 0, max), d);
        assert_eq!(hinted(d, Some(503), Some("junk"), 0, max), d);
        assert_eq!(hinted(d, Some(503), Some("99999"), 0, max), max);
        let long = Duration::from_secs(90);
        assert_eq!(
            hinted(long, Some(503), Some("5"), 0, max),
            long,
            "never shorter than the backoff"
        );
    }
}
