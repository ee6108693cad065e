//! Upload budgets (data caps): how many bytes this node may upload per UTC calendar day and per
//! UTC calendar month.
//!
//! Owns the counters, their resets at the boundaries and the civil-date arithmetic behind them
//! (Howard Hinnant's `days_from_civil` / `civil_from_days`, so no date crate is needed). The clock
//! is always an argument: Unix time in milliseconds. The [`Scheduler`](crate::Scheduler) holds
//! one and charges each request it hands out; the node can also persist it (it is serde).
//!
//! Rules:
//! - A spend passes only if it fits in every limited period: `used + bytes <= limit`. A cap is a
//!   cap, it is never overshot.
//! - A period's counter resets when the clock enters a later period. A clock that goes back keeps
//!   counting against the period it last saw (stricter, never a free reset).
//! - A spend larger than a whole limit never passes; the scheduler refuses such budgets up front
//!   (see [`Scheduler::set_budget`](crate::Scheduler::set_budget)).

use serde::{Deserialize, Serialize};

/// Milliseconds in a day (UTC days have no leap seconds in Unix time).
const DAY_MS: u64 = 86_400_000;

/// Which calendar period a budget limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// A UTC calendar day, 00:00 to 24:00.
    Day,
    /// A UTC calendar month, from the 1st 00:00 to the next month's 1st 00:00.
    Month,
}

impl std::fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        })
    }
}

/// A spend did not fit in the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "upload budget for the {period} exhausted: {remaining} bytes left, resets at {resets_at_ms} ms"
)]
pub struct BudgetExhausted {
    /// The period that blocks the spend; when both do, the one that resets later (the month).
    pub period: BudgetPeriod,
    /// Unix time in ms when the blocking period ends; the spend fits after it (if it is not
    /// larger than the whole limit).
    pub resets_at_ms: u64,
    /// Bytes still allowed in the blocking period.
    pub remaining: u64,
}

/// One period's counter: which period (day or month number) and the bytes spent in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    index: u64,
    used: u64,
}

impl Counter {
    /// Bytes spent in period `index` (0 once the clock has moved to a later period).
    fn used_in(&self, index: u64) -> u64 {
        if index > self.index { 0 } else { self.used }
    }

    /// Moves the counter to period `index` if that is later, resetting it.
    fn roll(&mut self, index: u64) {
        if index > self.index {
            *self = Counter { index, used: 0 };
        }
    }
}

/// An optional daily and an optional monthly upload limit in bytes, and what was spent against
/// them. Days and months follow the UTC calendar of the clock passed to each call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadBudget {
    daily: Option<u64>,
    monthly: Option<u64>,
    day: Counter,
    month: Counter,
}

/// One period's figures, for status pages and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodStatus {
    /// Bytes uploaded in the current period (counted even without a limit).
    pub used: u64,
    /// The limit in bytes, if any.
    pub limit: Option<u64>,
    /// Bytes still allowed (`None` without a limit).
    pub remaining: Option<u64>,
    /// Unix time in ms when the current period began.
    pub starts_at_ms: u64,
    /// Unix time in ms when the current period ends and its counter resets.
    pub resets_at_ms: u64,
}

/// Both periods' figures at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The current UTC day.
    pub day: PeriodStatus,
    /// The current UTC month.
    pub month: PeriodStatus,
}

impl UploadBudget {
    /// A budget with the given limits in bytes per UTC day and per UTC month (`None`: no limit).
    pub fn new(daily: Option<u64>, monthly: Option<u64>) -> Self {
        UploadBudget {
            daily,
            monthly,
            day: Counter::default(),
            month: Counter::default(),
        }
    }

    /// A budget without limits (it still counts what is uploaded).
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// The daily limit in bytes, if any.
    pub fn daily_limit(&self) -> Option<u64> {
        self.daily
    }

    /// The monthly limit in bytes, if any.
    pub fn monthly_limit(&self) -> Option<u64> {
        self.monthly
    }

    /// Changes the limits, keeping what was already spent in the current periods.
    pub fn set_limits(&mut self, daily: Option<u64>, monthly: Option<u64>) {
        self.daily = daily;
        self.monthly = monthly;
    }

    /// The smaller of the two limits, if any: no single spend larger than this can ever pass.
    pub fn smallest_limit(&self) -> Option<u64> {
        match (self.daily, self.monthly) {
            (Some(d), Some(m)) => Some(d.min(m)),
            (d, m) => d.or(m),
        }
    }

