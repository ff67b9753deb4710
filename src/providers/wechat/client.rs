//! WeChat Pay API v3 over HTTP: signs each request with the merchant API key and
//! believes a success only when the platform's signature over the exact response bytes
//! verifies with the key its `Wechatpay-Serial` names.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::platform_keys::SelectedKey;
use super::sign::{new_nonce, MerchantSigner};
use super::wire::{Expectations, PlatformHeaders, MAX_SKEW_SECONDS};
use super::{ApiV3Key, PlatformKeys};
use crate::domain::ProviderKind;
use crate::providers::{transport_failure, ProviderError};

/// How long one API call may take before its outcome counts as unknown.
pub const TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One WeChat Pay merchant as kassa uses it.
#[derive(Clone)]
pub struct WechatClient {
    mchid: String,
    appid: String,
    signer: Arc<MerchantSigner>,
    platform: Arc<PlatformKeys>,
    apiv3: ApiV3Key,
    /// Without a trailing slash; may carry a path (the sandbox's `/sandbox/wechat`).
    api_base: String,
    /// kassa's `/notify/wechat`, given on orders and refunds.
    notify_url: String,
    http: reqwest::Client,
}

/// A verified answer: its HTTP status and body (empty for a 204).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Result<Value, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| unknown(format!("answer is not JSON: {e}")))
    }
}

pub(crate) fn unknown(reason: String) -> ProviderError {
    ProviderError::Unknown {
        provider: ProviderKind::Wechat,
        reason,
    }
}

