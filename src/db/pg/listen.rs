//! Order changes made by other instances on the same database: one connection of its
//! own per instance (a pooled one would be handed to a transaction, and a LISTEN lives
//! with its session) runs `LISTEN` on this schema's channel and forwards each
//! notification's order id. Transitions send them with `pg_notify` inside their
//! transaction (`transitions`), so they arrive at commit and never for a rollback.
//!
//! NOTIFY is not replayed: whatever is sent while the connection is down is lost. After
//! a reconnect the listener therefore says `Resync` and everyone listening re-reads
//! what they watch. The task runs on the backend's runtime and ends with it, when the
//! last `Database` handle goes.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::{broadcast, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use super::PgDb;
use crate::db::transitions::CHANNEL;
use crate::domain::OrderId;

/// What the listener hears (`Database::remote_changes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteChange {
    /// A transition of this order committed (on any instance, this one included).
    Order(OrderId),
    /// Changes may have been missed (the listener was reconnecting): whoever watches
    /// an order re-reads it.
    Resync,
}

/// Changes kept for a listener that has not caught up; one further behind is told it
/// lagged (as good as a `Resync`).
const CAPACITY: usize = 1024;
/// Waits between reconnects: doubled after each failure, from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// A session that listened this long starts the waits over when it is lost.
const STABLE: Duration = Duration::from_secs(30);
/// Connecting and starting to listen, all told: a server that accepts the connection
/// but never answers must not hold the listener.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener of one `PgDb`, started by the first `remote_changes`.
pub(in crate::db) struct Listen {
    config: tokio_postgres::Config,
    started: OnceLock<Started>,
}

struct Started {
    changes: broadcast::Sender<RemoteChange>,
    /// The listening session's backend pid while it listens (for the tests, which end it).
    #[cfg_attr(not(test), allow(dead_code))]
    listening: watch::Receiver<Option<i32>>,
}

impl Listen {
    /// `config` is the pool's; the listener's session says what it is in
    /// `application_name` (the pool's name with `-listen`), for whoever reads
    /// `pg_stat_activity`.
    pub(in crate::db) fn new(mut config: tokio_postgres::Config) -> Listen {
        let name = format!("{}-listen", config.get_application_name().unwrap_or("kassa"));
        config.application_name(&name);
        Listen {
            config,
            started: OnceLock::new(),
        }
    }

    /// Changes as they arrive; the first call starts the listener on `runtime`.
    pub(in crate::db) fn subscribe(&self, runtime: &Handle) -> broadcast::Receiver<RemoteChange> {
        self.start(runtime).changes.subscribe()
    }

    fn start(&self, runtime: &Handle) -> &Started {
        self.started.get_or_init(|| {
            let (changes, _) = broadcast::channel(CAPACITY);
            let (pid, listening) = watch::channel(None);
            runtime.spawn(run(self.config.clone(), changes.clone(), pid));
            Started { changes, listening }
        })
    }

    /// The listening session's pid, once it listens.
    #[cfg(test)]
    pub(in crate::db) fn listening(&self, runtime: &Handle) -> watch::Receiver<Option<i32>> {
        self.start(runtime).listening.clone()
    }
}

impl PgDb {
    /// See `Database::remote_changes`.
    pub(in crate::db) fn remote_changes(&self) -> broadcast::Receiver<RemoteChange> {
        self.0.listen.subscribe(&self.0.handle)
    }

    /// The listening session's pid while it listens (starting the listener).
    #[cfg(test)]
    pub(in crate::db) fn listener_pid(&self) -> watch::Receiver<Option<i32>> {
        self.0.listen.listening(&self.0.handle)
    }
}

