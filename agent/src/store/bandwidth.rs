//! The bandwidth limit: BWLIMIT's weekly timetable and one token bucket shared by every upload.
//!
//! In: a [`Timetable`] in rclone's syntax (`10M`, `off`, `08:00,512k 18:00,off`,
//! `Mon-08:00,1M Sat-00:00,off`), changed at run time by BWLIMIT_FILE. Out: [`Bandwidth::acquire`],
//! which every request body (a small file, a multipart part) waits on before it is sent, so all
//! transfers share one budget; and the current limit, for the gauge.
//!
//! The budget is taken per request body, before it is sent (at most a part, 5 MiB by default):
//! the average rate holds over seconds, and one part may go at line speed. The bucket holds one
//! second of the rate, so a transfer after a quiet spell starts without waiting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use chrono::{Datelike, Timelike};

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MINUTES_PER_DAY: u32 = 24 * 60;

/// A bandwidth limit that may change by time of day and day of week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    /// (minute of the week from Monday 00:00, bytes per second or None for no limit), sorted.
    /// One entry with no time is stored at minute 0 and applies all week.
    slots: Vec<(u32, Option<u64>)>,
}

impl Timetable {
    /// No limit.
    pub fn off() -> Self {
        Timetable {
            slots: vec![(0, None)],
        }
    }

    /// The limit at a minute of the week: the latest entry at or before it, wrapping round from
    /// the week's last entry (as rclone does).
    pub fn limit_at(&self, minute_of_week: u32) -> Option<u64> {
        let before = self.slots.iter().rev().find(|(m, _)| *m <= minute_of_week);
        before.or(self.slots.last()).and_then(|(_, rate)| *rate)
    }

    /// The limit now, in local time.
    pub fn limit_now(&self) -> Option<u64> {
        let now = chrono::Local::now();
        let minute =
            now.weekday().num_days_from_monday() * MINUTES_PER_DAY + now.hour() * 60 + now.minute();
        self.limit_at(minute)
    }
}

/// A rate in rclone's units: a number of KiB/s, or with a suffix B, K, M, G (binary); `off`.
fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if s.contains(':') {
        return Err(format!(
            "{s:?}: a timetable entry is TIME,RATE (e.g. 08:00,512k), and separate upload:download rates (10M:1M) are not supported"
        ));
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate such as 512k, 10M or off"))?;
    let mult: f64 = match unit.to_ascii_uppercase().as_str() {
        "" | "K" | "KI" => 1024.0,
        "B" => 1.0,
        "M" | "MI" => 1024.0 * 1024.0,
        "G" | "GI" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use B, K, M or G)")),
    };
    let bytes = (n * mult) as u64;
    // rclone: 0 means no limit.
    Ok((bytes > 0).then_some(bytes))
}

/// `HH:MM` or `Day-HH:MM` → the minutes of the week it starts at (one per day without a day).
fn parse_time(s: &str) -> Result<Vec<u32>, String> {
    let bad = || format!("{s:?} is not a time such as 08:00 or Mon-08:00");
    let (day, hm) = match s.split_once('-') {
        Some((d, hm)) => {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| format!("{d:?} is not a day (Mon, Tue, ..., Sun)"))?;
            (Some(i as u32), hm)
        }
        None => (None, s),
    };
    let (h, m) = hm.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || hm.len() != 5 {
        return Err(bad());
    }
    let minute = h * 60 + m;
    Ok(match day {
        Some(d) => vec![d * MINUTES_PER_DAY + minute],
        None => (0..7).map(|d| d * MINUTES_PER_DAY + minute).collect(),
    })
}

impl FromStr for Timetable {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let entries: Vec<&str> = s.split_whitespace().collect();
        if entries.is_empty() {
            return Err("empty: give a rate such as 10M, off, or a timetable".into());
        }
        if let [single] = entries[..] {
            if !single.contains(',') {
                return Ok(Timetable {
                    slots: vec![(0, parse_rate(single)?)],
                });
            }
        }
        let mut slots = Vec::new();
        for e in entries {
            let (time, rate) = e
                .split_once(',')
                .ok_or_else(|| format!("{e:?}: a timetable entry is TIME,RATE, e.g. 08:00,512k"))?;
            let rate = parse_rate(rate)?;
            slots.extend(parse_time(time)?.into_iter().map(|m| (m, rate)));
        }
        slots.sort_by_key(|(m, _)| *m);
        if slots.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("two entries start at the same time".into());
        }
        Ok(Timetable { slots })
    }
}

impl<'de> serde::Deserialize<'de> for Timetable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Timetable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = |r: Option<u64>| r.map_or("off".to_string(), |b| format!("{}B", b));
        let parts: Vec<String> = self
            .slots
            .iter()
            .map(|(m, r)| {
                let (d, hm) = (m / MINUTES_PER_DAY, m % MINUTES_PER_DAY);
                format!(
                    "{}-{:02}:{:02},{}",
                    DAYS[d as usize],
                    hm / 60,
                    hm % 60,
                    rate(*r)
                )
            })
            .collect();
        write!(f, "{}", parts.join(" "))
    }
}

/// Checks a BWLIMIT value, for the configuration's early checks.
pub fn check(s: &str) -> Result<(), String> {
    s.parse::<Timetable>().map(|_| ())
}

/// The shared budget. Without a limit, `acquire` returns at once.
#[derive(Debug)]
pub struct Bandwidth {
    table: Mutex<Timetable>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be sent now; negative: owed by requests already let through.
    tokens: f64,
    last: Instant,
}

impl Bandwidth {
    /// A budget following `table`.
    pub fn new(table: Timetable) -> Self {
        Bandwidth {
            table: Mutex::new(table),
            bucket: Mutex::new(Bucket {
                tokens: f64::MAX,
                last: Instant::now(),
            }),
        }
    }

