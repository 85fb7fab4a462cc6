//! Shared pieces of the DNS-01 end-to-end tests: BIND + Pebble resolving through it, a
//! config file naming the built plugins, and assertions on what the runs leave behind.

use std::net::SocketAddr;
use std::path::PathBuf;

use certfleet_testenv::{Bind, BindOptions, PebbleOptions, plugin_dir, require_tool};

use crate::common::{Env, Run};

/// Checks the tools the BIND tests need; `false` means skip (never under CI).
pub fn bind_tools_present() -> bool {
    require_tool("named", "bind9")
        && require_tool("tsig-keygen", "bind9")
        && require_tool("named-checkconf", "bind9-utils")
        && require_tool("dig", "bind9-dnsutils")
}

/// A Pebble whose DNS is a private BIND (its primary, or its recursive resolver).
#[derive(Debug)]
pub struct DnsEnv {
    pub env: Env,
    pub bind: Bind,
}

impl DnsEnv {
    /// Starts BIND with `options` and Pebble resolving through the primary (or through the
    /// resolver when `options.resolver`); registers an account. `None` means skip.
    pub async fn start(options: BindOptions) -> Option<DnsEnv> {
        if !bind_tools_present() {
            return None;
        }
        let bind = Bind::start(options).await.expect("BIND starts");
        let dns = bind.resolver().unwrap_or_else(|| bind.primary());
        let env = Env::start(PebbleOptions::default().dns_server(dns.to_string())).await?;
        env.register_account().await;
        Some(DnsEnv { env, bind })
    }

    /// `[dns01]` settings: the built plugins, a propagation check that asks the primary (and
    /// the secondary, when there is one) through the test override of NS addresses.
    pub fn dns01_section(&self, timeout_secs: u64) -> String {
        let overrides: Vec<String> = self
            .bind
            .nameserver_addresses()
            .into_iter()
            .map(|(host, addr)| format!("\"{host}\" = [\"{addr}\"]"))
            .collect();
        format!(
            "[dns01]\nplugin_dirs = [\"{}\"]\n[dns01.propagation]\ncheck = true\ntimeout_secs = {timeout_secs}\n\
             interval_millis = 200\nquery_timeout_millis = 1000\ndiscovery_resolvers = [\"{}\"]\n\
             nameserver_addresses = {{ {} }}\n",
            plugin_dir().display(),
            self.bind.primary(),
            overrides.join(", ")
        )
    }

    /// `[plugins.rfc2136]` with the key file of `key`, updates sent to the primary.
    pub fn rfc2136_with_key_file(&self, key: &str) -> String {
        format!(
            "[plugins.rfc2136]\nserver = \"{}\"\nkey_file = \"{}\"\n",
            self.bind.primary(),
            self.bind.key_file(key).expect("key file").display()
        )
    }

    /// Writes `<tmp>/<file>` with `sections` and returns its path.
    pub fn config(&self, file: &str, sections: &[&str]) -> PathBuf {
        let path = self.env.path(file);
        std::fs::write(&path, sections.join("\n")).expect("write config");
        path
    }

    /// `issue --challenge dns-01 --dns-plugin PLUGIN` for `names` into `<tmp>/<out>`.
    pub async fn issue(
        &self,
        config: &std::path::Path,
        plugin: &str,
        names: &[&str],
        out: &str,
        extra: &[&str],
    ) -> Run {
        let directory = self.env.pebble.directory_url();
        let run = issue_dns01(&self.env, &directory, config, plugin, names, out, extra).await;
        if !run.status.success() {
            eprintln!("(BIND logs:)\n{}", self.bind.log_tails(15));
        }
        run
    }

    /// Asserts no `_acme-challenge` TXT is left for `names` on `server`.
    #[track_caller]
    pub fn assert_no_txt(&self, server: SocketAddr, names: &[&str]) {
        for n in names {
            let base = n.trim_start_matches("*.");
            let owner = format!("_acme-challenge.{base}.");
            let left = self.bind.txt(server, &owner).expect("dig TXT");
            assert!(
                left.is_empty(),
                "{owner} still has TXT {left:?} on {server}"
            );
        }
    }
}

/// `issue --challenge dns-01 --dns-plugin PLUGIN` for `names` into `<tmp>/<out>` against
/// `directory` (Pebble's, or a proxy's in front of it), plus `extra` arguments.
pub async fn issue_dns01(
    env: &Env,
    directory: &str,
    config: &std::path::Path,
    plugin: &str,
    names: &[&str],
    out: &str,
    extra: &[&str],
) -> Run {
    let config_s = config.to_string_lossy().into_owned();
    let out_s = env.path(out).to_string_lossy().into_owned();
    let mut args = vec!["--config", &config_s, "issue"];
    for n in names {
        args.extend(["--name", n]);
    }
    args.extend([
        "--challenge",
        "dns-01",
        "--dns-plugin",
        plugin,
        "--out",
        &out_s,
    ]);
    args.extend(extra);
    env.run_at(directory, &args, crate::common::COMMAND_TIMEOUT)
        .await
}

/// `needle` appears nowhere in the run's output.
#[track_caller]
pub fn assert_not_in_output(run: &Run, needle: &str, what: &str) {
    assert!(
        !run.stdout.contains(needle) && !run.stderr.contains(needle),
        "the {what} appears in certfleet's output:\n{run}"
    );
}
