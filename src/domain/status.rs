//! The order state machine of spec section 3, as pure data. The database layer turns
//! `Transition::allowed_from` into the guarded `UPDATE … WHERE status IN (…)`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Closed,
    PartiallyRefunded,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Closed,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Closed => "closed",
            OrderStatus::PartiallyRefunded => "partially_refunded",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// Whether a refund may be asked for: the statuses a refund transition leaves from.
    pub fn is_refundable(self) -> bool {
        Transition::Refund.allowed_from().contains(&self)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?}; one of pending, paid, closed, partially_refunded, refunded")]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Every allowed (from, to) pair: the table of spec section 3.
pub const TRANSITION_TABLE: &[(OrderStatus, OrderStatus)] = &[
    (OrderStatus::Pending, OrderStatus::Paid),
    (OrderStatus::Pending, OrderStatus::Closed),
    // Money was taken after a close: record it, flagged late, never lose it.
    (OrderStatus::Closed, OrderStatus::Paid),
    (OrderStatus::Paid, OrderStatus::PartiallyRefunded),
    (OrderStatus::Paid, OrderStatus::Refunded),
    (OrderStatus::PartiallyRefunded, OrderStatus::PartiallyRefunded),
    (OrderStatus::PartiallyRefunded, OrderStatus::Refunded),
];

pub fn is_allowed(from: OrderStatus, to: OrderStatus) -> bool {
    TRANSITION_TABLE.contains(&(from, to))
}

/// What happened to an order, independent of who made it happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// A verified payment; from `closed` it is a late payment.
    Pay,
    Close,
    /// A refund that succeeded at the provider; the target depends on the running sum.
    Refund,
}

impl Transition {
    pub const ALL: [Transition; 3] = [Transition::Pay, Transition::Close, Transition::Refund];

    pub fn allowed_from(self) -> &'static [OrderStatus] {
        match self {
            Transition::Pay => &[OrderStatus::Pending, OrderStatus::Closed],
            Transition::Close => &[OrderStatus::Pending],
            Transition::Refund => &[OrderStatus::Paid, OrderStatus::PartiallyRefunded],
        }
    }

    /// Statuses this transition can lead to.
    pub fn targets(self) -> &'static [OrderStatus] {
        match self {
            Transition::Pay => &[OrderStatus::Paid],
            Transition::Close => &[OrderStatus::Closed],
            Transition::Refund => &[OrderStatus::PartiallyRefunded, OrderStatus::Refunded],
        }
    }

    /// True when an order in `status` already shows the effect of this transition, so a
    /// repeat (a resent notification, a second close) is a duplicate rather than refused.
    /// A refund is never a duplicate by status: refunds are deduplicated by their own id.
    pub fn already_applied(self, status: OrderStatus) -> bool {
        match self {
            Transition::Pay => matches!(
                status,
                OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
            ),
            Transition::Close => status == OrderStatus::Closed,
            Transition::Refund => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Pay => "pay",
            Transition::Close => "close",
            Transition::Refund => "refund",
        }
    }
}

impl FromStr for Transition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transition::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown transition {s:?}"))
    }
}

/// Who or what caused a transition; stored in the order's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionSource {
    Notification,
    ProviderQuery,
    Api,
    Admin,
    Expiry,
}

impl TransitionSource {
    pub const ALL: [TransitionSource; 5] = [
        TransitionSource::Notification,
        TransitionSource::ProviderQuery,
        TransitionSource::Api,
        TransitionSource::Admin,
        TransitionSource::Expiry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransitionSource::Notification => "notification",
            TransitionSource::ProviderQuery => "provider_query",
            TransitionSource::Api => "api",
            TransitionSource::Admin => "admin",
            TransitionSource::Expiry => "expiry",
        }
    }
}

impl FromStr for TransitionSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransitionSource::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown transition source {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_from_to_pair_is_decided_by_the_table() {
        let expected_allowed = [
            ("pending", "paid"),
            ("pending", "closed"),
            ("closed", "paid"),
            ("paid", "partially_refunded"),
            ("paid", "refunded"),
            ("partially_refunded", "partially_refunded"),
            ("partially_refunded", "refunded"),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let want = expected_allowed.contains(&(from.as_str(), to.as_str()));
                assert_eq!(is_allowed(from, to), want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn transitions_cover_exactly_the_table() {
        let mut produced = Vec::new();
        for t in [Transition::Pay, Transition::Close, Transition::Refund] {
            for from in t.allowed_from() {
                for to in t.targets() {
                    assert!(is_allowed(*from, *to), "{t:?}: {from} -> {to} not in table");
                    produced.push((*from, *to));
                }
            }
        }
        for pair in TRANSITION_TABLE {
            assert!(produced.contains(pair), "{pair:?} reachable by no transition");
        }
    }

    #[test]
    fn every_transition_on_every_status_is_applied_a_duplicate_or_refused_as_the_spec_says() {
        // Written out from spec section 3, independently of `allowed_from`,
        // `already_applied` and `targets`: all 3 x 5 pairs, none left to a default.
        let expected: [(&str, &str, &str, &[&str]); 15] = [
            ("pay", "pending", "apply", &["paid"]),
            ("pay", "paid", "duplicate", &[]),
            ("pay", "closed", "apply", &["paid"]),
            ("pay", "partially_refunded", "duplicate", &[]),
            ("pay", "refunded", "duplicate", &[]),
            ("close", "pending", "apply", &["closed"]),
            ("close", "paid", "refuse", &[]),
            ("close", "closed", "duplicate", &[]),
            ("close", "partially_refunded", "refuse", &[]),
            ("close", "refunded", "refuse", &[]),
            ("refund", "pending", "refuse", &[]),
            ("refund", "paid", "apply", &["partially_refunded", "refunded"]),
            ("refund", "closed", "refuse", &[]),
            (
                "refund",
                "partially_refunded",
                "apply",
                &["partially_refunded", "refunded"],
            ),
            ("refund", "refunded", "refuse", &[]),
        ];
        let mut seen = Vec::new();
        for t in [Transition::Pay, Transition::Close, Transition::Refund] {
            for status in OrderStatus::ALL {
                let (_, _, want, to) = expected
                    .iter()
                    .find(|(tr, st, _, _)| *tr == t.as_str() && *st == status.as_str())
                    .unwrap_or_else(|| panic!("{t:?} on {status} missing from the table"));
                let applies = t.allowed_from().contains(&status);
                let duplicate = t.already_applied(status);
                let got = match (applies, duplicate) {
                    (true, false) => "apply",
                    (false, true) => "duplicate",
                    (false, false) => "refuse",
                    (true, true) => panic!("{t:?} on {status} is both allowed and a duplicate"),
                };
                assert_eq!(got, *want, "{t:?} on {status}");
                let targets: Vec<&str> = if applies {
                    t.targets().iter().map(|s| s.as_str()).collect()
                } else {
                    Vec::new()
                };
                assert_eq!(targets, *to, "{t:?} on {status}: targets");
                for target in t.targets() {
                    assert_eq!(
                        is_allowed(status, *target),
                        to.contains(&target.as_str()),
                        "{t:?}: {status} -> {target}"
                    );
                }
                seen.push((t, status));
            }
        }
        assert_eq!(seen.len(), expected.len(), "every pair checked exactly once");
    }

    #[test]
    fn only_paid_and_partially_refunded_orders_are_refundable() {
        let refundable: Vec<&str> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.is_refundable())
            .map(OrderStatus::as_str)
            .collect();
        assert_eq!(refundable, ["paid", "partially_refunded"]);
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("PAID".parse::<OrderStatus>().is_err());
    }
}
