//! Applying a transition the one way: the guarded change and its history row
//! (`db::transitions`), the webhook it announces (rendered here, queued in the same
//! transaction), and, once that transaction has committed, the post-commit hook.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::core::Core;
use crate::db::history::Cause;
use crate::db::transitions::{self, Change, Checked, Expected, Outcome};
use crate::db::{outbox, DbError, DbResult, Tx};
use crate::domain::{EventType, Order, OrderId, OrderStatus, TransitionSource};
use crate::webhooks::payload;

/// The transitions one transaction applies.
pub struct Changes {
    public_url: String,
    applied: Vec<(Order, OrderStatus, TransitionSource)>,
}

impl Changes {
    /// `public_url` goes into the payloads' `checkout_url`.
    pub fn new(public_url: impl Into<String>) -> Changes {
        Changes {
            public_url: public_url.into(),
            applied: Vec::new(),
        }
    }

    /// Applies `change` inside `tx` and, when it applied, queues its webhook there too.
    pub fn apply(
        &mut self,
        tx: &Tx<'_>,
        order_id: &OrderId,
        change: &Change,
        cause: &Cause,
        now: DateTime<Utc>,
    ) -> DbResult<Outcome> {
        let outcome = transitions::apply(tx, order_id, change, cause, now)?;
        if let Outcome::Applied { from, order } = &outcome {
            self.announce(tx, order, *from, cause.source, now)?;
        }
        Ok(outcome)
    }

    /// As `apply`, only when the order is also what `expected` says
    /// (`transitions::apply_checked`).
    pub fn apply_checked(
        &mut self,
        tx: &Tx<'_>,
        order_id: &OrderId,
        change: &Change,
        expected: &Expected,
        now: DateTime<Utc>,
        cause: impl FnOnce(&Order, OrderStatus) -> DbResult<Cause>,
    ) -> DbResult<Checked> {
        // The cause is only made once the change applied; keep its source for the hook.
        let mut source = None;
        let checked = transitions::apply_checked(tx, order_id, change, expected, now, |order, from| {
            let cause = cause(order, from)?;
            source = Some(cause.source);
            Ok(cause)
        })?;
        if let Checked::Applied { from, order } = &checked {
            let source = source
                .ok_or_else(|| DbError::Corrupt("a transition applied without its cause".to_owned()))?;
            self.announce(tx, order, *from, source, now)?;
        }
        Ok(checked)
    }

    /// Queues the webhook an applied transition announces, and remembers it for the
    /// post-commit hook.
    fn announce(
        &mut self,
        tx: &Tx<'_>,
        order: &Order,
        from: OrderStatus,
        source: TransitionSource,
        now: DateTime<Utc>,
    ) -> DbResult<()> {
        if let Some(event) = EventType::for_new_status(order.status) {
            let body = payload::render(order, event, now, &self.public_url)
                .map_err(|e| DbError::Abandoned(format!("webhook payload: {e}")))?;
            outbox::enqueue(tx, &order.id, event, &body, now)?;
        }
        self.applied.push((order.clone(), from, source));
        Ok(())
    }

    /// What was applied, as `(order, from, source)`.
    pub fn applied(&self) -> &[(Order, OrderStatus, TransitionSource)] {
        &self.applied
    }
}

/// Runs `work` as one write job in which transitions go through `Changes`, then tells
/// the post-commit hook about each one applied: only after the commit, never for a job
/// that failed.
pub fn write<R, F>(core: &Core, work: F) -> impl Future<Output = DbResult<R>> + Send + 'static
where
    R: Send + 'static,
    F: FnOnce(&Tx<'_>, &mut Changes) -> DbResult<R> + Send + 'static,
{
    let (db, hooks) = (core.db.clone(), core.hooks.clone());
    let mut changes = Changes::new(core.public_url());
    async move {
        let (result, applied) = db
            .write(move |tx| {
                let result = work(tx, &mut changes)?;
                Ok((result, changes.applied))
            })
            .await?;
        for (order, from, source) in &applied {
            hooks.applied(order, *from, *source);
        }
        Ok(result)
    }
}

/// Applies one change in a transaction of its own.
pub async fn apply(
    core: &Core,
    order_id: &OrderId,
    change: Change,
    cause: Cause,
    now: DateTime<Utc>,
) -> DbResult<Outcome> {
    let id = order_id.clone();
    write(core, move |tx, changes| {
        changes.apply(tx, &id, &change, &cause, now)
    })
    .await
}
