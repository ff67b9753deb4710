//! Background work. Each job is a `try_run_once(now)` that tests drive with a clock
//! they control, plus a loop that only sleeps when there is nothing to do; the
//! supervisor runs the loops and restarts one that dies.

pub mod backup;
pub mod expiry;
pub mod late_checks;
pub mod notification_retention;
pub mod refund_settlement;
pub mod supervisor;
