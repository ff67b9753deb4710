//! The overview's figures: per merchant day over 30 days, orders created and paid and
//! their amounts, notifications by verdict, and the four rates of the pipeline (P_s,
//! P_r, P_h, P_c); plus what needs someone's attention. Computed from index and id
//! ranges (`db::overview`) and kept for a few seconds, so a page reload or several
//! staff looking at once cost one computation.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::core::Core;
use crate::db::overview::{self as q, Flagged};
use crate::db::{DbError, Tx};
use crate::domain::{OrderStatus, RejectionCode, Verdict};

/// Days the charts and the 30-day tiles cover, today included.
pub const DAYS: usize = 30;
/// How long computed figures are shown before they are computed again.
pub const FRESH_FOR: Duration = Duration::seconds(5);
/// A day that ended this long ago has settled: its payments are in, its webhooks are
/// past their retries (the default schedule spans 33 h). Its figures are kept and not
/// read again from the database until `SETTLED_FOR` has passed.
pub const SETTLE_AFTER: Duration = Duration::hours(48);
/// How long settled days' figures are kept: what can still change them (a refund, a
/// late payment, a re-sent webhook) shows within this.
pub const SETTLED_FOR: Duration = Duration::minutes(10);
/// Rows listed under each "needs attention" heading.
pub const LISTED: u32 = 5;

/// One merchant day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Day {
    pub date: NaiveDate,
    pub created: i64,
    /// Orders created this day that were paid (refunded later or not).
    pub paid: i64,
    pub paid_amount: i64,
    pub refunded_orders: i64,
    pub refunded_amount: i64,
    /// Notifications received, by verdict (in `Verdict::ALL` order).
    pub by_verdict: [i64; 5],
    /// Notifications that passed verification.
    pub verified: i64,
    /// Verified notifications applied or found duplicate.
    pub handled: i64,
    pub attempts: i64,
    pub attempts_2xx: i64,
    pub events: i64,
    pub events_delivered: i64,
    /// Rejected notifications by reason code.
    pub rejected: BTreeMap<String, i64>,
}

impl Day {
    pub fn received(&self) -> i64 {
        self.by_verdict.iter().sum()
    }

    /// P_s: webhook attempts answered 2xx ÷ attempts made.
    pub fn p_s(&self) -> Option<f64> {
        ratio(self.attempts_2xx, self.attempts)
    }
    /// P_r: notifications that passed verification ÷ notifications received.
    pub fn p_r(&self) -> Option<f64> {
        ratio(self.verified, self.received())
    }
    /// P_h: notifications applied or duplicate ÷ verified.
    pub fn p_h(&self) -> Option<f64> {
        ratio(self.handled, self.verified)
    }
    /// P_c: events delivered to the shop ÷ events queued.
    pub fn p_c(&self) -> Option<f64> {
        ratio(self.events_delivered, self.events)
    }
}

fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Everything the overview shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub computed_at: DateTime<Utc>,
    /// Oldest first; the last is today.
    pub days: Vec<Day>,
    /// Rejected notifications of the 30 days by reason code, amount mismatches first.
    pub rejected: Vec<(String, i64)>,
    pub late: (i64, Vec<Flagged>),
    pub pending_expired: (i64, Vec<Flagged>),
    pub refunds_pending: (i64, Vec<Flagged>),
    pub failed_deliveries: i64,
    pub disabled_endpoints: Vec<String>,
}

impl Overview {
    pub fn today(&self) -> &Day {
        // `days` always has DAYS entries.
        &self.days[self.days.len() - 1]
    }

    /// The 30 days summed.
    pub fn total(&self) -> Day {
        let mut t = Day::default();
        for d in &self.days {
            t.created += d.created;
            t.paid += d.paid;
            t.paid_amount += d.paid_amount;
            t.refunded_orders += d.refunded_orders;
            t.refunded_amount += d.refunded_amount;
            for (a, b) in t.by_verdict.iter_mut().zip(d.by_verdict) {
                *a += b;
            }
            t.verified += d.verified;
            t.handled += d.handled;
            t.attempts += d.attempts;
            t.attempts_2xx += d.attempts_2xx;
            t.events += d.events;
            t.events_delivered += d.events_delivered;
            for (code, n) in &d.rejected {
                *t.rejected.entry(code.clone()).or_default() += n;
            }
        }
        t
    }

    /// Things needing attention, counted.
    pub fn open_problems(&self) -> i64 {
        self.late.0
            + self.rejected.iter().map(|(_, n)| n).sum::<i64>()
            + self.failed_deliveries
            + self.disabled_endpoints.len() as i64
            + self.pending_expired.0
            + self.refunds_pending.0
    }
}

/// The start of a local date in UTC, as the order list's date filter has it.
pub fn day_start(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    super::export::day_start(date, tz)
        .unwrap_or_else(|| Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default()))
}

/// The 30 local dates ending today, and where each starts (plus the end of today).
pub fn day_bounds(now: DateTime<Utc>, tz: Tz) -> (Vec<NaiveDate>, Vec<DateTime<Utc>>) {
    let today = now.with_timezone(&tz).date_naive();
    let dates: Vec<NaiveDate> = (0..DAYS as i64)
        .rev()
        .map(|back| today - Duration::days(back))
        .collect();
    let mut bounds: Vec<DateTime<Utc>> = dates.iter().map(|d| day_start(*d, tz)).collect();
    bounds.push(day_start(today + Duration::days(1), tz));
    (dates, bounds)
}

/// Computes every figure, reading every day from the database.
pub fn compute(tx: &Tx<'_>, now: DateTime<Utc>, tz: Tz) -> Result<Overview, DbError> {
    compute_with(tx, now, tz, &BTreeMap::new())
}

