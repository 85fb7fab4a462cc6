//! SIGINT/SIGTERM. Most commands are cut short at once (their future is dropped and the
//! key hardware released). `batch run` stops gracefully instead: the first signal asks it
//! to claim nothing more, let the jobs in flight reach a checkpoint, write its report and
//! exit with 128 + the signal number; a second signal cuts it short like any command.

use tokio::sync::watch;

/// A command cut short by SIGINT or SIGTERM: exit status 128 + signal number.
#[derive(Debug, Clone, Copy)]
pub struct Interrupted(pub u8, pub &'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}; key hardware released", self.1)
    }
}

impl std::error::Error for Interrupted {}

/// The first signal a graceful command received, readable by that command.
#[derive(Debug, Clone)]
pub struct Stop {
    tx: watch::Sender<Option<Interrupted>>,
}

impl Stop {
    pub fn new() -> Stop {
        Stop {
            tx: watch::channel(None).0,
        }
    }

    /// Records the signal; false if one was already recorded.
    pub fn request(&self, signal: Interrupted) -> bool {
        self.tx.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            *s = Some(signal);
            true
        })
    }

    /// The recorded signal, if any.
    pub fn requested(&self) -> Option<Interrupted> {
        *self.tx.borrow()
    }

    /// A receiver that turns true once a signal is recorded.
    pub fn flag(&self) -> watch::Receiver<bool> {
        let mut rx = self.tx.subscribe();
        let (flag_tx, flag_rx) = watch::channel(rx.borrow().is_some());
        tokio::spawn(async move {
            // Bounded: ends when the signal is recorded, the Stop is dropped, or nobody
            // listens any more.
            while !flag_tx.is_closed() {
                if rx.borrow_and_update().is_some() {
                    let _ = flag_tx.send(true);
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        flag_rx
    }
}

/// A command that ended on purpose without finishing (a batch stopped by a signal or by
/// `--max-wait`): the message is printed as the error, the process exits with `code`.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}