    /// Whether `bytes` fit now, without spending them.
    pub fn check(&self, now_ms: u64, bytes: u64) -> Result<(), BudgetExhausted> {
        let day = day_index(now_ms);
        let month = month_index(day);
        let day_block = blocked(self.daily, self.day.used_in(day), bytes);
        let month_block = blocked(self.monthly, self.month.used_in(month), bytes);
        // The month blocks for longer, so it wins when both do.
        if let Some(remaining) = month_block {
            return Err(BudgetExhausted {
                period: BudgetPeriod::Month,
                resets_at_ms: days_to_ms(month_end_day(day)),
                remaining,
            });
        }
        if let Some(remaining) = day_block {
            return Err(BudgetExhausted {
                period: BudgetPeriod::Day,
                resets_at_ms: days_to_ms(day.saturating_add(1)),
                remaining,
            });
        }
        Ok(())
    }

    /// Spends `bytes` at `now_ms` if they fit in both periods; otherwise spends nothing and says
    /// which period blocks and when it resets.
    pub fn try_spend(&mut self, now_ms: u64, bytes: u64) -> Result<(), BudgetExhausted> {
        self.check(now_ms, bytes)?;
        self.spend_unchecked(now_ms, bytes);
        Ok(())
    }

    /// Gives back `bytes` that were spent in the current periods but not uploaded after all (a
    /// transfer cut short). Never below zero; spends of earlier periods are not touched.
    pub fn refund(&mut self, now_ms: u64, bytes: u64) {
        self.roll(now_ms);
        self.day.used = self.day.used.saturating_sub(bytes);
        self.month.used = self.month.used.saturating_sub(bytes);
    }

    /// Bytes that may still be uploaded now: the smaller of the periods' remainders, `None`
    /// without any limit.
    pub fn remaining(&self, now_ms: u64) -> Option<u64> {
        let status = self.status(now_ms);
        match (status.day.remaining, status.month.remaining) {
            (Some(d), Some(m)) => Some(d.min(m)),
            (d, m) => d.or(m),
        }
    }

    /// Used, limit, remaining and reset time of the current day and month.
    pub fn status(&self, now_ms: u64) -> BudgetStatus {
        let day = day_index(now_ms);
        let month = month_index(day);
        let day_used = self.day.used_in(day);
        let month_used = self.month.used_in(month);
        BudgetStatus {
            day: PeriodStatus {
                used: day_used,
                limit: self.daily,
                remaining: self.daily.map(|l| l.saturating_sub(day_used)),
                starts_at_ms: days_to_ms(day),
                resets_at_ms: days_to_ms(day.saturating_add(1)),
            },
            month: PeriodStatus {
                used: month_used,
                limit: self.monthly,
                remaining: self.monthly.map(|l| l.saturating_sub(month_used)),
                starts_at_ms: days_to_ms(month_start_day(day)),
                resets_at_ms: days_to_ms(month_end_day(day)),
            },
        }
    }

    fn roll(&mut self, now_ms: u64) {
        let day = day_index(now_ms);
        self.day.roll(day);
        self.month.roll(month_index(day));
    }

    fn spend_unchecked(&mut self, now_ms: u64, bytes: u64) {
        self.roll(now_ms);
        self.day.used = self.day.used.saturating_add(bytes);
        self.month.used = self.month.used.saturating_add(bytes);
    }
}

/// `Some(remaining)` if `bytes` do not fit under `limit` after `used`.
fn blocked(limit: Option<u64>, used: u64, bytes: u64) -> Option<u64> {
    let limit = limit?;
    let remaining = limit.saturating_sub(used);
    (bytes > remaining).then_some(remaining)
}

/// Days since 1970-01-01 (UTC) of a Unix time in ms.
fn day_index(now_ms: u64) -> u64 {
    now_ms / DAY_MS
}

fn days_to_ms(days: u64) -> u64 {
    days.saturating_mul(DAY_MS)
}

/// A month's number, `year * 12 + month - 1`, for the month holding day `day`.
fn month_index(day: u64) -> u64 {
    let (y, m, _) = civil_from_days(day_to_i64(day));
    (y * 12 + i64::from(m) - 1).max(0).unsigned_abs()
}

/// The first day of the month holding `day`.
fn month_start_day(day: u64) -> u64 {
    let (y, m, _) = civil_from_days(day_to_i64(day));
    days_from_civil(y, m, 1).max(0).unsigned_abs()
}

/// The first day of the month after the one holding `day`.
fn month_end_day(day: u64) -> u64 {
    let (y, m, _) = civil_from_days(day_to_i64(day));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1).max(0).unsigned_abs()
}