impl WechatClient {
    /// `timeout` bounds a whole call: `TIMEOUT` in production, less in tests.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mchid: String,
        appid: String,
        signer: MerchantSigner,
        platform: PlatformKeys,
        apiv3: ApiV3Key,
        api_base: String,
        notify_url: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .user_agent(concat!("kassa/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(WechatClient {
            mchid,
            appid,
            signer: Arc::new(signer),
            platform: Arc::new(platform),
            apiv3,
            api_base: api_base.trim_end_matches('/').to_owned(),
            notify_url,
            http,
        })
    }

    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    pub fn appid(&self) -> &str {
        &self.appid
    }

    pub fn notify_url(&self) -> &str {
        &self.notify_url
    }

    pub fn platform_keys(&self) -> &PlatformKeys {
        &self.platform
    }

    /// What a notification for this merchant must show.
    pub fn notice_expectations(&self) -> Expectations<'_> {
        Expectations {
            keys: &self.platform,
            apiv3: &self.apiv3,
            mchid: &self.mchid,
            appid: &self.appid,
        }
    }

    /// The path the request line carries: the base's own path, then the API path. The
    /// platform verifies the signature over exactly this.
    fn request_path(&self, api_path: &str) -> String {
        let base_path = url::Url::parse(&self.api_base)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        format!("{base_path}{api_path}")
    }

    /// Calls the API. `Ok` only for a 2xx whose signature verifies; a signed 4xx with
    /// WeChat's `{code, message}` is `Rejected`; anything whose outcome cannot be known (5xx,
    /// `SYSTEM_ERROR`, a timeout, an unsigned or unverifiable answer) is `Unknown`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        api_path: &str,
        body: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<Answer, ProviderError> {
        let what = format!("{method} {api_path}");
        let body = body.map(Value::to_string).unwrap_or_default();
        let nonce = new_nonce().map_err(|e| unknown(format!("{what}: {e}")))?;
        let authorization = self.signer.authorization(
            method.as_str(),
            &self.request_path(api_path),
            now.timestamp(),
            &nonce,
            body.as_bytes(),
        );
        let mut request = self
            .http
            .request(method.clone(), format!("{}{api_path}", self.api_base))
            .header("authorization", authorization)
            .header("accept", "application/json");
        if let Some(public) = self.platform.public_key() {
            request = request.header("wechatpay-serial", public.id());
        }
        if method != reqwest::Method::GET {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unknown(format!("{what}: {}", transport_failure(e))))?;
        let status = response.status().as_u16();
        let headers = PlatformHeaders::from_lookup(|name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unknown(format!("{what}: reading response: {}", transport_failure(e))))?;
        self.verify_answer(&what, status, &headers, &bytes, now)
    }

    /// Classifies an answer as received; see `call`.
    pub fn verify_answer(
        &self,
        what: &str,
        status: u16,
        headers: &PlatformHeaders,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Answer, ProviderError> {
        // WeChat signs every answer it gives, refusals included; anything else may come
        // from a proxy or an attacker, so its outcome is unknown whatever it says.
        self.check_signature(headers, body, now)
            .map_err(|reason| unknown(format!("{what}: HTTP {status}: {reason}")))?;
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                body: body.to_vec(),
            });
        }
        if (400..500).contains(&status) {
            let error: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let code = error.get("code").and_then(Value::as_str).unwrap_or_default();
            let message = error.get("message").and_then(Value::as_str).unwrap_or_default();
            if code.is_empty() {
                return Err(unknown(format!("{what}: HTTP {status} without an error code")));
            }
            if code == "SYSTEM_ERROR" || code == "FREQUENCY_LIMITED" {
                return Err(unknown(format!("{what}: HTTP {status} {code}")));
            }
            return Err(ProviderError::Rejected {
                provider: ProviderKind::Wechat,
                code: code.to_owned(),
                message: message.to_owned(),
            });
        }
        Err(unknown(format!("{what}: HTTP {status}")))
    }

    fn check_signature(
        &self,
        headers: &PlatformHeaders,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let (Some(serial), Some(signature), Some(timestamp), Some(nonce)) = (
            headers.serial.as_deref(),
            headers.signature.as_deref(),
            headers.timestamp.as_deref(),
            headers.nonce.as_deref(),
        ) else {
            return Err("the answer is not signed".into());
        };
        let at: i64 = timestamp
            .parse()
            .map_err(|_| format!("Wechatpay-Timestamp {timestamp:?} is not a number"))?;
        if now.timestamp().abs_diff(at) > MAX_SKEW_SECONDS.unsigned_abs() {
            return Err(format!(
                "Wechatpay-Timestamp {timestamp} is more than 5 minutes off"
            ));
        }
        match self.platform.verify(serial, timestamp, nonce, body, signature) {
            Ok(SelectedKey::Certificate(cert)) if cert.is_expired(now) => {
                if cert.expired_use_worth_warning(now) {
                    tracing::warn!(
                        serial,
                        "WeChat Pay answer signed with an expired platform certificate"
                    );
                }
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::providers::keys::{SigningKey, VerifyingKey};
    use crate::providers::wechat::wire::{beijing_rfc3339, parse_rfc3339};
    use crate::providers::wechat::PlatformPublicKey;

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/keys/");
    const ID: &str = "PUB_KEY_ID_0112345678202611240000000000000001";

    fn client() -> WechatClient {
        let key = |n: &str| std::fs::read_to_string(format!("{KEYS}{n}")).unwrap();
        let public = PlatformPublicKey::new(
            ID,
            VerifyingKey::from_pem(&key("wechat_platform_public.pem")).unwrap(),
        )
        .unwrap();
        WechatClient::new(
            "1230000109".into(),
            "wxd678efh567hg6787".into(),
            MerchantSigner::new(
                "1230000109",
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                SigningKey::from_pem(&key("wechat_merchant_private_pkcs8.pem")).unwrap(),
            ),
            PlatformKeys::new(Some(public), Vec::new()).unwrap(),
            ApiV3Key::new(b"kassaTestApiV3Key0123456789abcdE").unwrap(),
            // Never called: these tests check answers only.
            "http://wechat.invalid/base/".into(),
            "http://kassa.test/notify/wechat".into(),
            TIMEOUT,
        )
        .unwrap()
    }

    fn signed(at: i64, body: &str) -> PlatformHeaders {
        let key = std::fs::read_to_string(format!("{KEYS}wechat_platform_private_pkcs8.pem")).unwrap();
        let signer = SigningKey::from_pem(&key).unwrap();
        PlatformHeaders {
            serial: Some(ID.into()),
            signature: Some(signer.sign_base64(format!("{at}\nN0NCE\n{body}\n").as_bytes())),
            timestamp: Some(at.to_string()),
            nonce: Some("N0NCE".into()),
            signature_type: None,
        }
    }

    #[test]
    fn answers_are_believed_only_when_signed_fresh_and_refusals_keep_their_code() {
        let c = client();
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 0).unwrap();
        let t = now.timestamp();
        let body = r#"{"trade_state":"SUCCESS"}"#;
        let ok = c.verify_answer("GET q", 200, &signed(t, body), body.as_bytes(), now);
        assert_eq!(ok.unwrap().body, body.as_bytes());
        assert!(
            c.verify_answer("POST close", 204, &signed(t, ""), b"", now)
                .is_ok(),
            "a signed 204"
        );
        let unknown = |status, headers: &PlatformHeaders, body: &str| {
            matches!(
                c.verify_answer("x", status, headers, body.as_bytes(), now),
                Err(ProviderError::Unknown { .. })
            )
        };
        assert!(unknown(200, &PlatformHeaders::default(), body), "unsigned");
        assert!(
            unknown(200, &signed(t, body), r#"{"trade_state":"SUCCESS","x":1}"#),
            "changed"
        );
        assert!(unknown(200, &signed(t - 301, body), body), "stale");
        assert!(unknown(204, &PlatformHeaders::default(), ""), "an unsigned 204");
        let system = r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#;
        assert!(unknown(500, &signed(t, system), system));
        assert!(
            unknown(400, &signed(t, system), system),
            "SYSTEM_ERROR whatever the status"
        );
        assert!(unknown(
            502,
            &PlatformHeaders::default(),
            "<html>bad gateway</html>"
        ));
        assert!(
            unknown(404, &PlatformHeaders::default(), "<html>not found</html>"),
            "no WeChat error code"
        );
        let refused = r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#;
        assert!(
            unknown(404, &PlatformHeaders::default(), refused),
            "an unsigned refusal"
        );
        assert!(
            unknown(
                404,
                &signed(t, refused),
                r#"{"code":"ORDER_NOT_EXIST","message":"x"}"#
            ),
            "a refusal whose signature does not verify"
        );
        for extreme in [i64::MIN, i64::MAX] {
            assert!(unknown(200, &signed(extreme, body), body), "timestamp {extreme}");
        }
        assert_eq!(
            c.verify_answer("x", 404, &signed(t, refused), refused.as_bytes(), now),
            Err(ProviderError::Rejected {
                provider: ProviderKind::Wechat,
                code: "ORDER_NOT_EXIST".into(),
                message: "订单不存在".into(),
            })
        );
    }

    #[test]
    fn the_signed_path_keeps_the_bases_own_path_and_times_are_beijing_rfc3339() {
        let c = client();
        assert_eq!(
            c.request_path("/v3/pay/transactions/native"),
            "/base/v3/pay/transactions/native"
        );
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 16, 5, 9).unwrap();
        assert_eq!(beijing_rfc3339(t), "2026-11-25T00:05:09+08:00");
        assert_eq!(parse_rfc3339("2026-11-25T00:05:09+08:00"), Some(t));
    }
}
