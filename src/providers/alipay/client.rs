//! Alipay OpenAPI over HTTP: signs requests with the app private key and accepts a
//! response only when Alipay's signature over its exact bytes checks out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::notify::Expectations;
use super::sign::{beijing, raw_object, request_content};
use crate::domain::ProviderKind;
use crate::providers::keys::{SigningKey, VerifyingKey};
use crate::providers::{transport_failure, ProviderError};

/// How long one gateway call may take before its outcome counts as unknown.
pub const TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The parameters the official SDKs send in the query string; everything else
/// (`biz_content`) goes in the form body.
const COMMON: &[&str] = &[
    "app_id",
    "method",
    "format",
    "charset",
    "sign_type",
    "timestamp",
    "version",
    "notify_url",
    "sign",
];

/// One Alipay account as kassa uses it: the only copy of its app id, seller and
/// Alipay's public key, which check both gateway answers and notifications.
#[derive(Clone)]
pub struct AlipayClient {
    app_id: String,
    /// When set, notifications must name this seller.
    seller_id: Option<String>,
    gateway: String,
    app_key: Arc<SigningKey>,
    alipay_key: VerifyingKey,
    http: reqwest::Client,
}

/// A verified business answer: `code` 10000 and the response object's fields.
pub type Answer = Map<String, Value>;

impl AlipayClient {
    /// `timeout` bounds a whole call: `TIMEOUT` in production; tests pass less so a
    /// gateway that never answers costs them a second, not fifteen.
    pub fn new(
        app_id: String,
        gateway: String,
        app_key: SigningKey,
        alipay_key: VerifyingKey,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .user_agent(concat!("kassa/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(AlipayClient {
            app_id,
            seller_id: None,
            gateway,
            app_key: Arc::new(app_key),
            alipay_key,
            http,
        })
    }

    /// Notifications must then carry this `seller_id` too.
    pub fn with_seller_id(mut self, seller_id: Option<String>) -> Self {
        self.seller_id = seller_id;
        self
    }

    /// What a notification for this account must show.
    pub fn notice_expectations(&self) -> Expectations<'_> {
        Expectations {
            key: &self.alipay_key,
            app_id: &self.app_id,
            seller_id: self.seller_id.as_deref(),
        }
    }

    /// The signed parameters of one call at `now` (the application clock), as sent.
    pub fn signed_params(
        &self,
        method: &str,
        biz_content: &Value,
        notify_url: Option<&str>,
        now: DateTime<Utc>,
    ) -> BTreeMap<String, String> {
        let mut params = BTreeMap::new();
        params.insert("app_id".to_owned(), self.app_id.clone());
        params.insert("method".to_owned(), method.to_owned());
        params.insert("format".to_owned(), "JSON".to_owned());
        params.insert("charset".to_owned(), "utf-8".to_owned());
        params.insert("sign_type".to_owned(), "RSA2".to_owned());
        params.insert("timestamp".to_owned(), beijing(now));
        params.insert("version".to_owned(), "1.0".to_owned());
        if let Some(url) = notify_url {
            params.insert("notify_url".to_owned(), url.to_owned());
        }
        params.insert("biz_content".to_owned(), biz_content.to_string());
        let sign = self.app_key.sign_base64(request_content(&params).as_bytes());
        params.insert("sign".to_owned(), sign);
        params
    }

    /// Calls `method`. `Ok` only for a verified `code` 10000; a definite business
    /// failure is `Rejected`; anything whose outcome cannot be known is `Unknown`.
    pub async fn call(
        &self,
        method: &str,
        biz_content: &Value,
        notify_url: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Answer, ProviderError> {
        let params = self.signed_params(method, biz_content, notify_url, now);
        let query: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| COMMON.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let form: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| !COMMON.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let form_body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let unknown = |reason: String| ProviderError::Unknown {
            provider: ProviderKind::Alipay,
            reason,
        };
        let response = self
            .http
            .post(&self.gateway)
            .query(&query)
            .header("content-type", "application/x-www-form-urlencoded;charset=utf-8")
            .body(form_body)
            .send()
            .await
            .map_err(|e| unknown(format!("{method}: {}", transport_failure(e))))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| unknown(format!("{method}: reading response: {}", transport_failure(e))))?;
        if !status.is_success() {
            return Err(unknown(format!("{method}: HTTP {status}")));
        }
        self.verify_response(method, &body)
    }

    /// Checks the signature over the raw response object and classifies the answer.
    pub fn verify_response(&self, method: &str, body: &str) -> Result<Answer, ProviderError> {
        let unknown = |reason: String| ProviderError::Unknown {
            provider: ProviderKind::Alipay,
            reason,
        };
        let envelope: Value = serde_json::from_str(body)
            .map_err(|e| unknown(format!("{method}: response is not JSON: {e}")))?;
        let key = format!("{}_response", method.replace('.', "_"));
        let Some(raw) = raw_object(body, &key) else {
            if let Some(error) = envelope.get("error_response").and_then(Value::as_object) {
                return Err(rejected(error));
            }
            return Err(unknown(format!("{method}: response has no {key}")));
        };
        let answer: Answer = serde_json::from_str(raw).map_err(|e| unknown(format!("{method}: {e}")))?;
        let sign = envelope.get("sign").and_then(Value::as_str).unwrap_or_default();
        if sign.is_empty() {
            // Gateway-level refusals (a wrong app id, a bad request signature) may come
            // unsigned; a refusal changes nothing, so it is believed. A success never is.
            let code = answer.get("code").and_then(Value::as_str).unwrap_or_default();
            if code.starts_with("400") {
                return Err(rejected(&answer));
            }
            return Err(unknown(format!("{method}: response is not signed")));
        }
        if !self.alipay_key.verify_base64(raw.as_bytes(), sign) {
            return Err(unknown(format!("{method}: response signature is invalid")));
        }
        let code = answer.get("code").and_then(Value::as_str).unwrap_or_default();
        let sub_code = answer.get("sub_code").and_then(Value::as_str).unwrap_or_default();
        match code {
            "10000" => Ok(answer),
            "20000" => Err(unknown(format!("{method}: {code} {sub_code}"))),
            _ if sub_code.ends_with("SYSTEM_ERROR") => Err(unknown(format!("{method}: {code} {sub_code}"))),
            _ => Err(rejected(&answer)),
        }
    }
}

