//! What a certificate request asks for, as types parsed once at the edge (command line,
//! configuration, batch file) and persisted as such: [`ChallengeKind`] and [`KeyChoice`].
//! A leaf beside `certfleet-keys`, so the order flow (`certfleet-issue`) and the state
//! store (`certfleet-store`) share them without depending on each other.

mod challenge;
mod key_choice;

pub use challenge::ChallengeKind;
pub use key_choice::KeyChoice;