/// Computes the figures, taking the days in `settled` as they are and reading only the
/// days after the last of them.
pub fn compute_with(
    tx: &Tx<'_>,
    now: DateTime<Utc>,
    tz: Tz,
    settled: &BTreeMap<NaiveDate, Day>,
) -> Result<Overview, DbError> {
    let (dates, bounds) = day_bounds(now, tz);
    // The days read: from the first one not settled (settled days are a prefix).
    let first = dates.iter().take_while(|d| settled.contains_key(d)).count();
    let starts: Vec<i64> = bounds.iter().map(|t| t.timestamp_millis()).collect();
    let mut days: Vec<Day> = dates
        .iter()
        .map(|d| {
            settled.get(d).cloned().unwrap_or_else(|| Day {
                date: *d,
                ..Day::default()
            })
        })
        .collect();
    let slot = |ms: i64| -> Option<usize> {
        if ms < starts[first] || ms >= starts[DAYS] {
            return None;
        }
        Some(starts.partition_point(|s| *s <= ms) - 1)
    };
    let (from, until) = (bounds[first.min(DAYS)], bounds[DAYS]);
    if first < DAYS {
        for (created, status, amount, refunded) in q::orders_created(tx, from, until)? {
            let Some(i) = slot(created) else { continue };
            let d = &mut days[i];
            d.created += 1;
            if matches!(
                status,
                OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
            ) {
                d.paid += 1;
                d.paid_amount += amount;
            }
            if refunded > 0 {
                d.refunded_orders += 1;
                d.refunded_amount += refunded;
            }
        }
        for (at, verdict, code) in q::notifications_since(tx, from)? {
            let Some(i) = slot(at) else { continue };
            let d = &mut days[i];
            let index = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(4);
            d.by_verdict[index] += 1;
            let code = code.unwrap_or_default();
            // A code kassa no longer knows was written by a verified path before.
            let verified = verdict != Verdict::Rejected
                || !RejectionCode::ALL
                    .iter()
                    .any(|c| c.as_str() == code && c.is_verification_failure());
            if verified {
                d.verified += 1;
            }
            if matches!(verdict, Verdict::Applied | Verdict::Duplicate) {
                d.handled += 1;
            }
            if verdict == Verdict::Rejected {
                let code = if code.is_empty() {
                    "unknown".to_owned()
                } else {
                    code
                };
                *d.rejected.entry(code).or_default() += 1;
            }
        }
        for (at, status) in q::attempts_since(tx, from)? {
            let Some(i) = slot(at) else { continue };
            days[i].attempts += 1;
            if status.is_some_and(|s| (200..300).contains(&s)) {
                days[i].attempts_2xx += 1;
            }
        }
        for (at, delivered) in q::events_since(tx, from)? {
            let Some(i) = slot(at) else { continue };
            days[i].events += 1;
            if delivered {
                days[i].events_delivered += 1;
            }
        }
    }
    let mut overview = Overview {
        computed_at: now,
        days,
        rejected: Vec::new(),
        late: q::late_unacknowledged(tx, LISTED)?,
        pending_expired: q::pending_past_expiry(tx, now, LISTED)?,
        refunds_pending: q::refunds_pending(tx, LISTED)?,
        failed_deliveries: q::failed_deliveries(tx)?,
        disabled_endpoints: q::disabled_endpoints(tx)?,
    };
    let mut rejected: Vec<(String, i64)> = overview.total().rejected.into_iter().collect();
    rejected.sort_by_key(|(code, n)| (code != "amount_mismatch", -n));
    overview.rejected = rejected;
    Ok(overview)
}

/// The days of `o` that have settled at `now`.
pub fn settled_days(o: &Overview, now: DateTime<Utc>, tz: Tz) -> BTreeMap<NaiveDate, Day> {
    o.days
        .iter()
        .filter(|d| day_start(d.date + Duration::days(1), tz) + SETTLE_AFTER <= now)
        .map(|d| (d.date, d.clone()))
        .collect()
}

/// The last figures computed, shown while they are fresh, and the settled days'.
#[derive(Default)]
pub struct OverviewCache(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    last: Option<Overview>,
    settled: BTreeMap<NaiveDate, Day>,
    settled_at: Option<DateTime<Utc>>,
}

impl OverviewCache {
    /// Forgets the figures (after an action that changes them); settled days stay.
    pub fn clear(&self) {
        if let Ok(mut kept) = self.0.lock() {
            kept.last = None;
        }
    }
}

/// The figures, from the cache while they are fresh; otherwise computed again, reading
/// only the days that have not settled.
pub async fn overview(core: &Core, cache: &OverviewCache) -> Result<Overview, DbError> {
    let now = core.now();
    let mut settled = BTreeMap::new();
    if let Ok(kept) = cache.0.lock() {
        if let Some(o) = kept.last.as_ref() {
            if now >= o.computed_at && now - o.computed_at < FRESH_FOR {
                return Ok(o.clone());
            }
        }
        if kept.settled_at.is_some_and(|t| now >= t && now - t < SETTLED_FOR) {
            settled = kept.settled.clone();
        }
    }
    let tz = core.settings.merchant.timezone;
    let reuse = !settled.is_empty();
    let fresh = core
        .db
        .read(move |tx| compute_with(tx, now, tz, &settled))
        .await?;
    if let Ok(mut kept) = cache.0.lock() {
        if !reuse {
            kept.settled = settled_days(&fresh, now, tz);
            kept.settled_at = Some(now);
        }
        kept.last = Some(fresh.clone());
    }
    Ok(fresh)
}
