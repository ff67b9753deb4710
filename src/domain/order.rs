//! Orders: the read model, the validated input for a new order, and the JSON shape
//! that the API and webhooks share.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{OrderId, OutTradeNo};
use super::money::{Amount, Currency, MAX_ORDER_AMOUNT, MIN_ORDER_AMOUNT};
use super::status::OrderStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Alipay,
    Wechat,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 2] = [ProviderKind::Alipay, ProviderKind::Wechat];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Alipay => "alipay",
            ProviderKind::Wechat => "wechat",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown provider {s:?}; one of alipay, wechat"))
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: OrderId,
    pub out_trade_no: String,
    pub amount: Amount,
    pub subject: String,
    pub provider: ProviderKind,
    pub status: OrderStatus,
    pub qr_code: Option<String>,
    pub notify_url: Option<String>,
    pub return_url: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub provider_trade_no: Option<String>,
    pub refunded_amount: i64,
    pub late_payment: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    pub fn checkout_url(&self, public_url: &str) -> String {
        format!("{}/pay/{}", public_url.trim_end_matches('/'), self.id)
    }

    /// The order as the API returns it and webhooks carry it.
    pub fn view(&self, public_url: &str) -> OrderView {
        OrderView {
            id: self.id.to_string(),
            out_trade_no: self.out_trade_no.clone(),
            amount: self.amount.minor(),
            currency: self.amount.currency().code(),
            subject: self.subject.clone(),
            provider: self.provider,
            status: self.status,
            qr_code: self.qr_code.clone(),
            checkout_url: self.checkout_url(public_url),
            notify_url: self.notify_url.clone(),
            return_url: self.return_url.clone(),
            metadata: self.metadata.clone(),
            provider_trade_no: self.provider_trade_no.clone(),
            refunded_amount: self.refunded_amount,
            late_payment: self.late_payment,
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            paid_at: self.paid_at.map(rfc3339),
            closed_at: self.closed_at.map(rfc3339),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

/// RFC 3339 in UTC with millisecond precision and a `Z`, the wire format for times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `#[serde(serialize_with)]` for a time in the wire format.
pub fn serialize_rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// `#[serde(serialize_with)]` for an optional time in the wire format.
pub fn serialize_rfc3339_opt<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderView {
    pub id: String,
    pub out_trade_no: String,
    pub amount: i64,
    pub currency: &'static str,
    pub subject: String,
    pub provider: ProviderKind,
    pub status: OrderStatus,
    pub qr_code: Option<String>,
    pub checkout_url: String,
    pub notify_url: Option<String>,
    pub return_url: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub provider_trade_no: Option<String>,
    pub refunded_amount: i64,
    pub late_payment: bool,
    pub created_at: String,
    pub expires_at: String,
    pub paid_at: Option<String>,
    pub closed_at: Option<String>,
    pub updated_at: String,
}

/// The body of `POST /api/v1/orders`, as received.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    pub out_trade_no: String,
    pub amount: i64,
    #[serde(default)]
    pub currency: Option<String>,
    pub subject: String,
    pub provider: String,
    #[serde(default)]
    pub notify_url: Option<String>,
    #[serde(default)]
    pub return_url: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// A validated order, ready to be offered to a provider and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub id: OrderId,
    pub out_trade_no: OutTradeNo,
    pub amount: Amount,
    pub subject: String,
    pub provider: ProviderKind,
    pub notify_url: Option<String>,
    pub return_url: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// What validation needs to know about the running server.
pub struct OrderRules<'a> {
    pub default_currency: Currency,
    pub default_ttl: Duration,
    pub enabled_providers: &'a [ProviderKind],
    pub now: DateTime<Utc>,
}

pub const MIN_EXPIRES_IN: i64 = 60;
pub const MAX_EXPIRES_IN: i64 = 86_400;
pub const MAX_SUBJECT_CHARS: usize = 256;
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_METADATA_BYTES: usize = 4096;

impl NewOrder {
    pub fn validate(req: CreateOrderRequest, rules: &OrderRules<'_>) -> Result<NewOrder, FieldError> {
        let out_trade_no =
            OutTradeNo::parse(&req.out_trade_no).map_err(|m| FieldError::new("out_trade_no", m))?;
        let currency = match &req.currency {
            None => rules.default_currency,
            Some(code) => code
                .parse::<Currency>()
                .map_err(|e| FieldError::new("currency", e.to_string()))?,
        };
        if !(MIN_ORDER_AMOUNT..=MAX_ORDER_AMOUNT).contains(&req.amount) {
            return Err(FieldError::new(
                "amount",
                format!(
                    "must be an integer number of minor units from {MIN_ORDER_AMOUNT} to {MAX_ORDER_AMOUNT}, got {}",
                    req.amount
                ),
            ));
        }
        let amount =
            Amount::from_minor(req.amount, currency).map_err(|e| FieldError::new("amount", e.to_string()))?;
        let subject = validate_subject(&req.subject)?;
        let provider = validate_provider(&req.provider, rules.enabled_providers)?;
        let notify_url = validate_url("notify_url", req.notify_url.as_deref())?;
        let return_url = validate_url("return_url", req.return_url.as_deref())?;
        let ttl = match req.expires_in {
            None => rules.default_ttl,
            Some(secs) if (MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(&secs) => Duration::seconds(secs),
            Some(secs) => {
                return Err(FieldError::new(
                    "expires_in",
                    format!("must be {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN} seconds, got {secs}"),
                ))
            }
        };
        let metadata = validate_metadata(req.metadata)?;
        Ok(NewOrder {
            id: OrderId::generate(),
            out_trade_no,
            amount,
            subject,
            provider,
            notify_url,
            return_url,
            metadata,
            created_at: rules.now,
            expires_at: rules.now + ttl,
        })
    }
}

fn validate_subject(subject: &str) -> Result<String, FieldError> {
    let chars = subject.chars().count();
    if subject.trim().is_empty() || chars > MAX_SUBJECT_CHARS {
        return Err(FieldError::new(
            "subject",
            format!("must be 1 to {MAX_SUBJECT_CHARS} characters and not blank, got {chars}"),
        ));
    }
    if subject.chars().any(char::is_control) {
        return Err(FieldError::new(
            "subject",
            "must not contain control characters such as newlines",
        ));
    }
    Ok(subject.to_owned())
}

fn validate_provider(name: &str, enabled: &[ProviderKind]) -> Result<ProviderKind, FieldError> {
    let kind = name
        .parse::<ProviderKind>()
        .map_err(|m| FieldError::new("provider", m))?;
    if enabled.contains(&kind) {
        return Ok(kind);
    }
    let message = if enabled.is_empty() {
        format!(
            "provider {kind} is not enabled, and no payment provider is: configure [alipay] or [wechat] in kassa.toml (or the KASSA_ALIPAY_* / KASSA_WECHAT_* variables), or turn on the built-in sandbox with [sandbox] enabled = true"
        )
    } else {
        let list: Vec<&str> = enabled.iter().map(|p| p.as_str()).collect();
        format!(
            "provider {kind} is not enabled on this server; enabled: {}",
            list.join(", ")
        )
    };
    Err(FieldError::new("provider", message))
}

/// Absolute http(s) URL check shared by the API and configuration.
pub fn check_http_url(text: &str) -> Result<(), String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let parsed = url::Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL, got scheme {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    Ok(())
}

fn validate_url(field: &'static str, value: Option<&str>) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(text) => {
            check_http_url(text).map_err(|m| FieldError::new(field, m))?;
            Ok(Some(text.to_owned()))
        }
    }
}