/// Days from a u64 ms clock are below 2^38, so this never saturates in practice.
fn day_to_i64(day: u64) -> i64 {
    i64::try_from(day).unwrap_or(i64::MAX / 2)
}

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d` (Howard Hinnant's
/// `days_from_civil`). `m` in 1..=12, `d` in 1..=31.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = if m <= 2 { y + 1 } else { y };
    // Both are in range by construction; the fallbacks are never taken.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date and time.
    fn at(y: i64, m: u32, d: u32, hh: u64, mm: u64) -> u64 {
        let days = u64::try_from(days_from_civil(y, m, d)).unwrap();
        days * DAY_MS + (hh * 60 + mm) * 60_000
    }

    #[test]
    fn civil_dates_round_trip_and_match_known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 1, 31), 20_484);
        assert_eq!(civil_from_days(20_485), (2026, 2, 1));
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
        assert_eq!(
            civil_from_days(days_from_civil(2028, 2, 29) + 1),
            (2028, 3, 1)
        );
        for z in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn daily_budget_resets_at_utc_midnight_and_month_end() {
        let mut b = UploadBudget::new(Some(1_000), None);
        let before = at(2026, 1, 31, 23, 59);
        b.try_spend(before, 600).unwrap();
        let err = b.try_spend(before, 600).unwrap_err();
        assert_eq!(
            err,
            BudgetExhausted {
                period: BudgetPeriod::Day,
                resets_at_ms: at(2026, 2, 1, 0, 0),
                remaining: 400,
            }
        );
        assert_eq!(b.remaining(before), Some(400));
        // One minute later it is a new day (and a new month).
        let after = at(2026, 2, 1, 0, 0);
        assert_eq!(b.remaining(after), Some(1_000));
        b.try_spend(after, 1_000).unwrap();
        assert_eq!(b.status(after).day.used, 1_000);
        assert_eq!(b.status(after).month.used, 1_000);
    }

    #[test]
    fn monthly_budget_resets_on_the_first_after_a_leap_day() {
        let mut b = UploadBudget::new(Some(10_000), Some(1_500));
        b.try_spend(at(2028, 2, 1, 12, 0), 1_000).unwrap();
        let leap_day = at(2028, 2, 29, 23, 59);
        let err = b.try_spend(leap_day, 600).unwrap_err();
        assert_eq!(err.period, BudgetPeriod::Month);
        assert_eq!(err.resets_at_ms, at(2028, 3, 1, 0, 0));
        assert_eq!(err.remaining, 500);
        let status = b.status(leap_day);
        assert_eq!(status.month.starts_at_ms, at(2028, 2, 1, 0, 0));
        assert_eq!(status.month.resets_at_ms, at(2028, 3, 1, 0, 0));
        assert_eq!(status.day.starts_at_ms, at(2028, 2, 29, 0, 0));
        assert_eq!(status.day.used, 0);
        b.try_spend(at(2028, 3, 1, 0, 0), 1_500).unwrap();
        // December rolls into January of the next year.
        let err = b.try_spend(at(2028, 12, 31, 10, 0), 1_501).unwrap_err();
        assert_eq!(err.resets_at_ms, at(2029, 1, 1, 0, 0));
    }

    #[test]
    fn when_both_periods_block_the_later_reset_is_reported() {
        let mut b = UploadBudget::new(Some(100), Some(150));
        let t = at(2026, 5, 10, 8, 0);
        b.try_spend(t, 100).unwrap();
        b.try_spend(at(2026, 5, 11, 8, 0), 50).unwrap();
        let err = b.try_spend(at(2026, 5, 11, 9, 0), 60).unwrap_err();
        assert_eq!(err.period, BudgetPeriod::Month);
        assert_eq!(err.resets_at_ms, at(2026, 6, 1, 0, 0));
        assert_eq!(b.remaining(at(2026, 5, 11, 9, 0)), Some(0));
    }

    #[test]
    fn a_clock_going_back_gives_no_free_reset() {
        let mut b = UploadBudget::new(Some(100), None);
        b.try_spend(at(2026, 3, 2, 1, 0), 100).unwrap();
        assert!(b.try_spend(at(2026, 3, 1, 23, 0), 1).is_err());
        assert!(b.try_spend(at(2026, 3, 3, 0, 0), 100).is_ok());
    }

    #[test]
    fn refund_and_unlimited() {
        let mut b = UploadBudget::new(Some(100), None);
        let t = at(2026, 7, 1, 0, 0);
        b.try_spend(t, 80).unwrap();
        b.refund(t, 30);
        assert_eq!(b.remaining(t), Some(50));
        b.refund(t, 1_000);
        assert_eq!(b.remaining(t), Some(100));
        let mut u = UploadBudget::unlimited();
        u.try_spend(t, u64::MAX).unwrap();
        u.try_spend(t, u64::MAX).unwrap();
        assert_eq!(u.remaining(t), None);
        assert_eq!(u.status(t).day.used, u64::MAX);
        // Extreme clocks do not panic.
        assert!(b.try_spend(u64::MAX, 1).is_ok());
        let _ = b.status(u64::MAX);
    }
}
