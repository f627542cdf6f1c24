//! Time as the domain sees it: whole UTC seconds since the Unix epoch, and UTC calendar days.
//!
//! Seconds are enough for every limit Tollgate enforces (the smallest window is one second),
//! and an integer compares exactly inside DynamoDB condition expressions.

use serde::{Deserialize, Serialize};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, UtcOffset};

/// A point in time: whole seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc().unix_timestamp())
    }

    pub fn secs(self) -> i64 {
        self.0
    }

    pub fn plus(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// Seconds from `self` until `later`, never negative.
    pub fn until(self, later: UnixTime) -> u64 {
        later.0.saturating_sub(self.0).max(0) as u64
    }

    /// The UTC calendar day this instant falls in.
    pub fn day(self) -> Day {
        Day(self.0.div_euclid(86_400))
    }

    /// Parses RFC 3339 (`2026-11-23T10:00:00Z`, any offset); sub-seconds are dropped. An
    /// instant that is not in years 0000–9999 in UTC (`9999-12-31T23:59:59-01:00`) is refused:
    /// RFC 3339 could not write it back.
    pub fn parse_rfc3339(s: &str) -> Result<Self, InvalidTimestamp> {
        // 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z
        const UTC_RANGE: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| InvalidTimestamp)?.unix_timestamp();
        if !UTC_RANGE.contains(&t) {
            return Err(InvalidTimestamp);
        }
        Ok(Self(t))
    }

    /// RFC 3339 in UTC with a `Z` suffix.
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| t.to_offset(UtcOffset::UTC).format(&Rfc3339).ok())
            // Out of the representable range (year > 9999): fall back to the raw number rather
            // than fail a response over a display detail.
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp (e.g. 2026-12-31T23:59:59Z)")]
pub struct InvalidTimestamp;

/// A UTC calendar day, stored as days since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

impl Day {
    pub fn from_days_since_epoch(days: i64) -> Self {
        Self(days)
    }

    pub fn days_since_epoch(self) -> i64 {
        self.0
    }

    pub fn start(self) -> UnixTime {
        UnixTime(self.0 * 86_400)
    }

    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }

    pub fn minus(self, days: i64) -> Day {
        Day(self.0 - days)
    }

    fn date(self) -> Option<Date> {
        Date::from_julian_day(i32::try_from(self.0 + UNIX_EPOCH_JULIAN_DAY).ok()?).ok()
    }

    /// The first day of the next calendar month.
    pub fn next_month_start(self) -> Day {
        match self.date() {
            Some(d) => {
                let (y, m) = match d.month() {
                    Month::December => (d.year() + 1, Month::January),
                    m => (d.year(), m.next()),
                };
                Date::from_calendar_date(y, m, 1)
                    .map(|d| Day(i64::from(d.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY))
                    .unwrap_or(Day(self.0 + 31))
            }
            None => Day(self.0 + 31),
        }
    }

    /// 1-31.
    pub fn day_of_month(self) -> u8 {
        self.date().map(|d| d.day()).unwrap_or(1)
    }

    /// `YYYY-MM-DD`, the form the API shows.
    pub fn iso(self) -> String {
        match self.date() {
            Some(d) => format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day()),
            None => self.0.to_string(),
        }
    }

    /// `YYYYMMDD`, the compact form used in attribute names and sort keys.
    pub fn compact(self) -> String {
        self.iso().replace('-', "")
    }

    pub fn parse_iso(s: &str) -> Option<Day> {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(s, &fmt).ok().map(|d| Day(i64::from(d.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY))
    }

    pub fn parse_compact(s: &str) -> Option<Day> {
        let fmt = time::macros::format_description!("[year][month][day]");
        Date::parse(s, &fmt).ok().map(|d| Day(i64::from(d.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.iso())
    }
}

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_follow_the_utc_calendar() {
        let t = UnixTime::parse_rfc3339("2026-11-23T10:15:00Z").unwrap();
        assert_eq!(t.day().iso(), "2026-11-23");
        assert_eq!(t.day().compact(), "20261123");
        assert_eq!(t.day().next().start().to_rfc3339(), "2026-11-24T00:00:00Z");
        assert_eq!(t.day().next_month_start().iso(), "2026-12-01");
        let dec = UnixTime::parse_rfc3339("2026-12-31T23:59:59Z").unwrap();
        assert_eq!(dec.day().next_month_start().iso(), "2027-01-01");
        let leap = UnixTime::parse_rfc3339("2028-02-29T00:00:00Z").unwrap();
        assert_eq!(leap.day().next_month_start().iso(), "2028-03-01");
        assert_eq!(Day::parse_iso("2026-11-23"), Some(t.day()));
        assert_eq!(Day::parse_compact("20261123"), Some(t.day()));
        assert_eq!(Day::parse_iso("2026-13-01"), None);
    }

    #[test]
    fn timestamps_must_be_writable_back_in_utc() {
        assert_eq!(UnixTime::parse_rfc3339("9999-12-31T23:59:59Z").unwrap().to_rfc3339(), "9999-12-31T23:59:59Z");
        assert!(UnixTime::parse_rfc3339("9999-12-31T23:59:59-01:00").is_err());
        assert!(UnixTime::parse_rfc3339("0000-01-01T00:00:00+01:00").is_err());
        assert!(UnixTime::parse_rfc3339("0000-01-01T00:00:00Z").is_ok());
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = UnixTime::parse_rfc3339("2026-11-23T01:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T23:00:00Z");
        assert!(UnixTime::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn before_the_epoch_days_round_down() {
        assert_eq!(UnixTime(-1).day().iso(), "1969-12-31");
    }
}
