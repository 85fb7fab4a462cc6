//! `batch run --test-stop-before-fenced-publish <name>`, compiled only with the feature
//! `test-hooks` (test builds; a release binary has no such flag and reads no test hook):
//! stops this process with SIGSTOP once, when the certificate whose first name is `<name>`
//! reaches the fleet's publish window (staged, fenced store writes next). A test then lets
//! the lease run out, lets another node take the job over, and resumes this one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use certfleet_batch::{Job, Orchestrator, WindowHook};

use crate::cli::BatchRunArgs;

#[derive(Debug)]
pub struct StopAtWindow {
    name: String,
    done: AtomicBool,
}

/// `orchestrator` with the hook when `args` asks for it.
pub fn attach(orchestrator: Orchestrator, args: &BatchRunArgs) -> Orchestrator {
    match args.test_stop_before_fenced_publish.clone() {
        Some(name) => orchestrator.with_window_hook(Arc::new(StopAtWindow {
            name,
            done: AtomicBool::new(false),
        })),
        None => orchestrator,
    }
}

impl WindowHook for StopAtWindow {
    fn before_fenced_publish(&self, job: &Job) {
        if job.spec.names.first() != Some(&self.name) || self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        // The test waits for this line before it lets the lease run out.
        eprintln!(
            "test hook: stopping before the fenced publish of {} (job {})",
            self.name, job.id
        );
        // SAFETY: raise(3) with a valid signal; SIGSTOP stops the whole process, as an
        // operator's or a hypervisor's pause would.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}
