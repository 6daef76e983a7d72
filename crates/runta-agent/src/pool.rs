//! Connection threads that are kept and reused. Starting a thread (stack mmap,
//! guard page, clone) and ending it (munmap, TLB shootdown) cost more than a
//! short command itself; idle workers wait for the next connection instead and
//! end after a while without work, so an idle runtime holds few threads.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker waits for work before it ends: long enough to
/// carry a burst of commands, short enough that an idle runtime soon holds
/// no thread but the main one (each costs a kernel stack and a task).
const IDLE: Duration = Duration::from_secs(2);

pub struct Pool {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    idle: usize,
}

impl Pool {
    pub fn new() -> &'static Pool {
        Box::leak(Box::new(Pool {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                idle: 0,
            }),
            ready: Condvar::new(),
        }))
    }

    /// Runs `job` on an idle worker, or on a new one when all are busy: a
    /// connection never waits for another to finish.
    pub fn run(&'static self, job: impl FnOnce() + Send + 'static) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.idle > s.jobs.len() {
            s.jobs.push_back(Box::new(job));
            drop(s);
            self.ready.notify_one();
            return;
        }
        drop(s);
        let spawned = std::thread::Builder::new().spawn(move || {
            job();
            self.work();
        });
        if let Err(e) = spawned {
            eprintln!("runta-agent: cannot start a thread: {e}");
        }
    }

    fn work(&'static self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = s.jobs.pop_front() {
                drop(s);
                job();
                s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            s.idle += 1;
            let (next, timeout) = self
                .ready
                .wait_timeout(s, IDLE)
                .unwrap_or_else(|e| e.into_inner());
            s = next;
            s.idle -= 1;
            if timeout.timed_out() && s.jobs.is_empty() {
                return;
            }
        }
    }
}
