//! Alipay's asynchronous notification: parse the form body once, verify the RSA2
//! signature, the checks that need no database (`app_id`, `seller_id`), then say what
//! it means in kassa's terms (`VerifiedNotice`). Nothing here reads the order.

use std::collections::BTreeMap;

use super::sign::{notification_content, parse_beijing};
use crate::domain::{Amount, Currency, OrderId, ProviderKind, Rejection, RejectionCode as Code};
use crate::providers::keys::VerifyingKey;
use crate::providers::notice::{IgnoredReason, NoticeEvent, VerifiedNotice};

/// What kassa expects of a notification for its own account.
pub struct Expectations<'a> {
    pub key: &'a VerifyingKey,
    pub app_id: &'a str,
    pub seller_id: Option<&'a str>,
}

/// Alipay charges in CNY only; its amounts are decimal yuan.
const CURRENCY: Currency = Currency::Cny;

/// Parses and verifies a notification body, or says why it is rejected.
pub fn verify(body: &[u8], expect: &Expectations<'_>) -> Result<VerifiedNotice, Rejection> {
    let malformed = |detail: &str| Rejection::new(Code::MalformedBody, detail);
    let text = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(malformed("empty body"));
    }
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(malformed(&format!("parameter {k} repeated")));
        }
    }
    let sign = params
        .get("sign")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Rejection::new(Code::MissingSignature, "missing sign"))?;
    if let Some(sign_type) = params.get("sign_type") {
        if sign_type != "RSA2" {
            return Err(Rejection::new(
                Code::UnsupportedSignType,
                format!("sign_type {sign_type:?} is not RSA2"),
            ));
        }
    }
    if !expect
        .key
        .verify_base64(notification_content(&params).as_bytes(), sign)
    {
        return Err(Rejection::new(Code::BadSignature, "bad signature"));
    }
    let field = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let required =
        |k: &str| field(k).ok_or_else(|| Rejection::new(Code::MissingField, format!("missing {k}")));
    let app_id = required("app_id")?;
    if app_id != expect.app_id {
        return Err(Rejection::new(
            Code::AppIdMismatch,
            format!("app_id {app_id} is not this merchant's"),
        ));
    }
    if let Some(seller) = expect.seller_id {
        if field("seller_id").as_deref() != Some(seller) {
            return Err(Rejection::new(
                Code::SellerIdMismatch,
                "seller_id is not this merchant's",
            ));
        }
    }
    let out_trade_no = required("out_trade_no")?;
    let trade_status = required("trade_status")?;
    let total_amount = required("total_amount")?;
    let notify_id = field("notify_id");
    // kassa sends its own order ids as out_trade_no; anything else names no order.
    let order_id = OrderId::parse(&out_trade_no)
        .map_err(|_| Rejection::new(Code::UnknownOrder, format!("unknown out_trade_no {out_trade_no}")))?;
    let refund_fee = field("refund_fee");
    let refund_no = field("out_biz_no");
    let event = match trade_status.as_str() {
        // Refund notices carry the trade's status (TRADE_SUCCESS after a partial refund,
        // TRADE_CLOSED after a full one) plus the refund's fields: never a payment.
        "TRADE_SUCCESS" | "TRADE_FINISHED" | "TRADE_CLOSED"
            if refund_fee.is_some() || refund_no.is_some() =>
        {
            NoticeEvent::Refunded {
                refunded_total: refund_fee
                    .map(|fee| {
                        Amount::parse_decimal(&fee, CURRENCY)
                            .map_err(|e| Rejection::new(Code::MalformedField, format!("refund_fee: {e}")))
                    })
                    .transpose()?,
                refund_no,
                refunded_at: field("gmt_refund").and_then(|t| parse_beijing(&t)),
                order_total: Some(exact_total(&total_amount)?),
            }
        }
        "TRADE_SUCCESS" | "TRADE_FINISHED" => NoticeEvent::Paid {
            amount: exact_total(&total_amount)?,
            provider_trade_no: field("trade_no"),
            paid_at: field("gmt_payment").and_then(|t| parse_beijing(&t)),
        },
        "TRADE_CLOSED" => NoticeEvent::Closed,
        "WAIT_BUYER_PAY" => NoticeEvent::Ignored(IgnoredReason::AwaitingPayment),
        other => {
            return Err(Rejection::new(
                Code::UnknownTradeStatus,
                format!("unknown trade_status {other:?}"),
            ))
        }
    };
    let summary = format!(
        "trade_status={trade_status} notify_id={}",
        notify_id.as_deref().unwrap_or("-")
    );
    Ok(VerifiedNotice {
        provider: ProviderKind::Alipay,
        order_id,
        dedupe_key: notify_id,
        event,
        summary,
    })
}