fn rejected(answer: &Answer) -> ProviderError {
    let text = |k: &str| {
        answer
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let code = if text("sub_code").is_empty() {
        text("code")
    } else {
        text("sub_code")
    };
    let message = if text("sub_msg").is_empty() {
        text("msg")
    } else {
        text("sub_msg")
    };
    ProviderError::Rejected {
        provider: ProviderKind::Alipay,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/keys/");

    fn key(name: &str) -> String {
        std::fs::read_to_string(format!("{KEYS}{name}")).unwrap()
    }

    fn client() -> AlipayClient {
        AlipayClient::new(
            "2021000000000001".into(),
            // Never called: these tests check signing and answers only.
            "http://alipay.invalid/gateway.do".into(),
            SigningKey::from_pem(&key("alipay_app_private_pkcs8.pem")).unwrap(),
            VerifyingKey::from_pem(&key("alipay_platform_public.pem")).unwrap(),
            TIMEOUT,
        )
        .unwrap()
    }

    fn signed(inner: &str) -> String {
        let platform = SigningKey::from_pem(&key("alipay_platform_private_pkcs1.pem")).unwrap();
        format!(
            "{{\"alipay_trade_query_response\":{inner},\"sign\":\"{}\"}}",
            platform.sign_base64(inner.as_bytes())
        )
    }

    #[test]
    fn answers_are_classified_success_refusal_or_unknown() {
        let c = client();
        let method = "alipay.trade.query";
        let ok = c.verify_response(
            method,
            &signed(r#"{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS"}"#),
        );
        assert_eq!(ok.unwrap()["trade_status"], "TRADE_SUCCESS");
        let refused = c.verify_response(
            method,
            &signed(r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}"#),
        );
        assert!(
            matches!(refused, Err(ProviderError::Rejected { ref code, .. }) if code == "ACQ.TRADE_NOT_EXIST")
        );
        for unknown in [
            signed(r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error"}"#),
            signed(r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR"}"#),
            signed(r#"{"code":"40004","msg":"Business Failed","sub_code":"aop.ACQ.SYSTEM_ERROR"}"#),
            // A success without a signature, or one its signature does not cover, is never believed.
            r#"{"alipay_trade_query_response":{"code":"10000","msg":"Success"}}"#.to_owned(),
            signed(r#"{"code":"10000"}"#).replace(
                r#""code":"10000""#,
                r#""code":"10000","trade_status":"TRADE_SUCCESS""#,
            ),
            "<html>502 Bad Gateway</html>".to_owned(),
        ] {
            assert!(
                matches!(
                    c.verify_response(method, &unknown),
                    Err(ProviderError::Unknown { .. })
                ),
                "{unknown}"
            );
        }
        let unsigned_refusal = r#"{"alipay_trade_query_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature"}}"#;
        assert!(
            matches!(c.verify_response(method, unsigned_refusal), Err(ProviderError::Rejected { ref code, .. }) if code == "isv.invalid-signature")
        );
        let gateway_error = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}}"#;
        assert!(
            matches!(c.verify_response(method, gateway_error), Err(ProviderError::Rejected { ref code, .. }) if code == "isv.invalid-app-id")
        );
    }

    #[test]
    fn requests_sign_every_parameter_and_keep_sign_type() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T03:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let params = client().signed_params(
            "alipay.trade.query",
            &serde_json::json!({"out_trade_no": "o1"}),
            None,
            now,
        );
        assert_eq!(
            params["timestamp"], "2026-11-24 11:30:00",
            "the given clock, in Beijing time"
        );
        let public = VerifyingKey::from_pem(&key("alipay_app_public.pem")).unwrap();
        assert!(public.verify_base64(request_content(&params).as_bytes(), &params["sign"]));
        assert!(request_content(&params).contains("sign_type=RSA2"));
        assert!(
            !params.contains_key("notify_url"),
            "empty parameters are not sent"
        );
    }
}
