//! End-to-end tests: the real `certfleet` binary (build it first:
//! `cargo build -p certfleet-cli`) against a real Pebble started per test on loopback.
//!
//! Needs the Debian packages `pebble` and `openssl`; without them the tests skip locally and
//! fail under CI (`CI` set).

mod a2c_env;
mod a2c_interop;
mod account;
mod atomic;
mod bad_input;
mod batch;
mod batch_fleet_hosts;
mod batch_limits;
mod batch_operations;
mod batch_pending;
mod batch_renewal;
mod batch_resume;
mod batch_scale_out;
mod batch_scale_out_support;
mod bundles;
mod common;
mod dns01;
mod dns01_batch;
mod dns01_errors;
mod dns01_gss;
mod dns01_lab;
mod dns01_lab_batch;
mod dns01_plugins;
mod dns_api_cloudflare;
mod dns_api_powerdns;
mod dns_api_route53;
mod dns_api_support;
mod dns_env;
mod dns_persist;
mod hardening;
mod harness;
mod hsm;
mod install;
mod issue;
mod operations;
mod pins;
mod reorder;
mod revoke;
mod tokens;
mod tpm;
mod webroot_user;
