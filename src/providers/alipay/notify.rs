//! Alipay's asynchronous notification: parse the form body once, verify the RSA2
//! signature, then the checks that need no database (`app_id`, `seller_id`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::sign::{notification_content, parse_beijing};
use crate::providers::keys::VerifyingKey;

/// A notification whose signature and merchant identity checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlipayNotice {
    /// Stable across Alipay's resends (their `notify_time` and `sign` change).
    pub notify_id: Option<String>,
    pub out_trade_no: String,
    pub trade_status: String,
    pub total_amount: String,
    pub trade_no: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Carries `refund_fee` / `out_biz_no`: a refund notice, never a payment.
    pub is_refund_notice: bool,
}

/// What kassa expects of a notification for its own account.
pub struct Expectations<'a> {
    pub key: &'a VerifyingKey,
    pub app_id: &'a str,
    pub seller_id: Option<&'a str>,
}

/// Parses and verifies a notification body, or says why it is rejected.
pub fn verify(body: &[u8], expect: &Expectations<'_>) -> Result<AlipayNotice, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned())?;
    if text.trim().is_empty() {
        return Err("empty body".to_owned());
    }
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter {k} repeated"));
        }
    }
    let sign = params
        .get("sign")
        .filter(|s| !s.is_empty())
        .ok_or("missing sign")?;
    if let Some(sign_type) = params.get("sign_type") {
        if sign_type != "RSA2" {
            return Err(format!("sign_type {sign_type:?} is not RSA2"));
        }
    }
    if !expect
        .key
        .verify_base64(notification_content(&params).as_bytes(), sign)
    {
        return Err("bad signature".to_owned());
    }
    let field = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let required = |k: &str| field(k).ok_or_else(|| format!("missing {k}"));
    let app_id = required("app_id")?;
    if app_id != expect.app_id {
        return Err(format!("app_id {app_id} is not this merchant's"));
    }
    if let Some(seller) = expect.seller_id {
        if field("seller_id").as_deref() != Some(seller) {
            return Err("seller_id is not this merchant's".to_owned());
        }
    }
    Ok(AlipayNotice {
        notify_id: field("notify_id"),
        out_trade_no: required("out_trade_no")?,
        trade_status: required("trade_status")?,
        total_amount: required("total_amount")?,
        trade_no: field("trade_no"),
        paid_at: field("gmt_payment").and_then(|t| parse_beijing(&t)),
        is_refund_notice: field("refund_fee").is_some() || field("out_biz_no").is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");

    fn setup() -> (serde_json::Value, VerifyingKey) {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{VECTORS}alipay_notify.json")).unwrap())
                .unwrap();
        let key = VerifyingKey::from_pem(
            &std::fs::read_to_string(format!("{VECTORS}keys/alipay_platform_public.pem")).unwrap(),
        )
        .unwrap();
        (v, key)
    }

    #[test]
    fn the_vector_verifies_and_every_rejection_says_why() {
        let (v, key) = setup();
        let expect = Expectations {
            key: &key,
            app_id: "2021000000000001",
            seller_id: Some("2088102177000000"),
        };
        let body = v["body"].as_str().unwrap();
        let notice = verify(body.as_bytes(), &expect).unwrap();
        assert_eq!(notice.out_trade_no, "k_01JD3QX5W8");
        assert_eq!(notice.total_amount, "12.34");
        assert_eq!(notice.trade_status, "TRADE_SUCCESS");
        assert!(!notice.is_refund_notice);
        assert!(notice.paid_at.is_some());

        let tampered = v["tampered_body"].as_str().unwrap();
        assert_eq!(verify(tampered.as_bytes(), &expect).unwrap_err(), "bad signature");
        let other_app = Expectations {
            app_id: "2021000000009999",
            ..expect
        };
        assert!(verify(body.as_bytes(), &other_app)
            .unwrap_err()
            .contains("app_id"));
        let other_seller = Expectations {
            seller_id: Some("2088000000000001"),
            ..other_app
        };
        let other_seller = Expectations {
            app_id: "2021000000000001",
            ..other_seller
        };
        assert!(verify(body.as_bytes(), &other_seller)
            .unwrap_err()
            .contains("seller_id"));
        let no_sign: String = body
            .split('&')
            .filter(|p| !p.starts_with("sign="))
            .collect::<Vec<_>>()
            .join("&");
        let expect = Expectations {
            key: &key,
            app_id: "2021000000000001",
            seller_id: None,
        };
        assert_eq!(verify(no_sign.as_bytes(), &expect).unwrap_err(), "missing sign");
        assert_eq!(verify(b"", &expect).unwrap_err(), "empty body");
        assert_eq!(verify(&[0xff, 0xfe], &expect).unwrap_err(), "body is not UTF-8");
        let twice = format!("{body}&out_trade_no=x");
        assert!(verify(twice.as_bytes(), &expect)
            .unwrap_err()
            .contains("repeated"));
        let truncated = &body[..body.len() - 20];
        assert_eq!(
            verify(truncated.as_bytes(), &expect).unwrap_err(),
            "bad signature"
        );
    }
}
