//! Refunds made outside kassa (Alipay's merchant platform) reach kassa only as Alipay
//! notifications: `refund_fee` (the trade's running refunded total), `out_biz_no`, or a
//! `TRADE_CLOSED` on a paid trade. Notifications are signed by python-alipay-sdk, posted
//! to `/notify/alipay` of kassa configured for a real Alipay account whose gateway is a
//! stand-in; webhooks are checked by PyPI's standardwebhooks.

use chrono::Duration;
use kassa::domain::{Amount, Currency, NewOrder, OrderId, OutTradeNo, ProviderKind};
use kassa::webhooks::dispatcher::{Dispatcher, Outcome};
use serde_json::{json, Value};

use crate::gateway_standin::{GatewayStandin, Reply};
use crate::helpers::{trade_success, unique, TestApp};
use crate::oracle::{signed_notification, verify_webhook};
use crate::receiver::Receiver;

/// `params` with `changes` applied; an empty value removes the parameter (Alipay sends
/// no empty parameters).
fn with(params: &Value, changes: &[(&str, &str)]) -> Value {
    let mut p = params.clone();
    for (k, v) in changes {
        if v.is_empty() {
            p.as_object_mut().unwrap().remove(*k);
        } else {
            p[*k] = json!(v);
        }
    }
    p
}

/// A resend of `params`: same `notify_id`, a later `notify_time`, signed anew.
fn resend(params: &Value) -> String {
    signed_notification(&with(params, &[("notify_time", "2026-11-24 12:10:00")]))
}

/// A refund notice for `order_id` (12.34): the trade's status, `refund_fee` and
/// `out_biz_no` as Alipay sends them after a refund on its merchant platform.
fn refund_notice(order_id: &str, trade_status: &str, refund_fee: &str, out_biz_no: &str) -> Value {
    with(
        &trade_success(order_id, "12.34"),
        &[
            ("trade_status", trade_status),
            ("refund_fee", refund_fee),
            ("out_biz_no", out_biz_no),
            ("gmt_refund", "2026-11-24 11:40:00.123"),
            ("notify_time", "2026-11-24 11:40:01"),
        ],
    )
}

/// kassa for a real Alipay account whose gateway is `gateway`, and a paid order of 12.34
/// (paid by a signed notification) whose webhooks go to `notify_url`.
async fn paid_order(gateway: &GatewayStandin, notify_url: Option<&str>) -> (TestApp, String) {
    let app = TestApp::spawn_alipay_via(gateway, &[]).await;
    let id = add_paid_order(&app, notify_url).await;
    (app, id)
}

/// Another paid order of 12.34 in `app`.
async fn add_paid_order(app: &TestApp, notify_url: Option<&str>) -> String {
    let order = NewOrder {
        id: OrderId::generate(),
        out_trade_no: OutTradeNo::parse(&format!("ext-{}", unique())).unwrap(),
        amount: Amount::from_minor(1234, Currency::Cny).unwrap(),
        subject: "Jasmine tea".into(),
        provider: ProviderKind::Alipay,
        notify_url: notify_url.map(str::to_owned),
        return_url: None,
        metadata: Default::default(),
        created_at: app.now(),
        expires_at: app.now() + Duration::minutes(15),
    };
    let id = order.id.to_string();
    app.core
        .db
        .write(move |c| kassa::db::orders::insert(c, &order, Some("qr")))
        .await
        .unwrap();
    let paid = app
        .post_alipay_notify(signed_notification(&trade_success(&id, "12.34")))
        .await;
    assert_eq!(paid, (200, "success".into()));
    assert_eq!(app.order(&id).await["status"], "paid");
    id
}

/// A refund row as the test compares it: (id, amount, status, reason).
type RefundRow = (String, i64, String, String);

async fn refund_rows(app: &TestApp, id: &str) -> Vec<RefundRow> {
    let oid = OrderId::parse(id).unwrap();
    app.core
        .db
        .read(move |c| kassa::db::refunds::list_for_order(c, &oid))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.amount, r.status.to_string(), r.reason))
        .collect()
}