/// Listens, and listens again after each loss, until the runtime stops.
async fn run(
    config: tokio_postgres::Config,
    changes: broadcast::Sender<RemoteChange>,
    pid: watch::Sender<Option<i32>>,
) {
    let mut retry = FIRST_RETRY;
    // Only the very first session starts with nothing missed.
    let mut missed = false;
    loop {
        let began = tokio::time::Instant::now();
        match session(&config, &changes, &pid, missed).await {
            Ok(lost) => {
                // A session that lasted is a new failure; one lost at once again and
                // again (a proxy that drops it, a flapping server) keeps backing off,
                // or every loss would wake every listener ten times a second.
                if began.elapsed() >= STABLE {
                    retry = FIRST_RETRY;
                }
                tracing::warn!(error = %lost, "lost the connection listening for order changes; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?retry, "cannot listen for order changes"),
        }
        pid.send_replace(None);
        missed = true;
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// One session: connects, listens, forwards until the connection is lost. `Ok` (with
/// why it ended) once it has listened, `Err` when it never got so far.
async fn session(
    config: &tokio_postgres::Config,
    changes: &broadcast::Sender<RemoteChange>,
    pid: &watch::Sender<Option<i32>>,
    missed: bool,
) -> Result<String, String> {
    let (client, mut connection) = tokio::time::timeout(SETUP_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| format!("no connection within {SETUP_TIMEOUT:?}"))?
        .map_err(|e| super::describe(&e))?;
    // The client's requests are only answered while the connection is polled, which
    // is also what yields the notifications.
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let setup = async {
        let row = client
            .query_one(&format!("SELECT {CHANNEL}, pg_backend_pid()"), &[])
            .await?;
        let channel: Option<String> = row.try_get(0)?;
        let backend: i32 = row.try_get(1)?;
        if let Some(channel) = &channel {
            // Hex digits after a fixed prefix: nothing to escape.
            client.batch_execute(&format!("LISTEN \"{channel}\"")).await?;
        }
        Ok::<_, tokio_postgres::Error>((channel, backend))
    };
    let setup = tokio::time::timeout(SETUP_TIMEOUT, setup);
    let mut setup = std::pin::pin!(setup);
    let (channel, backend) = loop {
        tokio::select! {
            done = &mut setup => match done {
                Ok(Ok((Some(channel), backend))) => break (channel, backend),
                Ok(Ok((None, _))) => return Err("the search path names no schema that exists".to_owned()),
                Ok(Err(e)) => return Err(super::describe(&e)),
                Err(_) => return Err(format!("LISTEN did not complete within {SETUP_TIMEOUT:?}")),
            },
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(super::describe(&e)),
                None => return Err("the server closed the connection".to_owned()),
            },
        }
    };
    pid.send_replace(Some(backend));
    tracing::debug!(backend, "listening for order changes");
    if missed {
        // No listener may be left waiting for a change sent while nobody listened.
        let _ = changes.send(RemoteChange::Resync);
    }
    loop {
        match messages.next().await {
            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == channel => {
                if let Some(id) = order_id(n.payload()) {
                    // Nobody listening is fine.
                    let _ = changes.send(RemoteChange::Order(id));
                }
            }
            // Notices, and nothing else can come on this session.
            Some(Ok(_)) => {}
            Some(Err(e)) => return Ok(super::describe(&e)),
            None => return Ok("the server closed the connection".to_owned()),
        }
    }
}

/// The order id a notification carries, if it is one: anyone who may connect can
/// notify on the channel, and what they send is looked at no further than this.
fn order_id(payload: &str) -> Option<OrderId> {
    if payload.len() > OrderId::MAX_LEN {
        return None;
    }
    OrderId::parse(payload).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;
    use crate::db::history::Cause;
    use crate::db::pg::testing::{TestSchema, SKIPPED};
    use crate::db::sql::tests::new_order;
    use crate::db::transitions::{self, Change, Outcome};
    use crate::db::{orders, Database, DbError, DbTarget};
    use crate::domain::TransitionSource;

    /// A migrated database on `schema`, its pool and runtime made off the test's runtime
    /// (they cannot start or stop inside another).
    async fn open(target: &DbTarget) -> Database {
        let target = target.clone();
        tokio::task::spawn_blocking(move || Database::open_target(&target))
            .await
            .unwrap()
            .unwrap()
    }

    async fn close(db: Database) {
        tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
    }

    /// Until the listener of `db` listens; its backend pid.
    async fn listening(db: &Database) -> i32 {
        let mut pid = db.listener_pid().expect("PostgreSQL");
        let ready = tokio::time::timeout(Duration::from_secs(20), pid.wait_for(Option::is_some))
            .await
            .expect("the listener listens within 20 s")
            .expect("the listener runs");
        ready.expect("some")
    }

    /// The next change that is not another's, within `within`.
    async fn next(changes: &mut broadcast::Receiver<RemoteChange>, within: Duration) -> Option<RemoteChange> {
        tokio::time::timeout(within, changes.recv())
            .await
            .ok()
            .map(|r| r.expect("the listener runs"))
    }

    /// Closes order `id` (a transition, as any other would be heard).
    fn closing(id: &OrderId) -> impl FnOnce(&crate::db::Tx<'_>) -> Result<Outcome, DbError> + Send + 'static {
        let id = id.clone();
        move |tx| {
            transitions::apply(
                tx,
                &id,
                &Change::Close,
                &Cause::system(TransitionSource::Api),
                chrono::Utc::now(),
            )
        }
    }

    #[tokio::test]
    async fn a_transition_is_heard_by_another_instance_at_its_commit_and_never_after_a_rollback() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let (a, b) = (open(&schema.target()).await, open(&schema.target()).await);
        let mut changes = b.remote_changes().expect("PostgreSQL");
        listening(&b).await;
        let (kept, undone) = (new_order(1, 100), new_order(2, 100));
        for order in [kept.clone(), undone.clone()] {
            a.write(move |tx| orders::insert(tx, &order, None)).await.unwrap();
        }
        assert!(
            matches!(changes.try_recv(), Err(TryRecvError::Empty)),
            "an insert is no transition"
        );

        // Applied, then the job fails: rolled back, nothing may be heard.
        let undo = closing(&undone.id);
        let failed = a
            .write(move |tx| {
                undo(tx)?;
                Err::<(), _>(DbError::Abandoned("on purpose".to_owned()))
            })
            .await;
        assert!(failed.is_err());
        // Applied, and held open before the commit: heard only once it commits.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (applied, seen_applied) = tokio::sync::oneshot::channel();
        let keep = closing(&kept.id);
        let writer = a.clone();
        let committing = tokio::spawn(async move {
            writer
                .write(move |tx| {
                    let outcome = keep(tx)?;
                    let _ = applied.send(());
                    wait.recv().map_err(|e| DbError::Task(e.to_string()))?;
                    Ok(outcome)
                })
                .await
        });
        seen_applied.await.unwrap();
        assert_eq!(
            next(&mut changes, Duration::from_millis(500)).await,
            None,
            "heard before the commit"
        );
        go.send(()).unwrap();
        assert!(matches!(
            committing.await.unwrap().unwrap(),
            Outcome::Applied { .. }
        ));

        assert_eq!(
            next(&mut changes, Duration::from_secs(10)).await,
            Some(RemoteChange::Order(kept.id.clone()))
        );
        // The rolled-back one would have come before it. A change that does not apply
        // (closing it again) tells nobody.
        let again = a.write(closing(&kept.id)).await.unwrap();
        assert!(matches!(again, Outcome::Duplicate { .. }), "{again:?}");
        assert_eq!(next(&mut changes, Duration::from_millis(300)).await, None);
        close(a).await;
        close(b).await;
    }

    #[tokio::test]
    async fn a_listener_whose_session_ends_reconnects_says_resync_and_ends_with_its_database() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = open(&schema.target()).await;
        let mut changes = db.remote_changes().expect("PostgreSQL");
        let first = listening(&db).await;
        let order = new_order(1, 100);
        let id = order.id.clone();
        db.write(move |tx| orders::insert(tx, &order, None))
            .await
            .unwrap();

        // In the select list, so that only the row found is ended (a condition's order
        // of evaluation is the planner's).
        let ended: Vec<i64> = db
            .read(move |tx| {
                tx.all(
                    "SELECT CAST(pg_terminate_backend(pid) AS INTEGER) FROM pg_stat_activity \
                     WHERE pid = ?1 AND application_name = 'kassa-listen'",
                    crate::db::sql::args![first],
                    |r| r.get_i64(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(ended, [1], "the listener's session, named kassa-listen");

        assert_eq!(
            next(&mut changes, Duration::from_secs(20)).await,
            Some(RemoteChange::Resync)
        );
        let second = listening(&db).await;
        assert_ne!(second, first);
        db.write(closing(&id)).await.unwrap();
        assert_eq!(
            next(&mut changes, Duration::from_secs(10)).await,
            Some(RemoteChange::Order(id))
        );

        // The last handle gone, the listener's session ends with it.
        close(db).await;
        let client = schema.connect().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left: i64 = client
                .query_one("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1", &[&second])
                .await
                .unwrap()
                .get(0);
            if left == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the listener outlived its database"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            matches!(changes.recv().await, Err(broadcast::error::RecvError::Closed)),
            "nothing more can come"
        );
    }

    #[test]
    fn only_an_order_id_is_taken_from_a_notification() {
        assert_eq!(order_id("ord_abc"), OrderId::parse("ord_abc").ok());
        for junk in [
            "",
            "ord abc",
            "ord_'x",
            &"a".repeat(OrderId::MAX_LEN + 1),
            &"x".repeat(8000),
        ] {
            assert_eq!(order_id(junk), None, "{junk}");
        }
    }
}
