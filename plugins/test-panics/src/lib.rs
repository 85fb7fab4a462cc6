//! A test plugin: panics in the entry point its `panic_in` setting names (`create`,
//! `present`, `cleanup` or `check`; default `present`) and otherwise accepts everything. Used
//! by the end-to-end tests to show the host survives a panicking plugin and reports it.

use certfleet_plugin_abi::{CheckResult, Logger, Plugin, PluginError, TxtRecord, export_plugin};

/// The test plugin's instance.
pub struct Panics {
    panic_in: String,
}

impl std::fmt::Debug for Panics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Panics")
            .field("panic_in", &self.panic_in)
            .finish_non_exhaustive()
    }
}

impl Plugin for Panics {
    const NAME: &'static str = "test-panics";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn create(config: serde_json::Value, _log: Logger) -> Result<Self, PluginError> {
        let panic_in = config
            .get("panic_in")
            .and_then(|v| v.as_str())
            .unwrap_or("present")
            .to_owned();
        if panic_in == "create" {
            panic!("test-panics: deliberate panic in create");
        }
        Ok(Panics { panic_in })
    }

    fn present(&self, _records: &[TxtRecord]) -> Result<(), PluginError> {
        if self.panic_in == "present" {
            panic!("test-panics: deliberate panic in present");
        }
        Ok(())
    }

    fn cleanup(&self, _records: &[TxtRecord]) -> Result<(), PluginError> {
        if self.panic_in == "cleanup" {
            panic!("test-panics: deliberate panic in cleanup");
        }
        Ok(())
    }

    fn check(&self) -> Result<Vec<CheckResult>, PluginError> {
        if self.panic_in == "check" {
            panic!("test-panics: deliberate panic in check");
        }
        Ok(Vec::new())
    }
}

export_plugin!(Panics);