/// `total_amount` as an exact CNY amount: one written any other way than the order's
/// exact yuan can never be the order's amount.
fn exact_total(total_amount: &str) -> Result<Amount, Rejection> {
    Amount::parse_decimal(total_amount, CURRENCY).map_err(|e| {
        Rejection::new(
            Code::AmountMismatch,
            format!("amount mismatch: total_amount {total_amount:?} is not an exact CNY amount ({e})"),
        )
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
        assert_eq!(notice.order_id.as_str(), "k_01JD3QX5W8");
        assert_eq!(notice.provider, ProviderKind::Alipay);
        let NoticeEvent::Paid { amount, paid_at, .. } = notice.event else {
            panic!("a payment: {:?}", notice.event)
        };
        assert_eq!(amount, Amount::from_minor(1234, Currency::Cny).unwrap());
        assert!(paid_at.is_some());
        assert!(notice
            .summary
            .starts_with("trade_status=TRADE_SUCCESS notify_id="));

        let code = |body: &[u8], expect: &Expectations<'_>| verify(body, expect).unwrap_err().code;
        let tampered = v["tampered_body"].as_str().unwrap();
        assert_eq!(code(tampered.as_bytes(), &expect), Code::BadSignature);
        let other_app = Expectations {
            app_id: "2021000000009999",
            ..expect
        };
        assert_eq!(code(body.as_bytes(), &other_app), Code::AppIdMismatch);
        let other_seller = Expectations {
            seller_id: Some("2088000000000001"),
            ..other_app
        };
        let other_seller = Expectations {
            app_id: "2021000000000001",
            ..other_seller
        };
        assert_eq!(code(body.as_bytes(), &other_seller), Code::SellerIdMismatch);
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
        assert_eq!(code(no_sign.as_bytes(), &expect), Code::MissingSignature);
        assert_eq!(
            verify(b"", &expect).unwrap_err(),
            Rejection::new(Code::MalformedBody, "empty body")
        );
        assert_eq!(
            verify(&[0xff, 0xfe], &expect).unwrap_err(),
            Rejection::new(Code::MalformedBody, "body is not UTF-8")
        );
        let twice = format!("{body}&out_trade_no=x");
        let repeated = verify(twice.as_bytes(), &expect).unwrap_err();
        assert_eq!(repeated.code, Code::MalformedBody);
        assert!(repeated.detail.contains("repeated"), "{repeated}");
        let truncated = &body[..body.len() - 20];
        assert_eq!(code(truncated.as_bytes(), &expect), Code::BadSignature);
    }

    /// A body signed as Alipay signs it, with `changes` applied to a TRADE_SUCCESS.
    fn signed(changes: &[(&str, &str)]) -> String {
        let key = crate::providers::keys::SigningKey::from_pem(
            &std::fs::read_to_string(format!("{VECTORS}keys/alipay_platform_private_pkcs8.pem")).unwrap(),
        )
        .unwrap();
        let mut params: BTreeMap<String, String> = [
            ("app_id", "2021000000000001"),
            ("notify_id", "n-1"),
            ("out_trade_no", "ord_1"),
            ("trade_no", "t-1"),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_amount", "12.34"),
            ("gmt_payment", "2026-11-24 11:30:06"),
            ("sign_type", "RSA2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in changes {
            params.insert((*k).to_owned(), (*v).to_owned());
        }
        let sign = key.sign_base64(notification_content(&params).as_bytes());
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .append_pair("sign", &sign)
            .finish()
    }

    #[test]
    fn each_trade_status_becomes_its_event_and_refund_fields_make_a_refund_notice() {
        let (_, key) = setup();
        let expect = Expectations {
            key: &key,
            app_id: "2021000000000001",
            seller_id: None,
        };
        let event = |changes: &[(&str, &str)]| verify(signed(changes).as_bytes(), &expect).map(|n| n.event);
        let yuan = |minor| Amount::from_minor(minor, Currency::Cny).unwrap();
        let paid = NoticeEvent::Paid {
            amount: yuan(1234),
            provider_trade_no: Some("t-1".into()),
            paid_at: parse_beijing("2026-11-24 11:30:06"),
        };
        assert_eq!(event(&[]), Ok(paid.clone()));
        assert_eq!(event(&[("trade_status", "TRADE_FINISHED")]), Ok(paid));
        assert_eq!(
            event(&[("trade_status", "TRADE_CLOSED")]),
            Ok(NoticeEvent::Closed)
        );
        assert_eq!(
            event(&[("trade_status", "WAIT_BUYER_PAY")]),
            Ok(NoticeEvent::Ignored(IgnoredReason::AwaitingPayment))
        );
        for status in ["TRADE_SUCCESS", "TRADE_CLOSED"] {
            assert_eq!(
                event(&[
                    ("trade_status", status),
                    ("refund_fee", "1.00"),
                    ("out_biz_no", "rf_1")
                ]),
                Ok(NoticeEvent::Refunded {
                    refunded_total: Some(yuan(100)),
                    refund_no: Some("rf_1".into()),
                    refunded_at: None,
                    order_total: Some(yuan(1234)),
                }),
                "{status}"
            );
        }
        let code = |changes: &[(&str, &str)]| event(changes).unwrap_err().code;
        assert_eq!(code(&[("trade_status", "TRADE_PAID")]), Code::UnknownTradeStatus);
        assert_eq!(code(&[("total_amount", "12.340")]), Code::AmountMismatch);
        assert_eq!(code(&[("refund_fee", "1.001")]), Code::MalformedField);
        assert_eq!(code(&[("out_trade_no", "no such-id")]), Code::UnknownOrder);
        assert_eq!(code(&[("total_amount", "")]), Code::MissingField);
    }
}
