//! Money as integer minor units. Provider decimal strings ("12.34") are converted
//! exactly, digit by digit, and never pass through a float.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The smallest and largest amount an order may carry, in minor units. The upper bound
/// is Alipay's limit of 100,000,000.00 yuan.
pub const MIN_ORDER_AMOUNT: i64 = 1;
pub const MAX_ORDER_AMOUNT: i64 = 10_000_000_000;

/// ISO 4217 currencies kassa accepts, with the number of decimal places of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Currency {
    Cny,
    Hkd,
    Usd,
    Eur,
    Gbp,
    Jpy,
    Sgd,
    Aud,
    Cad,
    Krw,
}

impl Currency {
    pub const ALL: [Currency; 10] = [
        Currency::Cny,
        Currency::Hkd,
        Currency::Usd,
        Currency::Eur,
        Currency::Gbp,
        Currency::Jpy,
        Currency::Sgd,
        Currency::Aud,
        Currency::Cad,
        Currency::Krw,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
            Currency::Hkd => "HKD",
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
            Currency::Jpy => "JPY",
            Currency::Sgd => "SGD",
            Currency::Aud => "AUD",
            Currency::Cad => "CAD",
            Currency::Krw => "KRW",
        }
    }

    /// Decimal places of the minor unit (2 for fen, 0 for yen).
    pub fn exponent(self) -> u32 {
        match self {
            Currency::Jpy | Currency::Krw => 0,
            _ => 2,
        }
    }

    pub fn supported_codes() -> String {
        Currency::ALL
            .iter()
            .map(|c| c.code())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported currency {0:?}; supported: {list}", list = Currency::supported_codes())]
pub struct UnknownCurrency(pub String);

impl FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or_else(|| UnknownCurrency(s.to_owned()))
    }
}

impl TryFrom<String> for Currency {
    type Error = UnknownCurrency;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_owned()
    }
}

/// An amount of money: minor units plus the currency they are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    minor: i64,
    currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a plain decimal number like \"12.34\"")]
    NotDecimal(String),
    #[error("amount {value:?} has more than {exponent} decimal places for {currency}")]
    TooPrecise {
        value: String,
        exponent: u32,
        currency: Currency,
    },
    #[error("amount {0:?} is too large")]
    TooLarge(String),
    #[error("amount must not be negative")]
    Negative,
}