    /// The limit now, in bytes per second (None: no limit).
    pub fn limit_now(&self) -> Option<u64> {
        self.table.lock().expect("bwlimit lock").limit_now()
    }

    /// Replaces the timetable (BWLIMIT_FILE changed).
    pub fn set(&self, table: Timetable) {
        *self.table.lock().expect("bwlimit lock") = table;
    }

    /// Waits until `bytes` may be sent under the current limit. Requests are let through in
    /// turn, each paying for its bytes before they go, so the average rate never exceeds it.
    pub async fn acquire(&self, bytes: u64) {
        let Some(rate) = self.limit_now() else {
            return;
        };
        let wait = {
            let mut b = self.bucket.lock().expect("bucket lock");
            let rate = rate as f64;
            let now = Instant::now();
            let refill = now.duration_since(b.last).as_secs_f64() * rate;
            // The bucket holds one second of the rate.
            b.tokens = (b.tokens.min(rate) + refill).min(rate);
            b.last = now;
            b.tokens -= bytes as f64;
            (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// BWLIMIT_FILE: a file holding a BWLIMIT value, re-read when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitFile {
    /// The file.
    pub path: PathBuf,
}

impl LimitFile {
    /// Reads and parses the file.
    pub fn read(&self) -> Result<Timetable, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect();
        lines
            .join(" ")
            .parse()
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// What identifies the file's current content cheaply: its modification time and length.
    pub fn stamp(&self) -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}

/// How often the limit is looked at again: the timetable's next entry, BWLIMIT_FILE's changes.
const REFRESH: Duration = Duration::from_secs(2);

/// Keeps `gauge` at the current limit (0: none) and, with a [`LimitFile`], re-reads it when it
/// changes. A file that cannot be read or parsed is logged and counted in `errors`, and the
/// previous limit stays. Ends when the budget is dropped.
pub fn spawn_refresh(
    bw: &std::sync::Arc<Bandwidth>,
    file: Option<LimitFile>,
    gauge: prometheus::IntGauge,
    errors: prometheus::IntCounter,
) -> tokio::task::JoinHandle<()> {
    let weak = std::sync::Arc::downgrade(bw);
    let mut seen = file.as_ref().and_then(LimitFile::stamp);
    tokio::spawn(async move {
        loop {
            let Some(bw) = weak.upgrade() else { return };
            if let Some(f) = &file {
                let stamp = f.stamp();
                if stamp != seen {
                    seen = stamp;
                    match f.read() {
                        Ok(t) => {
                            tracing::info!(bwlimit = %t, "BWLIMIT_FILE changed; new limit");
                            bw.set(t);
                        }
                        Err(e) => {
                            errors.inc();
                            tracing::error!(error = %e, "BWLIMIT_FILE is not a valid limit; keeping the previous one");
                        }
                    }
                }
            }
            gauge.set(bw.limit_now().map_or(0, |b| b as i64));
            drop(bw);
            tokio::time::sleep(REFRESH).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timetable {
        s.parse().unwrap()
    }

    #[test]
    fn rates_use_rclone_units() {
        assert_eq!(t("10M").limit_at(0), Some(10 << 20));
        assert_eq!(t("512k").limit_at(0), Some(512 << 10));
        assert_eq!(
            t("512").limit_at(0),
            Some(512 << 10),
            "a bare number is KiB/s"
        );
        assert_eq!(t("1.5M").limit_at(0), Some(3 << 19));
        assert_eq!(t("100B").limit_at(0), Some(100));
        assert_eq!(t("off").limit_at(0), None);
        assert_eq!(t("0").limit_at(0), None, "0 is no limit, as in rclone");
    }

    #[test]
    fn a_daily_timetable_applies_every_day_and_wraps_round() {
        let tt = t("08:00,512k 12:00,10M 18:00,off");
        let at = |d: u32, h: u32, m: u32| tt.limit_at(d * MINUTES_PER_DAY + h * 60 + m);
        assert_eq!(at(0, 7, 59), None, "before 08:00: yesterday's 18:00 entry");
        assert_eq!(at(0, 8, 0), Some(512 << 10));
        assert_eq!(at(3, 12, 30), Some(10 << 20));
        assert_eq!(at(6, 23, 59), None);
    }

    #[test]
    fn weekday_entries_hold_until_the_next_entry() {
        let tt = t("Mon-08:00,1M Fri-18:00,off");
        let at = |d: u32, h: u32| tt.limit_at(d * MINUTES_PER_DAY + h * 60);
        assert_eq!(
            at(0, 7),
            None,
            "Monday before 08:00: still the weekend's off"
        );
        assert_eq!(at(2, 3), Some(1 << 20), "Wednesday night: Monday's entry");
        assert_eq!(at(5, 12), None, "Saturday");
    }

    #[test]
    fn malformed_values_say_what_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("fast", "not a rate"),
            ("10X", "unknown unit"),
            ("10M:1M", "upload:download"),
            ("25:00,1M", "not a time"),
            ("Xyz-08:00,1M", "not a day"),
            ("08:00", "TIME,RATE"),
            ("08:00,1M 08:00,off", "same time"),
        ] {
            let err = bad.parse::<Timetable>().unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_makes_requests_pay_for_their_bytes() {
        let bw = Bandwidth::new(t("1M"));
        let start = tokio::time::Instant::now();
        // One second of burst, then 7 MiB owed: 7 s.
        bw.acquire(8 << 20).await;
        let waited = start.elapsed().as_secs_f64();
        assert!((6.9..7.2).contains(&waited), "{waited}");
        bw.set(Timetable::off());
        let start = tokio::time::Instant::now();
        bw.acquire(100 << 20).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "off: no wait");
    }
}
