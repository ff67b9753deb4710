//! Runs the background loops as named jobs and keeps them running: a job that ends or
//! panics is logged by name and started again after a pause that grows while it keeps
//! failing. Stopping the supervisor stops every job and waits until each is gone.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::{Id, JoinError, JoinSet};

type Started = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The first pause before a restart; it doubles with each failure in a row.
pub const FIRST_RESTART_AFTER: Duration = Duration::from_secs(1);
const LONGEST_RESTART_AFTER: Duration = Duration::from_secs(60);
/// A job that ran this long before failing starts over with the shortest pause.
const HEALTHY_AFTER: Duration = Duration::from_secs(300);

/// A background loop, by name, and how to start it (again).
#[derive(Clone)]
pub struct Job {
    name: String,
    start: Arc<dyn Fn() -> Started + Send + Sync>,
}

impl Job {
    pub fn new<F, Fut>(name: impl Into<String>, start: F) -> Job
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Job {
            name: name.into(),
            start: Arc::new(move || Box::pin(start())),
        }
    }
}

#[derive(Default)]
pub struct Supervisor {
    jobs: Vec<Job>,
}

/// One job's run: when it started, and how many failures in a row came before it.
struct Run {
    job: usize,
    started: Instant,
    failures: u32,
}

fn restart_after(failures: u32) -> Duration {
    FIRST_RESTART_AFTER
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(LONGEST_RESTART_AFTER)
}

/// What a panic said, when it said it as text.
fn panic_message(e: JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic".to_owned()),
        Err(e) => e.to_string(),
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    pub fn add(&mut self, job: Job) {
        self.jobs.push(job);
    }

    /// Runs every job until `stop` resolves, then aborts them and returns once every one
    /// (and whatever it holds, such as a database handle) is gone.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut set = JoinSet::new();
        let mut runs: HashMap<Id, Run> = HashMap::new();
        for (job, spec) in self.jobs.iter().enumerate() {
            let handle = set.spawn((spec.start)());
            runs.insert(
                handle.id(),
                Run {
                    job,
                    started: Instant::now(),
                    failures: 0,
                },
            );
        }
        tokio::pin!(stop);
        loop {
            let (id, how) = tokio::select! {
                () = &mut stop => break,
                Some(done) = set.join_next_with_id() => match done {
                    Ok((id, ())) => (id, "ended".to_owned()),
                    Err(e) if e.is_panic() => (e.id(), format!("panicked: {}", panic_message(e))),
                    Err(e) => (e.id(), e.to_string()),
                },
            };
            let Some(run) = runs.remove(&id) else {
                continue;
            };
            let spec = &self.jobs[run.job];
            let failures = if run.started.elapsed() >= HEALTHY_AFTER {
                1
            } else {
                run.failures + 1
            };
            let pause = restart_after(failures);
            tracing::error!(job = %spec.name, failures, restart_in_ms = pause.as_millis() as u64, "background job {how}; restarting it");
            let again = (spec.start)();
            let handle = set.spawn(async move {
                tokio::time::sleep(pause).await;
                again.await;
            });
            runs.insert(
                handle.id(),
                Run {
                    job: run.job,
                    started: Instant::now() + pause,
                    failures,
                },
            );
        }
        set.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::{mpsc, oneshot};
    use tokio::task::JoinHandle;

    use super::*;

    /// How a counted job's first run ends; later runs go on until stopped.
    #[derive(Clone, Copy)]
    enum FirstRun {
        Panics,
        Returns,
    }

    /// A job that reports the number of each run as it starts.
    fn counted(first: FirstRun, runs: Arc<AtomicUsize>, report: mpsc::UnboundedSender<usize>) -> Job {
        Job::new("counted", move || {
            let (runs, report) = (runs.clone(), report.clone());
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = report.send(n);
                match (n, first) {
                    (1, FirstRun::Panics) => panic!("the first run fails"),
                    (1, FirstRun::Returns) => {}
                    _ => std::future::pending::<()>().await,
                }
            }
        })
    }

    /// Runs `jobs` under a supervisor until the returned sender is used.
    fn supervise(jobs: Vec<Job>) -> (oneshot::Sender<()>, JoinHandle<()>) {
        let mut supervisor = Supervisor::new();
        for job in jobs {
            supervisor.add(job);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(supervisor.run(async {
            let _ = stopped.await;
        }));
        (stop, running)
    }

    /// Waits for what a job reports; the limit only keeps a broken supervisor from
    /// hanging the test run.
    async fn next(reports: &mut mpsc::UnboundedReceiver<usize>) -> usize {
        tokio::time::timeout(Duration::from_secs(30), reports.recv())
            .await
            .expect("the job never reported")
            .expect("the job's channel closed")
    }

    #[test]
    fn the_pause_before_a_restart_doubles_up_to_a_minute() {
        let pauses: Vec<u64> = (1..=9).map(|n| restart_after(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(restart_after(u32::MAX), LONGEST_RESTART_AFTER);
    }

    #[tokio::test]
    async fn a_job_that_panics_is_started_again_and_the_others_keep_running() {
        let (report, mut reports) = mpsc::unbounded_channel();
        let runs = Arc::new(AtomicUsize::new(0));
        let steady_starts = Arc::new(AtomicUsize::new(0));
        let steady = {
            let steady_starts = steady_starts.clone();
            Job::new("steady", move || {
                steady_starts.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>()
            })
        };
        let (stop, running) = supervise(vec![counted(FirstRun::Panics, runs.clone(), report), steady]);

        assert_eq!(next(&mut reports).await, 1);
        assert_eq!(next(&mut reports).await, 2, "started again after the panic");

        stop.send(()).unwrap();
        running.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(
            steady_starts.load(Ordering::SeqCst),
            1,
            "the other job ran on untouched"
        );
    }

    #[tokio::test]
    async fn a_job_that_returns_is_started_again() {
        let (report, mut reports) = mpsc::unbounded_channel();
        let runs = Arc::new(AtomicUsize::new(0));
        let (stop, running) = supervise(vec![counted(FirstRun::Returns, runs.clone(), report)]);

        assert_eq!(next(&mut reports).await, 1);
        assert_eq!(next(&mut reports).await, 2, "started again after it returned");

        stop.send(()).unwrap();
        running.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stopping_the_supervisor_drops_every_job_before_it_returns() {
        let held = Arc::new(());
        let job = {
            let held = held.clone();
            Job::new("holder", move || {
                let held = held.clone();
                async move {
                    let _keep = held;
                    std::future::pending::<()>().await;
                }
            })
        };
        let (stop, running) = supervise(vec![job]);
        // Held by the test, the job's recipe and its running future.
        while Arc::strong_count(&held) < 3 {
            tokio::task::yield_now().await;
        }
        stop.send(()).unwrap();
        running.await.unwrap();
        assert_eq!(Arc::strong_count(&held), 1, "a job outlived its supervisor");
    }
}
