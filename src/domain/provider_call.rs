//! The calls kassa makes to a payment provider about an order, as its timeline shows
//! them.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderCall {
    /// Creating the payment (Alipay `precreate`, WeChat Native order).
    Precreate,
    Query,
    Close,
    Refund,
    RefundQuery,
}

/// How a provider call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// A definite answer (whatever it said).
    Ok,
    /// A definite refusal.
    Rejected,
    /// Timeout, connection error, 5xx or "system error": the outcome is not known.
    Unknown,
}

macro_rules! texts {
    ($ty:ty, $err:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| format!(concat!("unknown ", $err, " {:?}"), s))
            }
        }
    };
}

texts!(ProviderCall, "provider call", [
    Precreate => "precreate",
    Query => "query",
    Close => "close",
    Refund => "refund",
    RefundQuery => "refund_query",
]);

texts!(CallOutcome, "call outcome", [
    Ok => "ok",
    Rejected => "rejected",
    Unknown => "unknown",
]);