/// Everything a notification may change about an order: the order, its refund rows,
/// its history and its queued webhooks.
async fn snapshot(app: &TestApp, id: &str) -> (Value, Vec<RefundRow>, Vec<Value>, Vec<String>) {
    (
        app.order(id).await,
        refund_rows(app, id).await,
        app.events(id).await,
        app.outbox(id)
            .await
            .into_iter()
            .map(|r| r.event_type.to_string())
            .collect(),
    )
}

/// The newest stored notification's (verdict, reason code).
async fn last_verdict(app: &TestApp) -> (String, String) {
    let n = app.notifications().await.remove(0);
    (
        n.verdict.as_str().to_owned(),
        n.reason_code.map(|r| r.code().to_owned()).unwrap_or_default(),
    )
}

/// A refund made outside kassa as stored: under its order's id and Alipay's
/// `out_biz_no`, which Alipay makes unique per trade only.
fn external(order_id: &str, no: &str, amount: i64) -> RefundRow {
    (
        format!("{order_id}/{no}"),
        amount,
        "succeeded".to_owned(),
        kassa::service::notifications::EXTERNAL_REFUND_REASON.to_owned(),
    )
}

fn transition(event: &Value) -> (String, String, String, String) {
    let s = |k: &str| event[k].as_str().unwrap_or_default().to_owned();
    (s("transition"), s("from"), s("to"), s("source"))
}

fn refund_step(from: &str, to: &str) -> (String, String, String, String) {
    ("refund".into(), from.into(), to.into(), "notification".into())
}

#[tokio::test]
async fn an_outside_partial_then_full_refund_make_the_order_partially_refunded_then_refunded_once_whatever_the_resends(
) {
    let gateway = GatewayStandin::start().await;
    let shop = Receiver::start().await;
    let (app, id) = paid_order(&gateway, Some(&shop.url)).await;
    let partial = refund_notice(&id, "TRADE_SUCCESS", "3.00", "2026112401RF0001");
    let full = refund_notice(&id, "TRADE_CLOSED", "12.34", "2026112401RF0002");

    assert_eq!(
        app.post_alipay_notify(signed_notification(&partial)).await,
        (200, "success".into())
    );
    assert_eq!(
        last_verdict(&app).await,
        ("applied".into(), "external_refund".into())
    );
    let after_partial = snapshot(&app, &id).await;
    let (order, refunds, events, outbox) = &after_partial;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(300))
    );
    assert_eq!(refunds, &[external(&id, "2026112401RF0001", 300)]);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(transition(&events[1]), refund_step("paid", "partially_refunded"));
    assert_eq!(outbox, &["order.paid", "order.partially_refunded"]);

    assert_eq!(
        app.post_alipay_notify(resend(&partial)).await,
        (200, "success".into())
    );
    assert_eq!(
        last_verdict(&app).await,
        ("duplicate".into(), "refund_already_settled".into())
    );
    assert_eq!(
        snapshot(&app, &id).await,
        after_partial,
        "a resend changes nothing"
    );

    assert_eq!(
        app.post_alipay_notify(signed_notification(&full)).await,
        (200, "success".into())
    );
    assert_eq!(
        last_verdict(&app).await,
        ("applied".into(), "external_refund".into())
    );
    let after_full = snapshot(&app, &id).await;
    let (order, refunds, events, outbox) = &after_full;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("refunded"), Some(1234))
    );
    assert_eq!(
        refunds,
        &[
            external(&id, "2026112401RF0001", 300),
            external(&id, "2026112401RF0002", 934)
        ],
        "refund_fee is a running total: the second refund is what it adds"
    );
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        transition(&events[2]),
        refund_step("partially_refunded", "refunded")
    );
    assert_eq!(
        outbox,
        &["order.paid", "order.partially_refunded", "order.refunded"]
    );

    for again in [resend(&full), resend(&partial), resend(&full)] {
        assert_eq!(app.post_alipay_notify(again).await, (200, "success".into()));
        assert_eq!(
            last_verdict(&app).await,
            ("duplicate".into(), "refund_already_settled".into())
        );
    }
    assert_eq!(snapshot(&app, &id).await, after_full, "resends change nothing");
    assert!(gateway.calls().is_empty(), "the notices said all that was needed");

    let dispatcher = Dispatcher::new(app.core.clone()).unwrap();
    while dispatcher.try_dispatch_one(app.now()).await.unwrap() != Outcome::Empty {}
    let secret = &kassa::webhooks::signing_secrets(&app.core.db, &app.core.settings, app.now())
        .await
        .unwrap()[0];
    let got = shop.received();
    let kinds: Vec<String> = got
        .iter()
        .map(|r| verify_webhook(secret, &r.headers, &r.body, app.now()).unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["order.paid", "order.partially_refunded", "order.refunded"]
    );
    let last: Value = serde_json::from_str(&got[2].body).unwrap();
    assert_eq!(
        (
            last["data"]["status"].as_str(),
            last["data"]["refunded_amount"].as_i64()
        ),
        (Some("refunded"), Some(1234))
    );
}

