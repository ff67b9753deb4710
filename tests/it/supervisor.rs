//! Background jobs in the real application run under one supervisor: a job that dies
//! is started again, and the server serves on meanwhile. Durations from configuration
//! are bounded, so the longest retry the configuration accepts is scheduled, not a
//! panic in a dispatcher.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{Duration, Utc};
use kassa::domain::FixedClock;
use kassa::jobs::supervisor::Job;
use kassa::providers::Providers;
use kassa::startup::{Application, Options, ProviderSetup};
use kassa::webhooks::dispatcher::{Dispatcher, Outcome};
use tokio::sync::mpsc;

use crate::helpers::{order_body, settings_for, TestApp};
use crate::receiver::{Answer, Receiver};

/// Waits for the job's next report; the limit only keeps a broken supervisor from
/// hanging the run.
async fn next(reports: &mut mpsc::UnboundedReceiver<usize>) -> usize {
    tokio::time::timeout(std::time::Duration::from_secs(60), reports.recv())
        .await
        .expect("the job did not run again")
        .expect("the job's channel closed")
}

#[tokio::test]
async fn a_job_that_panics_in_the_running_server_is_started_again_while_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_for(dir.path(), &[("KASSA_SANDBOX_ENABLED", "false")]);
    let starts = Arc::new(AtomicUsize::new(0));
    let (report, mut reports) = mpsc::unbounded_channel();
    let flaky = {
        let starts = starts.clone();
        Job::new("flaky", move || {
            let (starts, report) = (starts.clone(), report.clone());
            async move {
                let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = report.send(n);
                if n == 1 {
                    panic!("the job's first run fails");
                }
                std::future::pending::<()>().await;
            }
        })
    };
    let app = Application::build(
        settings,
        Options {
            providers: ProviderSetup::Given(Providers::none()),
            clock: Arc::new(FixedClock::new(Utc::now())),
            run_jobs: true,
            extra_jobs: vec![flaky],
        },
    )
    .unwrap();
    let address = app.address();
    let database = app.core().db.threads();
    let handle = app.handle();
    let serving = tokio::spawn(app.run_until_stopped());

    assert_eq!(next(&mut reports).await, 1);
    assert_eq!(next(&mut reports).await, 2, "started again after its panic");
    let health = reqwest::get(format!("http://{address}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "the server serves on");

    handle.stop(true).await;
    serving.await.unwrap().unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 2, "no further restarts");
    // Every job (and the database handle it held) is gone once the server has stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while database.running() {
        assert!(std::time::Instant::now() < deadline, "a job outlived the server");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_longest_retry_step_the_configuration_accepts_is_scheduled_and_the_dispatcher_goes_on() {
    let shop = Receiver::start().await;
    shop.script([Answer::status(503)]);
    let app = TestApp::spawn_with(&[
        ("KASSA_WEBHOOKS_RETRY_SCHEDULE", "30d"),
        ("KASSA_WEBHOOKS_URL", &shop.url),
    ])
    .await;
    let first = app.create_order("longest-1", 100).await;
    let first = first["id"].as_str().unwrap().to_owned();
    app.close_locally(&first).await;
    let dispatcher = Dispatcher::new(app.core.clone()).unwrap();

    let outcome = dispatcher.try_dispatch_one(app.now()).await.unwrap();

    assert_eq!(outcome, Outcome::Retried);
    let row = &app.outbox(&first).await[0];
    let wait = row.next_attempt_at - app.now();
    assert!(
        (Duration::days(24)..=Duration::days(36)).contains(&wait),
        "30d ±20 %: {wait}"
    );
    // The same dispatcher delivers what comes next; the retry waits for its time.
    let second = app.post_order(&order_body("longest-2", 100)).await;
    let second: serde_json::Value = second.json().await.unwrap();
    let second = second["id"].as_str().unwrap().to_owned();
    app.close_locally(&second).await;
    assert_eq!(
        dispatcher.try_dispatch_one(app.now()).await.unwrap(),
        Outcome::Delivered
    );
    assert_eq!(
        dispatcher.try_dispatch_one(app.now()).await.unwrap(),
        Outcome::Empty
    );
    assert_eq!(app.outbox(&first).await[0].status.as_str(), "pending");
}
