//! End-to-end tests: the real `certfleet` binary (build it first:
//! `cargo build -p certfleet-cli`) against a real Pebble started per test on loopback.
//!
//! Needs the Debian packages `pebble` and `openssl`; without them the tests skip locally and
//! fail under CI (`CI` set).

mod account;
mod atomic;
mod bad_input;
mod common;
mod harness;
mod issue;
mod revoke;