#[tokio::test]
async fn a_refund_fee_above_the_paid_amount_is_rejected_and_changes_nothing() {
    let gateway = GatewayStandin::start().await;
    let (app, id) = paid_order(&gateway, None).await;
    let before = snapshot(&app, &id).await;

    let too_much = refund_notice(&id, "TRADE_CLOSED", "12.35", "2026112401RF0009");
    let reply = app.post_alipay_notify(signed_notification(&too_much)).await;

    assert_eq!(reply, (200, "failure".into()));
    assert_eq!(
        last_verdict(&app).await,
        ("rejected".into(), "amount_mismatch".into())
    );
    assert_eq!(snapshot(&app, &id).await, before, "nothing changed");
    assert!(gateway.calls().is_empty());
}

/// A `TRADE_CLOSED` for `order_id` as Alipay sends it after a full refund on its
/// merchant platform: no refund fields, no payment time.
fn bare_close(order_id: &str) -> Value {
    with(
        &trade_success(order_id, "12.34"),
        &[("trade_status", "TRADE_CLOSED"), ("gmt_payment", "")],
    )
}

#[tokio::test]
async fn a_trade_closed_without_refund_fee_on_a_paid_order_is_confirmed_by_alipays_query_and_refunds_it_once()
{
    let gateway = GatewayStandin::start().await;
    let (app, id) = paid_order(&gateway, None).await;
    gateway.answer_method(
        "alipay.trade.query",
        Reply::Signed(json!({"code": "10000", "msg": "Success", "out_trade_no": id,
            "trade_no": "2026112422001446880501234567", "trade_status": "TRADE_CLOSED",
            "total_amount": "12.34", "send_pay_date": "2026-11-24 11:30:06"})),
    );
    let close = bare_close(&id);

    assert_eq!(
        app.post_alipay_notify(signed_notification(&close)).await,
        (200, "success".into())
    );

    assert_eq!(
        last_verdict(&app).await,
        ("applied".into(), "external_refund".into())
    );
    let after = snapshot(&app, &id).await;
    let (order, refunds, events, outbox) = &after;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("refunded"), Some(1234))
    );
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!((refunds[0].1, refunds[0].2.as_str()), (1234, "succeeded"));
    assert_eq!(transition(&events[1]), refund_step("paid", "refunded"));
    assert_eq!(outbox, &["order.paid", "order.refunded"]);
    let calls = gateway.calls();
    assert_eq!(gateway.methods(), ["alipay.trade.query"]);
    assert_eq!(calls[0].biz()["out_trade_no"], id.as_str());

    assert_eq!(
        app.post_alipay_notify(resend(&close)).await,
        (200, "success".into())
    );
    assert_eq!(
        last_verdict(&app).await,
        ("duplicate".into(), "refund_already_settled".into())
    );
    assert_eq!(snapshot(&app, &id).await, after, "a resend changes nothing");
}

