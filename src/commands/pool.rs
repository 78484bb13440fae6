//! The one pool of blocking workers behind the commands that move many files or packs (backup,
//! restore, verify): each worker takes jobs off a shared queue until it is empty, with progress
//! reported on the way.
//!
//! Workers are blocking threads (`spawn_blocking`), not tasks: they read and write files with
//! plain system calls and compress or seal blocks on the CPU, so an async executor thread must
//! never wait for them. They reach the store through `Handle::block_on`.

use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One worker's state: what it keeps across jobs (a buffer, a pack writer) and what it gives back.
pub trait Worker: Send + 'static {
    type Job: Send + 'static;
    type Out: Send + 'static;
    /// Does one job. `done` is the progress counter the reporter shows against the total.
    fn work(&mut self, job: Self::Job, done: &AtomicU64) -> Result<()>;
    /// After the queue is empty (or after a failure elsewhere): what the worker has to show.
    fn finish(self) -> Result<Self::Out>;
}

/// The jobs and the progress shown while they are done.
pub struct Jobs<J> {
    /// Taken from the end: put first what should be done last.
    pub queue: Vec<J>,
    /// Names the work in progress lines ("backup", "restore", "verify").
    pub what: &'static str,
    /// What `done` counts up to (bytes, usually).
    pub total: u64,
    /// Shared with the caller, which may count into it outside the pool too.
    pub done: Arc<AtomicU64>,
}

struct Queue<J> {
    jobs: Mutex<Vec<J>>,
    /// Set on the first failure: the other workers stop taking jobs, since the command fails
    /// anyway and each further job is time the operator waits for nothing.
    failed: AtomicBool,
}

/// Runs every job on the workers (one thread each) and returns their outputs in worker order.
/// The first failure is returned after every worker has stopped, so that no thread still
/// writes when the caller cleans up or reports.
pub async fn run<W: Worker>(jobs: Jobs<W::Job>, workers: Vec<W>) -> Result<Vec<W::Out>> {
    let queue = Arc::new(Queue {
        jobs: Mutex::new(jobs.queue),
        failed: AtomicBool::new(false),
    });
    let reporter = crate::progress::report(jobs.what, jobs.total, Arc::clone(&jobs.done));
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let (queue, done) = (Arc::clone(&queue), Arc::clone(&jobs.done));
            tokio::task::spawn_blocking(move || {
                let worked = drain(&mut w, &queue, &done);
                if worked.is_err() {
                    queue.failed.store(true, Ordering::Relaxed);
                }
                // A worker that failed still finishes: its writer may hold buffers to release.
                let out = w.finish();
                worked.and(out)
            })
        })
        .collect();
    let mut outs = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(o)) => outs.push(o),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err
                    .get_or_insert(Error::internal(format!("{} worker failed: {e}", jobs.what)));
            }
        }
    }
    drop(reporter);
    match first_err {
        Some(e) => Err(e),
        None => Ok(outs),
    }
}

fn drain<W: Worker>(w: &mut W, queue: &Queue<W::Job>, done: &AtomicU64) -> Result<()> {
    loop {
        if queue.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some(job) = queue.jobs.lock().unwrap().pop() else {
            return Ok(());
        };
        w.work(job, done)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Summer {
        sum: u64,
        fail_on: Option<u64>,
    }

    impl Worker for Summer {
        type Job = u64;
        type Out = u64;
        fn work(&mut self, job: u64, done: &AtomicU64) -> Result<()> {
            if self.fail_on == Some(job) {
                return Err(Error::internal(format!("job {job} failed")));
            }
            self.sum += job;
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn finish(self) -> Result<u64> {
            Ok(self.sum)
        }
    }

    fn jobs(n: u64) -> Jobs<u64> {
        Jobs {
            queue: (1..=n).collect(),
            what: "test",
            total: n,
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_is_done_once() {
        let j = jobs(1000);
        let done = Arc::clone(&j.done);
        let workers = (0..4)
            .map(|_| Summer {
                sum: 0,
                fail_on: None,
            })
            .collect();
        let outs = run(j, workers).await.unwrap();
        assert_eq!(outs.len(), 4);
        assert_eq!(outs.iter().sum::<u64>(), 1000 * 1001 / 2);
        assert_eq!(done.load(Ordering::Relaxed), 1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_stops_the_others_and_is_returned() {
        let j = jobs(100_000);
        let done = Arc::clone(&j.done);
        // Jobs are taken from the end: the first worker to take 99_990 fails early.
        let workers = (0..3)
            .map(|_| Summer {
                sum: 0,
                fail_on: Some(99_990),
            })
            .collect();
        let e = run(j, workers).await.unwrap_err();
        assert!(e.to_string().contains("job 99990 failed"), "{e}");
        assert!(done.load(Ordering::Relaxed) < 100_000);
    }
}
