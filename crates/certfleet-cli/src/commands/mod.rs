//! One module per top-level command.

pub mod account;
pub mod batch;
pub mod certificates;
pub mod issue;
pub mod key;
pub mod persist;
pub mod plugin;
pub mod renew;
pub mod revoke;

/// Prints a JSON value to stdout (the machine-readable result of a command).
fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