#[tokio::test]
async fn a_trade_closed_on_a_paid_order_that_alipay_cannot_confirm_is_answered_failure_and_changes_nothing() {
    // The stand-in answers 503 to every call: the outcome of the query is unknown.
    let gateway = GatewayStandin::start().await;
    let (app, id) = paid_order(&gateway, None).await;
    let before = snapshot(&app, &id).await;

    let reply = app
        .post_alipay_notify(signed_notification(&bare_close(&id)))
        .await;

    assert_eq!(reply, (200, "failure".into()), "Alipay is asked to resend");
    assert_eq!(
        last_verdict(&app).await,
        ("error".into(), "refund_unconfirmed".into())
    );
    assert_eq!(snapshot(&app, &id).await, before, "nothing changed");
    assert_eq!(gateway.methods(), ["alipay.trade.query"]);
}

#[tokio::test]
async fn a_refund_notice_without_refund_fee_is_confirmed_by_alipays_refund_query() {
    let gateway = GatewayStandin::start().await;
    let (app, id) = paid_order(&gateway, None).await;
    gateway.answer_method(
        "alipay.trade.fastpay.refund.query",
        Reply::Signed(json!({"code": "10000", "msg": "Success", "out_trade_no": id,
            "trade_no": "2026112422001446880501234567", "out_request_no": "2026112401RF0005",
            "refund_amount": "5.00", "total_amount": "12.34", "refund_status": "REFUND_SUCCESS"})),
    );
    let notice = refund_notice(&id, "TRADE_SUCCESS", "", "2026112401RF0005");

    assert_eq!(
        app.post_alipay_notify(signed_notification(&notice)).await,
        (200, "success".into())
    );

    assert_eq!(
        last_verdict(&app).await,
        ("applied".into(), "external_refund".into())
    );
    let (order, refunds, _, outbox) = snapshot(&app, &id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(500))
    );
    assert_eq!(refunds, [external(&id, "2026112401RF0005", 500)]);
    assert_eq!(outbox, ["order.paid", "order.partially_refunded"]);
    let calls = gateway.calls();
    assert_eq!(gateway.methods(), ["alipay.trade.fastpay.refund.query"]);
    assert_eq!(
        (
            calls[0].biz()["out_trade_no"].as_str(),
            calls[0].biz()["out_request_no"].as_str()
        ),
        (Some(id.as_str()), Some("2026112401RF0005"))
    );
}

/// A refund made through kassa's API that Alipay accepts without moving money yet
/// (fund_change N): kassa keeps it pending until told. Returns the API's answer.
async fn kassa_refund_left_pending(app: &TestApp, gateway: &GatewayStandin, id: &str, amount: i64) -> Value {
    gateway.answer_method(
        "alipay.trade.refund",
        Reply::Signed(json!({"code": "10000", "msg": "Success", "out_trade_no": id,
            "trade_no": "2026112422001446880501234567", "fund_change": "N", "refund_fee": "0.00"})),
    );
    app.client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": amount, "reason": "one cup broken"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refund_notice_for_a_refund_kassa_made_settles_that_refund_and_adds_no_second_one() {
    let gateway = GatewayStandin::start().await;
    let (app, id) = paid_order(&gateway, None).await;
    let created = kassa_refund_left_pending(&app, &gateway, &id, 400).await;
    let refund_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "pending", "{created}");
    let sent = gateway
        .calls()
        .into_iter()
        .find(|c| c.method() == "alipay.trade.refund")
        .unwrap();
    assert_eq!(sent.biz()["out_request_no"], refund_id.as_str());
    let before = snapshot(&app, &id).await;
    assert_eq!(before.0["status"], "paid");

    let notice = refund_notice(&id, "TRADE_SUCCESS", "4.00", &refund_id);
    assert_eq!(
        app.post_alipay_notify(signed_notification(&notice)).await,
        (200, "success".into())
    );

    assert_eq!(
        last_verdict(&app).await,
        ("applied".into(), "refund_succeeded".into())
    );
    let after = snapshot(&app, &id).await;
    let (order, refunds, events, outbox) = &after;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(400))
    );
    assert_eq!(refunds.len(), 1, "no second refund: {refunds:?}");
    assert_eq!(
        (refunds[0].0.as_str(), refunds[0].1, refunds[0].2.as_str()),
        (refund_id.as_str(), 400, "succeeded")
    );
    assert_eq!(transition(&events[1]), refund_step("paid", "partially_refunded"));
    assert_eq!(outbox, &["order.paid", "order.partially_refunded"]);

    assert_eq!(
        app.post_alipay_notify(resend(&notice)).await,
        (200, "success".into())
    );
    assert_eq!(
        last_verdict(&app).await,
        ("duplicate".into(), "refund_already_settled".into())
    );
    assert_eq!(snapshot(&app, &id).await, after, "a resend changes nothing");
}

