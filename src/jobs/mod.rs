//! Background work. Each job is a `try_run_once(now)` that tests drive with a clock
//! they control, plus a loop that only sleeps when there is nothing to do; the
//! supervisor runs the loops and restarts one that dies. The loops of singleton jobs
//! run each pass under the job's lease (`lease`), through the job's `pass`.

pub mod backup;
pub mod expiry;
pub mod late_checks;
pub mod lease;
pub mod notification_retention;
pub mod refund_settlement;
pub mod supervisor;
