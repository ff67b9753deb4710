//! Singleton jobs on a database other processes may share (the command line beside the
//! server today, several servers later): a pass runs only while this process holds the
//! job's lease (`db::leases`), so no two processes sweep at once. The holder renews the
//! lease with every pass, and while a long pass runs; a process that dies stops renewing
//! and another takes over once the lease has run out. A process that does not hold it
//! skips the pass and tries again at its next one.

use std::future::Future;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::core::Core;
use crate::db::{leases, DbError};

/// How long a lease holds without renewal: how long a dead holder's jobs wait before
/// another process takes them over. Leases use each process's own clock, so clocks that
/// drift apart by this much would let two processes run a pass at once.
pub const TTL: Duration = Duration::seconds(30);
/// A long pass renews its lease this often, a third of `TTL`: one late or failed
/// renewal does not lose it.
const RENEW_EVERY: StdDuration = StdDuration::from_secs(10);

fn renew_every() -> Duration {
    Duration::from_std(RENEW_EVERY).unwrap_or(TTL)
}

/// Takes the lease `name` for this process at `now`, or renews it; true when held.
pub async fn take(core: &Core, name: &'static str, now: DateTime<Utc>) -> Result<bool, DbError> {
    let holder = core.instance.clone();
    core.db
        .write(move |tx| leases::take(tx, name, holder.as_str(), now, TTL))
        .await
}

/// Runs `pass` if this process holds (or can take) the lease `name` at `now`; `None`
/// when another process holds it and nothing ran. While the pass runs the lease is
/// renewed; should a renewal find it taken over (this process stalled past `TTL`), or
/// fail for so long that the lease may run out before the next try, the pass is dropped
/// at its next await and `None` is returned, as another process may sweep the same rows.
/// Dropping stops only the async work: a blocking task the pass started (the backup's
/// `spawn_blocking` copy) runs on to its end, detached. The pass's own database writes
/// are each one transaction, guarded where another process could race them.
pub async fn run_leased<R>(
    core: &Core,
    name: &'static str,
    now: DateTime<Utc>,
    pass: impl Future<Output = Result<R, DbError>>,
) -> Result<Option<R>, DbError> {
    if !take(core, name, now).await? {
        tracing::debug!(job = name, "another instance holds the job's lease; pass skipped");
        return Ok(None);
    }
    let keep = async {
        let mut held_from = now;
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let at = core.now();
            match take(core, name, at).await {
                Ok(true) => held_from = at,
                Ok(false) => {
                    tracing::warn!(
                        job = name,
                        "the job's lease was taken over during a pass (this instance stalled past its TTL); the pass stops, the new holder carries on"
                    );
                    return;
                }
                // The lease may run out before the next renewal: stop while still sure
                // no other process sweeps beside this pass.
                Err(e) if core.now() >= held_from + TTL - renew_every() => {
                    tracing::warn!(job = name, error = %e, "cannot renew the job's lease in time; the pass stops");
                    return;
                }
                Err(e) => tracing::warn!(job = name, error = %e, "cannot renew the job's lease"),
            }
        }
    };
    tokio::select! {
        done = pass => done.map(Some),
        () = keep => Ok(None),
    }
}