#[tokio::test]
async fn an_outside_refund_notice_while_a_refund_kassa_made_is_pending_is_answered_failure_and_counts_nothing_twice(
) {
    let gateway = GatewayStandin::start().await;
    let (app, id) = paid_order(&gateway, None).await;
    let created = kassa_refund_left_pending(&app, &gateway, &id, 100).await;
    assert_eq!(created["status"], "pending", "{created}");
    let before = snapshot(&app, &id).await;

    // Then 2.00 refunded on Alipay's merchant platform: refund_fee, the running total,
    // already holds kassa's 1.00.
    let notice = refund_notice(&id, "TRADE_SUCCESS", "3.00", "2026112401RF0042");
    assert_eq!(
        app.post_alipay_notify(signed_notification(&notice)).await,
        (200, "failure".into()),
        "Alipay is asked to resend once kassa's own refund is settled"
    );
    assert_eq!(
        last_verdict(&app).await,
        ("error".into(), "refund_unconfirmed".into())
    );
    assert_eq!(snapshot(&app, &id).await, before, "nothing changed");
}

/// Each of the order's refund rows as (id, Alipay's number for it).
async fn alipay_numbers(app: &TestApp, id: &str) -> Vec<(String, Option<String>)> {
    let oid = OrderId::parse(id).unwrap();
    app.core
        .db
        .read(move |c| kassa::db::refunds::list_for_order(c, &oid))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.provider_refund_id))
        .collect()
}

#[tokio::test]
async fn two_orders_refunded_outside_kassa_under_the_same_out_biz_no_are_each_recorded_and_refunded_once_whatever_the_resends(
) {
    let gateway = GatewayStandin::start().await;
    let (app, first) = paid_order(&gateway, None).await;
    let second = add_paid_order(&app, None).await;
    // Alipay makes out_biz_no unique per trade only: both trades' first refund on its
    // merchant platform may carry the same number.
    let on_first = refund_notice(&first, "TRADE_SUCCESS", "3.00", "2026112401RF0001");
    let on_second = refund_notice(&second, "TRADE_SUCCESS", "5.00", "2026112401RF0001");

    for notice in [&on_first, &on_second] {
        assert_eq!(
            app.post_alipay_notify(signed_notification(notice)).await,
            (200, "success".into())
        );
        assert_eq!(
            last_verdict(&app).await,
            ("applied".into(), "external_refund".into())
        );
    }

    let after_first = snapshot(&app, &first).await;
    let after_second = snapshot(&app, &second).await;
    for ((order, refunds, events, outbox), id, amount) in
        [(&after_first, &first, 300), (&after_second, &second, 500)]
    {
        assert_eq!(
            (order["status"].as_str(), order["refunded_amount"].as_i64()),
            (Some("partially_refunded"), Some(amount)),
            "{id}"
        );
        assert_eq!(refunds, &[external(id, "2026112401RF0001", amount)]);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(transition(&events[1]), refund_step("paid", "partially_refunded"));
        assert_eq!(outbox, &["order.paid", "order.partially_refunded"]);
        assert_eq!(
            alipay_numbers(&app, id).await,
            [(
                format!("{id}/2026112401RF0001"),
                Some("2026112401RF0001".to_owned())
            )],
            "Alipay's number is kept as the provider's refund id"
        );
    }

    for again in [
        resend(&on_second),
        resend(&on_first),
        resend(&on_second),
        resend(&on_first),
    ] {
        assert_eq!(app.post_alipay_notify(again).await, (200, "success".into()));
        assert_eq!(
            last_verdict(&app).await,
            ("duplicate".into(), "refund_already_settled".into())
        );
    }
    assert_eq!(
        snapshot(&app, &first).await,
        after_first,
        "resends change nothing"
    );
    assert_eq!(
        snapshot(&app, &second).await,
        after_second,
        "resends change nothing"
    );
    assert!(gateway.calls().is_empty(), "the notices said all that was needed");
}

