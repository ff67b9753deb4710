//! The expiry worker and the late-notification checks, driven by a clock the test
//! controls.

use std::sync::atomic::Ordering;

use chrono::Duration;
use kassa::jobs::expiry::ExpiryReport;
use kassa::providers::{PaymentFacts, TradeState};
use serde_json::Value;

use crate::helpers::TestApp;

async fn status(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_order_past_its_deadline_is_queried_then_closed_at_the_provider_and_locally() {
    let app = TestApp::spawn().await;
    let order = app.create_order("exp-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let worker = app.expiry();

    app.clock.advance(Duration::minutes(14));
    assert_eq!(
        worker.try_run_once(app.now()).await.unwrap(),
        ExpiryReport::default(),
        "not due yet"
    );
    assert_eq!(status(&app, id).await["status"], "pending");

    app.clock.advance(Duration::minutes(1));
    let report = worker.try_run_once(app.now()).await.unwrap();

    assert_eq!(report.closed, 1);
    assert_eq!(
        app.provider.queries.load(Ordering::SeqCst),
        1,
        "asked the provider first"
    );
    assert_eq!(app.provider.closes.load(Ordering::SeqCst), 1);
    let now = status(&app, id).await;
    assert_eq!(now["status"], "closed");
    let events: Value = app
        .get(&format!("/api/v1/orders/{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["data"][0]["source"], "expiry");
    assert_eq!(events["data"][0]["actor"], "system");
    assert_eq!(
        worker.try_run_once(app.now()).await.unwrap(),
        ExpiryReport::default(),
        "nothing left"
    );
}

#[tokio::test]
async fn an_expiring_order_found_paid_at_the_provider_becomes_paid() {
    let app = TestApp::spawn().await;
    let order = app.create_order("exp-2", 250).await;
    let id = order["id"].as_str().unwrap();
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::Paid(PaymentFacts {
        provider_trade_no: Some("2026T".into()),
        paid_at: None,
        amount: 250,
    }));
    app.clock.advance(Duration::minutes(16));

    let report = app.expiry().try_run_once(app.now()).await.unwrap();

    assert_eq!((report.paid, report.closed), (1, 0));
    assert_eq!(status(&app, id).await["status"], "paid");
    assert_eq!(app.provider.closes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_provider_that_cannot_answer_leaves_the_order_pending_and_is_retried_later() {
    let app = TestApp::spawn().await;
    let order = app.create_order("exp-3", 100).await;
    let id = order["id"].as_str().unwrap();
    *app.provider.query_answer.lock().unwrap() = Err(app.provider.unknown());
    app.clock.advance(Duration::minutes(16));
    let worker = app.expiry();

    let first = worker.try_run_once(app.now()).await.unwrap();
    let again = worker.try_run_once(app.now()).await.unwrap();

    assert_eq!(first.deferred, 1);
    assert_eq!(again.deferred, 1);
    assert_eq!(
        app.provider.queries.load(Ordering::SeqCst),
        1,
        "not hammered while waiting"
    );
    assert_eq!(status(&app, id).await["status"], "pending");

    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::NotPaid);
    app.clock.advance(Duration::seconds(61));
    let later = worker.try_run_once(app.now()).await.unwrap();
    assert_eq!(later.closed, 1);
    assert_eq!(status(&app, id).await["status"], "closed");
}

#[tokio::test]
async fn a_pending_order_is_queried_at_1_5_15_and_60_minutes_and_at_no_other_time() {
    let app = TestApp::spawn().await;
    let created = chrono::DateTime::parse_from_rfc3339("2027-01-15T03:30:00.000Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    app.clock.set(created);
    let mut body = crate::helpers::order_body("late-checks", 100);
    // Open for two hours, so the +1 h check still finds it pending.
    body["expires_in"] = serde_json::json!(7200);
    assert_eq!(app.post_order(&body).await.status(), 201);
    let ms = Duration::milliseconds;
    // (time after creation, queries made by then)
    let steps = [
        (ms(0), 0),
        (ms(59_999), 0),
        (Duration::minutes(1), 1),
        (Duration::minutes(1), 1),
        (Duration::minutes(5) - ms(1), 1),
        (Duration::minutes(5), 2),
        (Duration::minutes(10), 2),
        (Duration::minutes(15) - ms(1), 2),
        (Duration::minutes(15), 3),
        (Duration::minutes(30), 3),
        (Duration::minutes(60) - ms(1), 3),
        (Duration::minutes(60), 4),
        (Duration::minutes(61), 4),
        (Duration::minutes(119), 4),
    ];
    let mut before = 0;
    for (after, queries) in steps {
        app.clock.set(created + after);
        let report = kassa::jobs::late_checks::try_run_once(&app.core, app.now())
            .await
            .unwrap();
        assert_eq!(
            app.provider.queries.load(Ordering::SeqCst),
            queries,
            "queries by +{after}"
        );
        assert_eq!(report.orders_checked, queries - before, "checked at +{after}");
        assert_eq!(report.orders_paid, 0);
        before = queries;
    }
    assert_eq!(app.provider.calls(), [1, 4, 0, 0, 0], "only queries, no close");
}

/// The app's own core under a new instance id: what a second kassa process on the same
/// database is to the jobs (its own name, the same tables).
fn another_instance(app: &TestApp) -> kassa::core::Core {
    kassa::core::Core {
        instance: kassa::core::InstanceId::generate(),
        ..app.core.clone()
    }
}

/// A pending order whose deadline passed five minutes ago; returns its id.
async fn overdue_order(app: &TestApp, out_trade_no: &str) -> String {
    use kassa::domain::{Amount, Currency, NewOrder, OrderId, OutTradeNo, ProviderKind};
    let order = NewOrder {
        id: OrderId::generate(),
        out_trade_no: OutTradeNo::parse(out_trade_no).unwrap(),
        amount: Amount::from_minor(100, Currency::Cny).unwrap(),
        subject: "Oolong".into(),
        provider: ProviderKind::Alipay,
        notify_url: None,
        return_url: None,
        metadata: Default::default(),
        created_at: app.now() - Duration::minutes(20),
        expires_at: app.now() - Duration::minutes(5),
    };
    let id = order.id.to_string();
    app.core
        .db
        .write(move |c| kassa::db::orders::insert(c, &order, Some("qr")))
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn only_the_instance_holding_the_expiry_lease_sweeps_and_another_takes_over_once_the_holder_stops_renewing(
) {
    use kassa::jobs::expiry::ExpiryWorker;
    let app = TestApp::spawn().await;
    let a = ExpiryWorker::new(another_instance(&app));
    let b = ExpiryWorker::new(another_instance(&app));
    let first = overdue_order(&app, "lease-1").await;

    let by_a = a.pass(app.now()).await.unwrap();
    assert_eq!(by_a.map(|r| r.closed), Some(1));
    assert_eq!(status(&app, &first).await["status"], "closed");
    app.clock.advance(Duration::seconds(20));
    assert_eq!(
        a.pass(app.now()).await.unwrap(),
        Some(ExpiryReport::default()),
        "the holder renews with each pass"
    );

    // Past the lease A took first, within the one it renewed: B leaves an overdue order
    // alone and asks no provider.
    let second = overdue_order(&app, "lease-2").await;
    let queries = app.provider.queries.load(Ordering::SeqCst);
    app.clock.advance(Duration::seconds(29));
    assert_eq!(b.pass(app.now()).await.unwrap(), None);
    assert_eq!(status(&app, &second).await["status"], "pending");
    assert_eq!(app.provider.queries.load(Ordering::SeqCst), queries);

    // A renews no more (it died): once its lease has run out, B takes over and finishes.
    app.clock.advance(Duration::seconds(1));
    let by_b = b.pass(app.now()).await.unwrap();
    assert_eq!(by_b.map(|r| r.closed), Some(1));
    assert_eq!(status(&app, &second).await["status"], "closed");
    assert_eq!(a.pass(app.now()).await.unwrap(), None, "B's lease now");
}

/// Takes one renewal period (10 s) of real time: the renewal is what finds the lease
/// gone.
#[tokio::test]
async fn a_pass_that_hangs_until_another_instance_takes_its_lease_stops_at_the_next_renewal_and_leaves_the_rest(
) {
    use kassa::jobs::expiry::{ExpiryWorker, LEASE};
    let app = TestApp::spawn().await;
    let first = overdue_order(&app, "hang-1").await;
    let second = overdue_order(&app, "hang-2").await;
    app.provider.query_hangs.store(true, Ordering::SeqCst);
    let a = ExpiryWorker::new(another_instance(&app));
    let b = another_instance(&app);
    let now = app.now();
    let pass = tokio::spawn(async move { a.pass(now).await });
    while app.provider.queries.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // A hangs on its first order past its lease; B takes the lease over.
    app.clock.advance(Duration::seconds(31));
    assert!(kassa::jobs::lease::take(&b, LEASE, app.now()).await.unwrap());
    // Without the stop, A's pass would hang (and renew) on: three renewals at most.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(35), pass)
        .await
        .expect("the pass stopped at its renewal")
        .unwrap()
        .unwrap();

    assert_eq!(stopped, None);
    assert_eq!(status(&app, &first).await["status"], "pending");
    assert_eq!(status(&app, &second).await["status"], "pending");
    assert_eq!(app.provider.calls(), [0, 1, 0, 0, 0], "one query, no close");
    let held = app
        .core
        .db
        .read(|c| kassa::db::leases::find(c, "expiry"))
        .await
        .unwrap();
    assert_eq!(held.map(|(holder, _)| holder), Some(b.instance.to_string()));
}

#[tokio::test]
async fn every_singleton_job_skips_its_pass_while_another_instance_holds_its_lease() {
    use kassa::jobs::{backup, late_checks, lease, notification_retention, refund_settlement};
    let app = TestApp::spawn().await;
    let (a, b) = (another_instance(&app), another_instance(&app));
    app.insert_order("late-lease", 100).await;
    let refund = pending_refund(&app).await;
    let old = app.now() - Duration::days(31);
    let db = app.db().clone();
    db.execute(
        "INSERT INTO notifications (provider, received_at, headers, body, verdict, unverified) \
         VALUES ('alipay', ?1, '{}', ?2, 'rejected', 1)",
        crate::vals![old.timestamp_millis(), &[0u8][..]],
    )
    .unwrap();
    let notifications = |db: &crate::helpers::TestDb| -> i64 {
        db.query_row(
            "SELECT COUNT(*) FROM notifications WHERE unverified = 1",
            crate::vals![],
            |r| r.get(0),
        )
        .unwrap()
    };
    let refund_row = |db: &crate::helpers::TestDb| -> (String, i64) {
        db.query_row(
            "SELECT status, updated_at FROM refunds WHERE id = ?1",
            [&refund],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    app.clock.advance(Duration::minutes(2));
    let now = app.now();
    let (calls, pending) = (app.provider.calls(), refund_row(&db));
    assert_eq!(pending.0, "pending");
    for name in [
        late_checks::LEASE,
        refund_settlement::LEASE,
        notification_retention::LEASE,
        backup::LEASE,
    ] {
        assert!(lease::take(&a, name, now).await.unwrap(), "{name}");
    }

    assert_eq!(late_checks::pass(&b, now).await.unwrap(), None);
    assert_eq!(refund_settlement::pass(&b, now).await.unwrap(), None);
    assert_eq!(
        notification_retention::pass(&b, Duration::days(30), now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        app.provider.calls(),
        calls,
        "no late check, no refund query or retry"
    );
    assert_eq!(refund_row(&db), pending, "the refund is not settled");
    assert_eq!(notifications(&db), 1, "the old notification is kept");
    assert!(backup::pass(&b, now).await.unwrap().is_none());
    let backups = std::fs::read_dir(backup::directory(&b)).map_or(0, |d| d.count());
    assert_eq!(backups, 0, "no backup written");

    // The holder runs them.
    let checked = late_checks::pass(&a, now).await.unwrap();
    assert_eq!(checked.map(|r| r.orders_checked), Some(1));
    assert_eq!(app.provider.queries.load(Ordering::SeqCst), calls[1] + 1);
    assert_eq!(refund_settlement::pass(&a, now).await.unwrap(), Some(1));
    assert_eq!(refund_row(&db).0, "succeeded");
    let retention = notification_retention::pass(&a, Duration::days(30), now)
        .await
        .unwrap();
    assert_eq!(retention.map(|r| r.deleted), Some(1));
    assert_eq!(notifications(&db), 0);
    let backed_up = backup::pass(&a, now).await.unwrap();
    if app.is_postgres() {
        // Periodic backups copy a SQLite file: on PostgreSQL the holder's round runs and
        // says it cannot (pg_dump is the operator's).
        assert!(backed_up.is_some_and(|r| r.is_err()));
    } else {
        assert!(backed_up.is_some_and(|r| r.is_ok()));
    }
}

/// A paid order with a refund whose outcome was unknown (so pending); returns the
/// refund's id.
async fn pending_refund(app: &TestApp) -> String {
    use kassa::domain::ProviderKind;
    use kassa::providers::{PaymentFacts, ProviderError};
    let order = app.create_order("lease-refund", 500).await;
    let id = order["id"].as_str().unwrap().to_owned();
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::Paid(PaymentFacts {
        provider_trade_no: Some("T".into()),
        paid_at: None,
        amount: 500,
    }));
    app.post(&format!("/api/v1/orders/{id}/close")).await;
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::NotPaid);
    app.provider
        .refund_answers
        .lock()
        .unwrap()
        .push(Err(ProviderError::Unknown {
            provider: ProviderKind::Alipay,
            reason: "timeout".into(),
        }));
    *app.provider.refund_query_answer.lock().unwrap() = Err(ProviderError::Unknown {
        provider: ProviderKind::Alipay,
        reason: "timeout".into(),
    });
    let created: Value = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&serde_json::json!({"amount": 500, "reason": "r"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["status"], "pending", "{created}");
    // The provider never saw it: settling retries it, and that succeeds.
    *app.provider.refund_query_answer.lock().unwrap() = Ok(kassa::providers::RefundState::NotFound);
    created["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_stopping_instance_gives_back_its_own_job_leases_and_leaves_another_instances() {
    use kassa::db::leases;
    let app = TestApp::spawn().await;
    assert!(app.expiry().pass(app.now()).await.unwrap().is_some());
    let mine = app.core.instance.clone();
    let other = kassa::core::InstanceId::generate();
    assert!(kassa::jobs::lease::take(
        &kassa::core::Core {
            instance: other.clone(),
            ..app.core.clone()
        },
        kassa::jobs::backup::LEASE,
        app.now()
    )
    .await
    .unwrap());
    let held = app.core.db.read(|c| leases::find(c, "expiry")).await.unwrap();
    assert_eq!(held.map(|(holder, _)| holder), Some(mine.to_string()));
    // One webhook and one sandbox notice claimed by each instance.
    let orders = [
        app.insert_order("stop-1", 100).await,
        app.insert_order("stop-2", 100).await,
    ];
    let (now, me, them) = (app.now(), mine.to_string(), other.to_string());
    let claimed = app
        .core
        .db
        .write(move |c| {
            use kassa::db::{outbox, sandbox};
            for id in &orders {
                let id = kassa::domain::OrderId::parse(id).unwrap();
                outbox::enqueue(c, &id, kassa::domain::EventType::OrderPaid, "{}", now)?;
                sandbox::enqueue_delivery(c, "stop", "http://shop.test/notify", "{}", "{}", now, now)?;
            }
            let mut claimed = Vec::new();
            for owner in [&me, &them] {
                claimed.push(outbox::claim_due(c, now, Duration::seconds(60), owner)?.is_some());
                claimed
                    .push(sandbox::claim_due_delivery(c, now, now + Duration::seconds(60), owner)?.is_some());
            }
            Ok(claimed)
        })
        .await
        .unwrap();
    assert_eq!(claimed, [true; 4]);

    let app = app.restart().await;

    assert_ne!(app.core.instance, mine, "a new start, a new instance id");
    let expiry = app.core.db.read(|c| leases::find(c, "expiry")).await.unwrap();
    let backup = app.core.db.read(|c| leases::find(c, "backup")).await.unwrap();
    assert_eq!(expiry, None, "given back at the stop");
    assert_eq!(backup.map(|(holder, _)| holder), Some(other.to_string()));
    let db = app.db().clone();
    let owners = |sql: &str| -> Vec<(String, Option<String>, bool)> {
        db.prepare(sql)
            .unwrap()
            .query_map(crate::vals![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let held_by_other = |status: &str| (status.to_owned(), Some(other.to_string()), true);
    assert_eq!(
        owners("SELECT status, lease_owner, lease_until IS NOT NULL FROM webhook_outbox ORDER BY id"),
        [("pending".into(), None, false), held_by_other("delivering")],
        "the stopped instance's webhook is due again, the other's claim untouched"
    );
    assert_eq!(
        owners("SELECT status, lease_owner, lease_until IS NOT NULL FROM sandbox_deliveries ORDER BY id"),
        [("pending".into(), None, false), held_by_other("pending")],
        "the same for sandbox notices"
    );
}
