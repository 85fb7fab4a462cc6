//! `batch run --test-stop-before-fenced-publish <name>`, `--test-stop-before-key-recorded
//! <name>` and `--test-stop-before-new-order <name>`, compiled only with the feature
//! `test-hooks` (test builds; a release binary has no such flags and reads no test hook):
//! stops this process with SIGSTOP once, when the certificate whose first name is `<name>`
//! reaches that window of the fleet (staged, fenced store writes next; or its key
//! generated, or restored from the store, and not yet recorded; or `ordering` written and
//! newOrder next). A test then lets the lease run out, lets another node take the job over,
//! and resumes this one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use certfleet_batch::{Job, Orchestrator, WindowHook};

use crate::cli::BatchRunArgs;

/// The window a test stops a node in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    FencedPublish,
    KeyRecorded,
    NewOrder,
}

impl Window {
    fn what(self) -> &'static str {
        match self {
            Window::FencedPublish => "the fenced publish",
            Window::KeyRecorded => "recording the key",
            Window::NewOrder => "sending newOrder",
        }
    }
}

#[derive(Debug)]
pub struct StopAtWindow {
    name: String,
    window: Window,
    done: AtomicBool,
}

/// `orchestrator` with the hook when `args` asks for it.
pub fn attach(orchestrator: Orchestrator, args: &BatchRunArgs) -> Orchestrator {
    let asked = [
        (&args.test_stop_before_fenced_publish, Window::FencedPublish),
        (&args.test_stop_before_key_recorded, Window::KeyRecorded),
        (&args.test_stop_before_new_order, Window::NewOrder),
    ];
    match asked
        .into_iter()
        .find_map(|(n, w)| n.clone().map(|n| (n, w)))
    {
        Some((name, window)) => orchestrator.with_window_hook(Arc::new(StopAtWindow {
            name,
            window,
            done: AtomicBool::new(false),
        })),
        None => orchestrator,
    }
}

impl StopAtWindow {
    fn stop_at(&self, window: Window, job: &Job) {
        if window != self.window
            || job.spec.names.first() != Some(&self.name)
            || self.done.swap(true, Ordering::SeqCst)
        {
            return;
        }
        // The test waits for this line before it lets the lease run out.
        eprintln!(
            "test hook: stopping before {} of {} (job {})",
            window.what(),
            self.name,
            job.id
        );
        // SAFETY: raise(3) with a valid signal; SIGSTOP stops the whole process, as an
        // operator's or a hypervisor's pause would.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

impl WindowHook for StopAtWindow {
    fn before_new_order(&self, job: &Job) {
        self.stop_at(Window::NewOrder, job);
    }

    fn before_fenced_publish(&self, job: &Job) {
        self.stop_at(Window::FencedPublish, job);
    }

    fn before_key_recorded(&self, job: &Job) {
        self.stop_at(Window::KeyRecorded, job);
    }
}