fn validate_metadata(
    value: Option<serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, FieldError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(serde_json::Map::new()),
        Some(serde_json::Value::Object(map)) => {
            let size = serde_json::to_vec(&map).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(FieldError::new(
                    "metadata",
                    format!("must be at most {MAX_METADATA_BYTES} bytes as JSON, got {size}"),
                ));
            }
            Ok(map)
        }
        Some(_) => Err(FieldError::new("metadata", "must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(enabled: &[ProviderKind]) -> OrderRules<'_> {
        OrderRules {
            default_currency: Currency::Cny,
            default_ttl: Duration::minutes(15),
            enabled_providers: enabled,
            now: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn request() -> CreateOrderRequest {
        serde_json::from_value(json!({
            "out_trade_no": "shop-1", "amount": 1234, "subject": "Tea", "provider": "alipay"
        }))
        .unwrap()
    }

    #[test]
    fn a_valid_request_gets_defaults() {
        let order = NewOrder::validate(request(), &rules(&[ProviderKind::Alipay])).unwrap();
        assert_eq!(order.amount.minor(), 1234);
        assert_eq!(order.amount.currency(), Currency::Cny);
        assert_eq!(order.expires_at - order.created_at, Duration::minutes(15));
    }

    #[test]
    fn no_enabled_provider_names_what_can_be_enabled() {
        let err = NewOrder::validate(request(), &rules(&[])).unwrap_err();
        assert_eq!(err.field, "provider");
        assert!(err.message.contains("[alipay]") && err.message.contains("[wechat]"));
        let err = NewOrder::validate(request(), &rules(&[ProviderKind::Wechat])).unwrap_err();
        assert!(err.message.contains("enabled: wechat"), "{}", err.message);
    }

    #[test]
    fn url_check_accepts_only_http_and_https() {
        assert!(check_http_url("https://shop.example/cb?x=1").is_ok());
        assert!(check_http_url("http://127.0.0.1:9/").is_ok());
        for bad in ["ftp://x/", "javascript:alert(1)", "/relative", "", "http://"] {
            assert!(check_http_url(bad).is_err(), "{bad}");
        }
    }
}
