//! `CERTFLEET_TEST_STOP_BEFORE_FENCED_PUBLISH=<name>`: a test hook (docs/testing.md) that
//! stops this process with SIGSTOP once, when the certificate whose first name is `<name>`
//! reaches the fleet's publish window (staged, fenced store writes next). A test then lets
//! the lease run out, lets another node take the job over, and resumes this one.

use std::sync::atomic::{AtomicBool, Ordering};

use certfleet_batch::{Job, WindowHook};

pub const ENV: &str = "CERTFLEET_TEST_STOP_BEFORE_FENCED_PUBLISH";

#[derive(Debug)]
pub struct StopAtWindow {
    name: String,
    done: AtomicBool,
}

impl StopAtWindow {
    /// From the environment; `None` when unset (every normal run).
    pub fn from_env() -> Option<StopAtWindow> {
        let name = std::env::var(ENV).ok().filter(|n| !n.is_empty())?;
        Some(StopAtWindow {
            name,
            done: AtomicBool::new(false),
        })
    }
}

impl WindowHook for StopAtWindow {
    fn before_fenced_publish(&self, job: &Job) {
        if job.spec.names.first() != Some(&self.name) || self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        // The test waits for this line before it lets the lease run out.
        eprintln!(
            "{ENV}: stopping before the fenced publish of {} (job {})",
            self.name, job.id
        );
        // SAFETY: raise(3) with a valid signal; SIGSTOP stops the whole process, as an
        // operator's or a hypervisor's pause would.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}
