//! Time targets (`--type time --target ...`) read as PostgreSQL's timestamptz input reads them.

/// A `recovery_target_time` as PostgreSQL reads it: a date and time with an offset or a zone
/// name, or with neither (then read in the restored cluster's `timezone`).
#[derive(Debug, Clone, PartialEq)]
pub enum TargetTime {
    /// Unix milliseconds.
    At(i64),
    /// A wall-clock time with no zone.
    Local(jiff::civil::DateTime),
}

/// How a time target may be written, for hints.
pub const TIME_FORMS: &str = "2026-11-21 09:30:00+09, +0900, +09:00, 'Z', a zone name ('2026-11-21 09:30:00 Asia/Tokyo', UTC) or no zone (the restored cluster's timezone setting); 'T' may separate date and time, seconds may have a fraction";

/// Parses a time target in the forms PostgreSQL's timestamptz input takes for it
/// (`YYYY-MM-DD[ T]HH:MM[:SS[.frac]]` then `Z`, `+HH`, `+HHMM`, `+HH:MM[:SS]`, a zone name, or
/// nothing). The reason when it does not read.
pub fn parse_target_time(s: &str) -> std::result::Result<TargetTime, String> {
    let s = s.trim();
    let bad = |why: &str| format!("cannot read the target time '{s}': {why}");
    let num = |t: &str, what: &str| -> std::result::Result<i64, String> {
        if t.is_empty() || t.len() > 4 || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad(&format!("'{t}' is not a {what}")));
        }
        Ok(t.parse().unwrap())
    };
    let (date, rest) = s
        .split_once([' ', 'T'])
        .ok_or_else(|| bad("expected a date and a time"))?;
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d[..] else {
        return Err(bad("the date must be YYYY-MM-DD"));
    };
    let rest = rest.trim_start();
    let tend = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (time, zone) = rest.split_at(tend);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = hms.split(':').collect();
    if !(2..=3).contains(&t.len()) {
        return Err(bad("the time must be HH:MM[:SS[.fraction]]"));
    }
    let nanos = if frac.is_empty() {
        0
    } else if frac.len() <= 9 && frac.bytes().all(|c| c.is_ascii_digit()) {
        format!("{frac:0<9}").parse::<i32>().unwrap()
    } else {
        return Err(bad("the fraction of a second must be digits"));
    };
    let dt = jiff::civil::DateTime::new(
        num(y, "year")? as i16,
        num(mo, "month")? as i8,
        num(da, "day")? as i8,
        num(t[0], "hour")? as i8,
        num(t[1], "minute")? as i8,
        t.get(2).map(|x| num(x, "second")).transpose()?.unwrap_or(0) as i8,
        nanos,
    )
    .map_err(|e| bad(&e.to_string()))?;
    let zone = zone.trim();
    let offset = |z: &str, sign: i64| -> std::result::Result<i64, String> {
        let parts: Vec<&str> = if z.contains(':') {
            z.split(':').collect()
        } else if z.len() <= 2 {
            vec![z]
        } else if z.len() == 4 || z.len() == 6 {
            (0..z.len()).step_by(2).map(|i| &z[i..i + 2]).collect()
        } else {
            return Err(bad(&format!("cannot read the offset '{z}'")));
        };
        let mut secs = 0;
        for (i, p) in parts.iter().enumerate() {
            let limit = if i == 0 { 15 } else { 59 };
            let v = num(p, "offset")
                .ok()
                .filter(|v| *v <= limit && i < 3 && (i == 0 || p.len() == 2))
                .ok_or_else(|| bad(&format!("cannot read the offset '{z}'")))?;
            secs += v * [3600, 60, 1][i];
        }
        Ok(sign * secs)
    };
    let at = |tz: jiff::tz::TimeZone| -> std::result::Result<TargetTime, String> {
        tz.to_timestamp(dt)
            .map(|ts| TargetTime::At(ts.as_millisecond()))
            .map_err(|e| bad(&e.to_string()))
    };
    match zone {
        "" => Ok(TargetTime::Local(dt)),
        "Z" | "z" => at(jiff::tz::TimeZone::UTC),
        z if z.starts_with('+') || z.starts_with('-') => {
            let secs = offset(&z[1..], if z.starts_with('-') { -1 } else { 1 })?;
            at(jiff::tz::TimeZone::fixed(
                jiff::tz::Offset::from_seconds(secs as i32).map_err(|e| bad(&e.to_string()))?,
            ))
        }
        z => at(zone_named(z).map_err(|e| bad(&e))?),
    }
}

/// A time zone by name, as PostgreSQL's `timezone` setting or a timestamp may give it.
fn zone_named(z: &str) -> std::result::Result<jiff::tz::TimeZone, String> {
    match z.to_ascii_uppercase().as_str() {
        "UTC" | "GMT" | "Z" | "ZULU" | "UCT" => return Ok(jiff::tz::TimeZone::UTC),
        _ => {}
    }
    jiff::tz::TimeZone::get(z)
        .or_else(|_| jiff::tz::TimeZone::posix(z))
        .map_err(|_| format!("'{z}' is not a time zone this host's time zone database knows"))
}

impl TargetTime {
    /// Unix milliseconds, a zone-less time read in `zone`.
    pub fn millis(&self, zone: &str) -> std::result::Result<i64, String> {
        match self {
            TargetTime::At(ms) => Ok(*ms),
            TargetTime::Local(dt) => zone_named(zone)?
                .to_timestamp(*dt)
                .map(|t| t.as_millisecond())
                .map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_postgresql_reads_them() {
        let ms = |s: &str| match parse_target_time(s).unwrap() {
            TargetTime::At(ms) => ms,
            TargetTime::Local(_) => panic!("{s} has a zone"),
        };
        assert_eq!(ms("1970-01-01 00:00:00+00"), 0);
        assert_eq!(ms("2026-11-21 09:30:00.123456+00"), 1795253400123);
        assert_eq!(ms("2026-11-21 09:30:00.5+00"), 1795253400500);
        assert_eq!(ms("2026-11-21T10:30:00+01"), 1795253400000);
        assert_eq!(ms("2026-11-21 04:00:00-05:30"), 1795253400000);
        assert_eq!(ms("2026-11-21 09:30:00Z"), 1795253400000);
        for s in [
            "2026-11-21 18:30:00+09",
            "2026-11-21 18:30:00+0900",
            "2026-11-21 18:30:00+09:00",
            "2026-11-21 18:30:00 +09:00",
            "2026-11-21 18:30:00 Asia/Tokyo",
            "2026-11-21 09:30:00 UTC",
            "2026-11-21 09:30 utc",
        ] {
            assert_eq!(ms(s), 1795253400000, "{s}");
        }
        let local = parse_target_time("2026-11-21 18:30:00").unwrap();
        assert_eq!(local.millis("Asia/Tokyo"), Ok(1795253400000));
        assert_eq!(local.millis("GMT"), Ok(1795253400000 + 9 * 3600 * 1000));
        // Daylight saving time follows the zone's rules.
        let summer = parse_target_time("2026-07-01 12:00:00").unwrap();
        assert_eq!(
            summer.millis("Europe/Berlin").unwrap(),
            ms("2026-07-01 10:00:00+00")
        );
        for bad in [
            "garbage",
            "yesterday",
            "2026-13-45 99:99:99",
            "2026-02-30 10:00:00",
            "2026-11-21 09:30:00+99",
            "2026-11-21 09:30:00 Mars/Olympus",
            "2026-11-21",
        ] {
            assert!(parse_target_time(bad).is_err(), "{bad}");
        }
    }
}
