//! Background work. Each job is a `try_run_once(now)` that tests drive with a clock
//! they control, plus a loop that only sleeps when there is nothing to do.

pub mod checks;
pub mod expiry;