impl Amount {
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Self, AmountError> {
        if minor < 0 {
            return Err(AmountError::Negative);
        }
        Ok(Amount { minor, currency })
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// Parses a provider's decimal string ("12.34", "0.1", "100") exactly. Signs,
    /// exponents, spaces, leading zeros and more decimals than the currency has are
    /// refused rather than rounded: a payment amount is either exact or wrong.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Self, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if text.starts_with('-') {
            return Err(AmountError::Negative);
        }
        let not_decimal = || AmountError::NotDecimal(text.to_owned());
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || (whole.len() > 1 && whole.starts_with('0')) {
            return Err(not_decimal());
        }
        let exponent = currency.exponent();
        let fraction = match fraction {
            None => "",
            Some(f) if all_digits(f) => f,
            Some(_) => return Err(not_decimal()),
        };
        if fraction.len() > exponent as usize {
            return Err(AmountError::TooPrecise {
                value: text.to_owned(),
                exponent,
                currency,
            });
        }
        let too_large = || AmountError::TooLarge(text.to_owned());
        let mut minor: i64 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(digit - b'0')))
                .ok_or_else(too_large)?;
        }
        let missing_places = exponent - fraction.len() as u32;
        minor = minor
            .checked_mul(10_i64.pow(missing_places))
            .ok_or_else(too_large)?;
        Ok(Amount { minor, currency })
    }

    /// The amount as a decimal string with exactly the currency's number of places.
    pub fn to_decimal_string(self) -> String {
        let exponent = self.currency.exponent();
        if exponent == 0 {
            return self.minor.to_string();
        }
        let scale = 10_i64.pow(exponent);
        format!(
            "{}.{:0width$}",
            self.minor / scale,
            self.minor % scale,
            width = exponent as usize
        )
    }

    /// Decimal string with a currency symbol, for pages.
    pub fn display_with_symbol(self) -> String {
        let symbol = match self.currency {
            Currency::Cny | Currency::Jpy => "¥",
            Currency::Usd | Currency::Sgd | Currency::Aud | Currency::Cad => "$",
            Currency::Hkd => "HK$",
            Currency::Eur => "€",
            Currency::Gbp => "£",
            Currency::Krw => "₩",
        };
        format!("{symbol}{}", self.to_decimal_string())
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_refuses_decimal_strings_exactly() {
        let cases: &[(&str, Currency, Option<i64>)] = &[
            ("12.34", Currency::Cny, Some(1234)),
            ("0.1", Currency::Cny, Some(10)),
            ("0.01", Currency::Cny, Some(1)),
            ("0", Currency::Cny, Some(0)),
            ("100", Currency::Cny, Some(10000)),
            ("100000000.00", Currency::Cny, Some(10_000_000_000)),
            ("92233720368547758.07", Currency::Cny, Some(i64::MAX)),
            ("92233720368547758.08", Currency::Cny, None),
            ("99999999999999999999", Currency::Cny, None),
            ("12.345", Currency::Cny, None),
            ("1500", Currency::Jpy, Some(1500)),
            ("1500.0", Currency::Jpy, None),
            ("-1.00", Currency::Cny, None),
            ("+1.00", Currency::Cny, None),
            ("1e3", Currency::Cny, None),
            (" 1", Currency::Cny, None),
            ("1 ", Currency::Cny, None),
            ("", Currency::Cny, None),
            (".5", Currency::Cny, None),
            ("5.", Currency::Cny, None),
            ("01.00", Currency::Cny, None),
            ("1,00", Currency::Cny, None),
            ("1.2.3", Currency::Cny, None),
            ("١٢", Currency::Cny, None),
            ("NaN", Currency::Cny, None),
        ];
        for (text, currency, expected) in cases {
            let got = Amount::parse_decimal(text, *currency).ok().map(Amount::minor);
            assert_eq!(got, *expected, "parsing {text:?} as {currency}");
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(
            Amount::parse_decimal("-1", Currency::Cny),
            Err(AmountError::Negative)
        );
        assert!(matches!(
            Amount::parse_decimal("12.345", Currency::Cny),
            Err(AmountError::TooPrecise { exponent: 2, .. })
        ));
        assert!(matches!(
            Amount::parse_decimal("99999999999999999999", Currency::Cny),
            Err(AmountError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_with_the_currency_exponent() {
        let cases: &[(i64, Currency, &str)] = &[
            (1234, Currency::Cny, "12.34"),
            (5, Currency::Cny, "0.05"),
            (10, Currency::Cny, "0.10"),
            (0, Currency::Usd, "0.00"),
            (10_000_000_000, Currency::Cny, "100000000.00"),
            (1500, Currency::Jpy, "1500"),
        ];
        for (minor, currency, text) in cases {
            let amount = Amount::from_minor(*minor, *currency).unwrap();
            assert_eq!(amount.to_decimal_string(), *text);
        }
        assert!(Amount::from_minor(-1, Currency::Cny).is_err());
    }

    #[test]
    fn currency_codes_round_trip_and_unknown_ones_are_named() {
        for c in Currency::ALL {
            assert_eq!(c.code().parse::<Currency>().unwrap(), c);
        }
        let err = "cny".parse::<Currency>().unwrap_err();
        assert!(err.to_string().contains("\"cny\""), "{err}");
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(Currency::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn decimal_string_round_trips(minor in 0i64..=i64::MAX, currency in any_currency()) {
            let amount = Amount::from_minor(minor, currency).unwrap();
            let text = amount.to_decimal_string();
            prop_assert_eq!(Amount::parse_decimal(&text, currency), Ok(amount));
        }

        #[test]
        fn shorter_fractions_parse_to_the_same_value(whole in 0i64..1_000_000, tenth in 0i64..10) {
            let short = format!("{whole}.{tenth}");
            let long = format!("{whole}.{tenth}0");
            prop_assert_eq!(
                Amount::parse_decimal(&short, Currency::Cny),
                Amount::parse_decimal(&long, Currency::Cny)
            );
        }
    }
}
