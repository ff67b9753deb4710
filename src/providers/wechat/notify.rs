//! WeChat Pay's notification: check the `Wechatpay-*` headers and the platform
//! signature over the raw body (key chosen by `Wechatpay-Serial`), then parse, decrypt
//! the resource with the APIv3 key and check the merchant identity; say what it means
//! in kassa's terms (`VerifiedNotice`). Nothing here reads the order.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::aead::ALGORITHM;
use super::platform_keys::{SelectedKey, VerifyError};
use super::wire::{parse_rfc3339, Expectations, PlatformHeaders, MAX_SKEW_SECONDS};
use super::SCHEMA;
use crate::domain::{Amount, Currency, OrderId, ProviderKind, Rejection, RejectionCode as Code};
use crate::providers::notice::{IgnoredReason, NoticeEvent, RefundEnd, RefundNotice, VerifiedNotice};

fn reject(code: Code, detail: impl Into<String>) -> Rejection {
    Rejection::new(code, detail)
}

/// Parses and verifies a notification as received at `now`, or says why it is
/// rejected.
pub fn verify(
    headers: &PlatformHeaders,
    body: &[u8],
    expect: &Expectations<'_>,
    now: DateTime<Utc>,
) -> Result<VerifiedNotice, Rejection> {
    let missing: Vec<&str> = [
        ("Wechatpay-Serial", &headers.serial),
        ("Wechatpay-Signature", &headers.signature),
        ("Wechatpay-Timestamp", &headers.timestamp),
        ("Wechatpay-Nonce", &headers.nonce),
    ]
    .into_iter()
    .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
    .map(|(name, _)| name)
    .collect();
    let (Some(serial), Some(signature), Some(timestamp), Some(nonce), true) = (
        headers.serial.as_deref(),
        headers.signature.as_deref(),
        headers.timestamp.as_deref(),
        headers.nonce.as_deref(),
        missing.is_empty(),
    ) else {
        return Err(reject(
            Code::MissingHeader,
            format!("missing {}", missing.join(", ")),
        ));
    };
    if let Some(kind) = headers.signature_type.as_deref() {
        if kind != SCHEMA {
            return Err(reject(
                Code::UnsupportedSignType,
                format!("Wechatpay-Signature-Type {kind:?} is not {SCHEMA}"),
            ));
        }
    }
    let at: i64 = timestamp.parse().map_err(|_| {
        reject(
            Code::MalformedField,
            format!("Wechatpay-Timestamp {timestamp:?} is not a number"),
        )
    })?;
    // The header is the sender's: any i64 must compare without overflowing.
    let skew = now.timestamp().abs_diff(at);
    if skew > MAX_SKEW_SECONDS.unsigned_abs() {
        return Err(reject(
            Code::StaleTimestamp,
            format!("Wechatpay-Timestamp {timestamp} is {skew} s off the server's clock (at most {MAX_SKEW_SECONDS})"),
        ));
    }
    match expect.keys.verify(serial, timestamp, nonce, body, signature) {
        Ok(SelectedKey::Certificate(cert)) if cert.is_expired(now) => {
            // WeChat decides which key signs; an expired certificate it still uses is
            // accepted, and worth telling the operator about, though not on every
            // notification.
            if cert.expired_use_worth_warning(now) {
                tracing::warn!(
                serial = cert.serial(),
                not_after = %cert.not_after(),
                "WeChat Pay notification signed with an expired platform certificate; accepted"
                );
            }
        }
        Ok(_) => {}
        Err(VerifyError::UnknownSerial(s)) => {
            return Err(reject(
                Code::UnknownSerial,
                format!("no platform public key or certificate with serial {s:?}"),
            ))
        }
        Err(VerifyError::BadSignature) => return Err(reject(Code::BadSignature, "bad signature")),
    }
    let envelope: Value = serde_json::from_slice(body)
        .map_err(|e| reject(Code::MalformedBody, format!("body is not JSON: {e}")))?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let notification_id = text(&envelope, "id");
    let event_type =
        text(&envelope, "event_type").ok_or_else(|| reject(Code::MissingField, "missing event_type"))?;
    let resource_type = text(&envelope, "resource_type").unwrap_or_default();
    if resource_type != "encrypt-resource" {
        return Err(reject(
            Code::MalformedField,
            format!("resource_type {resource_type:?} is not encrypt-resource"),
        ));
    }
    let resource = envelope
        .get("resource")
        .filter(|r| r.is_object())
        .ok_or_else(|| reject(Code::MissingField, "missing resource"))?;
    let algorithm = text(resource, "algorithm").unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(reject(
            Code::UnsupportedAlgorithm,
            format!("resource algorithm {algorithm:?} is not {ALGORITHM}"),
        ));
    }
    let plain = expect
        .apiv3
        .decrypt(
            &text(resource, "nonce").unwrap_or_default(),
            &text(resource, "associated_data").unwrap_or_default(),
            &text(resource, "ciphertext").unwrap_or_default(),
        )
        .map_err(|e| reject(Code::DecryptFailed, e.to_string()))?;
    let inner: Value = serde_json::from_slice(&plain)
        .map_err(|e| reject(Code::MalformedField, format!("resource is not JSON: {e}")))?;
    let required = |k: &str| {
        text(&inner, k)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| reject(Code::MissingField, format!("missing {k}")))
    };
    let mchid = required("mchid")?;
    if mchid != expect.mchid {
        return Err(reject(
            Code::MchidMismatch,
            format!("mchid {mchid} is not this merchant's"),
        ));
    }
    let out_trade_no = required("out_trade_no")?;
    let order_id = OrderId::parse(&out_trade_no)
        .map_err(|_| reject(Code::UnknownOrder, format!("unknown out_trade_no {out_trade_no}")))?;
    let amount_field = |k: &str| -> Result<i64, Rejection> {
        inner
            .get("amount")
            .and_then(|a| a.get(k))
            .and_then(Value::as_i64)
            .ok_or_else(|| reject(Code::MissingField, format!("missing amount.{k}")))
    };
    let currency = || -> Result<Currency, Rejection> {
        let code = inner
            .get("amount")
            .and_then(|a| a.get("currency"))
            .and_then(Value::as_str)
            .unwrap_or("CNY");
        code.parse().map_err(|_| {
            reject(
                Code::CurrencyMismatch,
                format!("currency mismatch: {code:?} is no currency kassa charges in"),
            )
        })
    };
    let event = match event_type.as_str() {
        "TRANSACTION.SUCCESS" => {
            let appid = required("appid")?;
            if appid != expect.appid {
                return Err(reject(
                    Code::AppIdMismatch,
                    format!("appid {appid} is not this merchant's"),
                ));
            }
            let state = required("trade_state")?;
            if state != "SUCCESS" {
                return Err(reject(
                    Code::UnknownTradeStatus,
                    format!("TRANSACTION.SUCCESS with trade_state {state:?}"),
                ));
            }
            let total = amount_field("total")?;
            NoticeEvent::Paid {
                amount: Amount::from_minor(total, currency()?).map_err(|e| {
                    reject(
                        Code::AmountMismatch,
                        format!("amount mismatch: amount.total {total}: {e}"),
                    )
                })?,
                provider_trade_no: text(&inner, "transaction_id"),
                paid_at: text(&inner, "success_time").and_then(|t| parse_rfc3339(&t)),
            }
        }
        "REFUND.SUCCESS" | "REFUND.ABNORMAL" | "REFUND.CLOSED" => {
            let refund = amount_field("refund")?;
            let total = amount_field("total")?;
            let status = required("refund_status")?;
            let end = event_type.trim_start_matches("REFUND.");
            // The event type and the resource's status say the same thing, or the
            // notice says nothing kassa can act on.
            if status != end {
                return Err(reject(
                    Code::UnknownTradeStatus,
                    format!("{event_type} with refund_status {status:?}"),
                ));
            }
            let outcome = match end {
                "SUCCESS" => RefundEnd::Succeeded,
                "ABNORMAL" => RefundEnd::Abnormal,
                _ => RefundEnd::Failed(status),
            };
            let currency = currency()?;
            NoticeEvent::RefundSettled(RefundNotice {
                refund_no: required("out_refund_no")?,
                provider_refund_id: text(&inner, "refund_id"),
                amount: Amount::from_minor(refund, currency)
                    .map_err(|e| reject(Code::MalformedField, format!("amount.refund {refund}: {e}")))?,
                order_total: Some(Amount::from_minor(total, currency).map_err(|e| {
                    reject(
                        Code::AmountMismatch,
                        format!("amount mismatch: amount.total {total}: {e}"),
                    )
                })?),
                outcome,
                settled_at: text(&inner, "success_time").and_then(|t| parse_rfc3339(&t)),
            })
        }
        _ => NoticeEvent::Ignored(IgnoredReason::OtherEvent),
    };
    let summary = format!(
        "event_type={event_type} id={}",
        notification_id.as_deref().unwrap_or("-")
    );
    Ok(VerifiedNotice {
        provider: ProviderKind::Wechat,
        order_id,
        dedupe_key: notification_id,
        event,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::Value;

    use super::*;
    use crate::providers::keys::VerifyingKey;
    use crate::providers::wechat::{ApiV3Key, PlatformKeys};
    use crate::providers::wechat::{PlatformCertificate, PlatformPublicKey};

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");

    fn vector(name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{VECTORS}{name}")).unwrap()).unwrap()
    }

    fn keys() -> PlatformKeys {
        let v = vector("wechat_notify.json");
        let public = PlatformPublicKey::new(
            v["platform_serial"].as_str().unwrap(),
            VerifyingKey::from_file(std::path::Path::new(&format!(
                "{VECTORS}keys/wechat_platform_public.pem"
            )))
            .unwrap(),
        )
        .unwrap();
        let certs = PlatformCertificate::from_file(std::path::Path::new(&format!(
            "{VECTORS}keys/wechat_platform_cert.pem"
        )))
        .unwrap();
        PlatformKeys::new(Some(public), certs).unwrap()
    }

    fn headers(v: &Value) -> PlatformHeaders {
        let h = &v["headers"];
        let get = |k: &str| h[k].as_str().map(str::to_owned);
        PlatformHeaders {
            serial: get("Wechatpay-Serial"),
            signature: get("Wechatpay-Signature"),
            timestamp: get("Wechatpay-Timestamp"),
            nonce: get("Wechatpay-Nonce"),
            signature_type: get("Wechatpay-Signature-Type"),
        }
    }

    fn at(v: &Value) -> DateTime<Utc> {
        let ts: i64 = v["headers"]["Wechatpay-Timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        Utc.timestamp_opt(ts, 0).unwrap()
    }

    #[test]
    fn the_vectors_verify_and_decrypt_in_both_key_modes_to_the_same_payment() {
        let keys = keys();
        let apiv3 = ApiV3Key::new(b"kassaTestApiV3Key0123456789abcdE").unwrap();
        let expect = Expectations {
            keys: &keys,
            apiv3: &apiv3,
            mchid: "1230000109",
            appid: "wxd678efh567hg6787",
        };
        for name in ["wechat_notify.json", "wechat_notify_cert.json"] {
            let v = vector(name);
            let body = v["body"].as_str().unwrap().as_bytes();
            let notice = verify(&headers(&v), body, &expect, at(&v)).unwrap();
            assert_eq!(notice.order_id.as_str(), "k_01JD3QX5W8", "{name}");
            assert_eq!(notice.dedupe_key.as_deref(), Some("EV-2018022511223320873"));
            assert_eq!(
                notice.event,
                NoticeEvent::Paid {
                    amount: Amount::from_minor(1234, Currency::Cny).unwrap(),
                    provider_trade_no: Some("4200000000202611241234567890".into()),
                    paid_at: Some(Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 6).unwrap()),
                },
                "{name}"
            );
            assert_eq!(
                notice.summary,
                "event_type=TRANSACTION.SUCCESS id=EV-2018022511223320873"
            );
        }
        // The plaintext is the vector's, byte for byte.
        let v = vector("wechat_notify.json");
        let envelope: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        let r = &envelope["resource"];
        let plain = apiv3
            .decrypt(
                r["nonce"].as_str().unwrap(),
                r["associated_data"].as_str().unwrap(),
                r["ciphertext"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(plain, v["decrypted_resource"].as_str().unwrap().as_bytes());
    }

    #[test]
    fn a_signature_checked_under_the_other_modes_key_or_at_the_edge_of_the_window_says_why() {
        let keys = keys();
        let apiv3 = ApiV3Key::new(b"kassaTestApiV3Key0123456789abcdE").unwrap();
        let expect = Expectations {
            keys: &keys,
            apiv3: &apiv3,
            mchid: "1230000109",
            appid: "wxd678efh567hg6787",
        };
        let cert = vector("wechat_notify_cert.json");
        let body = cert["body"].as_str().unwrap().as_bytes();
        let now = at(&cert);
        let code = |h: &PlatformHeaders, now| verify(h, body, &expect, now).unwrap_err().code;
        let mut swapped = headers(&cert);
        swapped.serial = Some(
            vector("wechat_notify.json")["platform_serial"]
                .as_str()
                .unwrap()
                .into(),
        );
        assert_eq!(
            code(&swapped, now),
            Code::BadSignature,
            "the certificate's signature, the public key's serial"
        );
        let on_edge = now + chrono::Duration::seconds(MAX_SKEW_SECONDS);
        assert!(
            verify(&headers(&cert), body, &expect, on_edge).is_ok(),
            "exactly 5 minutes is still fresh"
        );
        let past = on_edge + chrono::Duration::seconds(1);
        assert_eq!(code(&headers(&cert), past), Code::StaleTimestamp);
        let other = Expectations {
            mchid: "1230000999",
            ..expect
        };
        assert_eq!(
            verify(&headers(&cert), body, &other, now).unwrap_err().code,
            Code::MchidMismatch
        );
        let other = Expectations {
            appid: "wx0000000000000001",
            ..expect
        };
        assert_eq!(
            verify(&headers(&cert), body, &other, now).unwrap_err().code,
            Code::AppIdMismatch
        );
        let wrong = ApiV3Key::new(b"otherApiV3Key0123456789abcdefghi").unwrap();
        let other = Expectations {
            apiv3: &wrong,
            ..expect
        };
        assert_eq!(
            verify(&headers(&cert), body, &other, now).unwrap_err().code,
            Code::DecryptFailed
        );
    }
}