/// The stand-in answers `alipay.trade.fastpay.refund.query` for `no` on `order_id`: a
/// refund of 5.00 that succeeded.
fn refund_query_answers(gateway: &GatewayStandin, order_id: &str, no: &str) {
    let answer = json!({"code": "10000", "msg": "Success", "out_trade_no": order_id,
        "trade_no": "2026112422001446880501234567", "out_request_no": no,
        "refund_amount": "5.00", "total_amount": "12.34", "refund_status": "REFUND_SUCCESS"});
    gateway.answer_method("alipay.trade.fastpay.refund.query", Reply::Signed(answer));
}

#[tokio::test]
async fn an_outside_refund_stored_under_its_bare_out_biz_no_by_an_earlier_kassa_is_recognised_when_resent_and_does_not_block_that_number_on_another_order(
) {
    let gateway = GatewayStandin::start().await;
    let (app, first) = paid_order(&gateway, None).await;
    let second = add_paid_order(&app, None).await;
    let no = "2026112401RF0005";
    // Without refund_fee: the amount comes from Alipay's refund query, so only the row
    // found by its number keeps a resend from being recorded again.
    let on_first = refund_notice(&first, "TRADE_SUCCESS", "", no);
    refund_query_answers(&gateway, &first, no);
    assert_eq!(
        app.post_alipay_notify(signed_notification(&on_first)).await,
        (200, "success".into())
    );
    assert_eq!(
        last_verdict(&app).await,
        ("applied".into(), "external_refund".into())
    );
    // kassa before this version stored such a refund under out_biz_no alone.
    let changed = app
        .db()
        .clone()
        .execute(
            "UPDATE refunds SET id = provider_refund_id WHERE order_id = ?1",
            [&first],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let before = snapshot(&app, &first).await;
    let (order, refunds, _, _) = &before;
    assert_eq!(
        refunds,
        &[(
            no.to_owned(),
            500,
            "succeeded".to_owned(),
            kassa::service::notifications::EXTERNAL_REFUND_REASON.to_owned()
        )]
    );
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(500))
    );

    let with_refund_fee = refund_notice(&first, "TRADE_SUCCESS", "5.00", no);
    for again in [
        resend(&on_first),
        signed_notification(&with_refund_fee),
        resend(&on_first),
    ] {
        assert_eq!(app.post_alipay_notify(again).await, (200, "success".into()));
        assert_eq!(
            last_verdict(&app).await,
            ("duplicate".into(), "refund_already_settled".into())
        );
    }
    assert_eq!(snapshot(&app, &first).await, before, "resends change nothing");

    let on_second = refund_notice(&second, "TRADE_SUCCESS", "", no);
    refund_query_answers(&gateway, &second, no);
    assert_eq!(
        app.post_alipay_notify(signed_notification(&on_second)).await,
        (200, "success".into())
    );
    assert_eq!(
        last_verdict(&app).await,
        ("applied".into(), "external_refund".into())
    );
    let (order, refunds, _, outbox) = snapshot(&app, &second).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(500))
    );
    assert_eq!(refunds, [external(&second, no, 500)]);
    assert_eq!(outbox, ["order.paid", "order.partially_refunded"]);
    assert_eq!(
        snapshot(&app, &first).await,
        before,
        "the first order is untouched"
    );
    let queried: Vec<(String, String)> = gateway
        .calls()
        .iter()
        .map(|c| {
            let biz = c.biz();
            let s = |k: &str| biz[k].as_str().unwrap_or_default().to_owned();
            (s("out_trade_no"), s("out_request_no"))
        })
        .collect();
    assert_eq!(
        queried,
        [
            (first.clone(), no.to_owned()),
            (first.clone(), no.to_owned()),
            (first.clone(), no.to_owned()),
            (second.clone(), no.to_owned())
        ],
        "each notice without refund_fee asked Alipay for its own trade's refund"
    );
}
