//! The simulated Alipay: its OpenAPI gateway and its notifier.

pub mod gateway;
pub mod notifier;

use crate::domain::{Amount, Currency};

/// Minor units as Alipay writes yuan ("12.34").
fn yuan(minor: i64) -> String {
    Amount::from_minor(minor, Currency::Cny)
        .map(Amount::to_decimal_string)
        .unwrap_or_default()
}
