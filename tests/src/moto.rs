//! moto in server mode (`moto_server`, PyPI `moto[server]`): a widely used AWS API emulator,
//! here for Route 53. `cargo xtask ci` installs it into a venv at
//! `~/.cache/certfleet-moto-venv` when missing. One private server per [`Moto`] on a free
//! loopback port, polled until it answers, killed on drop.
//!
//! moto can check SigV4 signatures against the keys of an IAM user it knows (made by
//! [`Moto::start`], with a policy allowing everything). The plugin talks to moto through an
//! auth proxy (`moto/auth_proxy.rs`), which after [`Moto::enforce_auth`] has moto check
//! every request it can check correctly: every POST (`ChangeResourceRecordSets`) fully, and
//! every request's access key id (moto 5 cannot verify a GET's signature; see the proxy).
//! moto serves no DNS, and its `GetChange` answers `INSYNC` at once.

mod auth_proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::ports;
use crate::server_process::{ServerProcess, StartAttempts};

use self::auth_proxy::AuthProxy;

const READY_DEADLINE: Duration = Duration::from_secs(30);
/// moto routes a request to a service by the credential scope of its `Authorization`
/// header; the harness's own unsigned calls (made while auth is not enforced) carry this.
const FAKE_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00";

/// The venv `cargo xtask ci` installs moto into.
pub fn moto_venv() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/certfleet-moto-venv"))
}

/// `moto_server`: from the xtask venv, else on PATH.
pub fn moto_binary() -> Option<PathBuf> {
    if let Some(v) = moto_venv() {
        let bin = v.join("bin/moto_server");
        if bin.is_file() {
            return Some(bin);
        }
    }
    crate::tool_exists("moto_server").then(|| PathBuf::from("moto_server"))
}

/// Whether moto is installed; `false` means skip (never under CI, where it panics).
pub fn require_moto() -> bool {
    if moto_binary().is_some() {
        return true;
    }
    let how = "cargo xtask ci installs it, or: python3 -m venv ~/.cache/certfleet-moto-venv && \
               ~/.cache/certfleet-moto-venv/bin/pip install 'moto[server]'";
    if crate::in_ci() {
        panic!("moto_server is not installed (CI is set, so this test may not skip); {how}");
    }
    eprintln!("SKIPPED: moto_server is not installed; {how}");
    false
}

/// A running moto server with an IAM user whose keys the tests hand to the plugin.
#[derive(Debug)]
pub struct Moto {
    port: u16,
    process: ServerProcess,
    access_key_id: String,
    secret_access_key: String,
    zones: BTreeMap<String, String>,
    proxy: Option<AuthProxy>,
    client: reqwest::Client,
    _dir: TempDir,
}

/// The text of the first `<tag>` in `xml`.
fn between<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

impl Moto {
    /// Starts moto, makes an IAM user with an access key and an allow-all policy, and
    /// creates the public hosted `zones` (names without trailing dot).
    pub async fn start(zones: &[&str]) -> Result<Moto> {
        crate::install_crypto_provider();
        let bin = moto_binary().context("moto_server is not installed")?;
        let mut attempts = StartAttempts::default();
        while attempts.another() {
            let port = ports::free_tcp_port()?;
            let d = tempfile::Builder::new()
                .prefix("certfleet-moto-")
                .tempdir()?;
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY");
            let process = ServerProcess::spawn("moto_server", cmd, &d.path().join("moto.log"))?;
            let mut moto = Moto {
                port,
                process,
                access_key_id: String::new(),
                secret_access_key: String::new(),
                zones: BTreeMap::new(),
                proxy: None,
                client: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(20))
                    .build()?,
                _dir: d,
            };
            match moto.wait_ready().await {
                Ok(()) => {
                    moto.set_up(zones).await?;
                    return Ok(moto);
                }
                Err(e) => attempts.failed(e),
            }
        }
        Err(attempts.into_error("moto_server"))
    }

    async fn wait_ready(&self) -> Result<()> {
        let url = format!("{}/moto-api/", self.upstream());
        let what = format!("answer on port {}", self.port);
        self.process
            .wait_ready(&what, READY_DEADLINE, || {
                let request = self.client.get(&url).send();
                async move { request.await.is_ok_and(|r| r.status().is_success()) }
            })
            .await
    }

    async fn set_up(&mut self, zones: &[&str]) -> Result<()> {
        self.iam("Action=CreateUser&UserName=certfleet&Version=2010-05-08")
            .await?;
        let key = self
            .iam("Action=CreateAccessKey&UserName=certfleet&Version=2010-05-08")
            .await?;
        self.access_key_id = between(&key, "AccessKeyId")
            .context("no AccessKeyId")?
            .to_owned();
        self.secret_access_key = between(&key, "SecretAccessKey")
            .context("no SecretAccessKey")?
            .to_owned();
        let policy = url::form_urlencoded::byte_serialize(
            br#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        )
        .collect::<String>();
        self.iam(&format!(
            "Action=PutUserPolicy&UserName=certfleet&PolicyName=all&PolicyDocument={policy}&Version=2010-05-08"
        ))
        .await?;
        for (i, z) in zones.iter().enumerate() {
            let body = format!(
                "<CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
                 <Name>{z}.</Name><CallerReference>certfleet-{i}</CallerReference></CreateHostedZoneRequest>"
            );
            let resp = self
                .route53("POST", "/2013-04-01/hostedzone", Some(body))
                .await?;
            let id = between(&resp, "Id").context("no hosted zone Id")?;
            self.zones.insert(
                (*z).to_owned(),
                id.trim_start_matches("/hostedzone/").to_owned(),
            );
        }
        self.proxy = Some(AuthProxy::start(
            self.upstream(),
            self.access_key_id.clone(),
            self.client.clone(),
        )?);
        Ok(())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        service: &str,
        ctype: &str,
        body: Option<String>,
    ) -> Result<String> {
        let url = format!("{}{path}", self.upstream());
        let mut req = self
            .client
            .request(method.parse().context("method")?, &url)
            .header("authorization", FAKE_AUTH.replace("{service}", service))
            .header("content-type", ctype);
        if let Some(b) = body {
            req = req.body(b);
        }
        crate::send_checked(req, method, &url).await
    }

    async fn iam(&self, form: &str) -> Result<String> {
        self.call(
            "POST",
            "/",
            "iam",
            "application/x-www-form-urlencoded",
            Some(form.to_owned()),
        )
        .await
    }

    /// A Route 53 call made by the harness, straight to moto with enforcement off.
    async fn route53(&self, method: &str, path: &str, body: Option<String>) -> Result<String> {
        let Some(proxy) = &self.proxy else {
            return self.call(method, path, "route53", "text/xml", body).await;
        };
        let mut gate = proxy.shared.gate.lock().await;
        proxy.shared.switch(&mut gate, false).await?;
        self.call(method, path, "route53", "text/xml", body).await
    }

    /// From now on moto checks what it can check of every request through the proxy (see
    /// `moto/auth_proxy.rs`): POSTs must carry a valid signature of a known key, every
    /// request a known access key id.
    pub async fn enforce_auth(&self) -> Result<()> {
        let proxy = self.proxy.as_ref().context("moto is not set up")?;
        proxy.shared.enforce.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn upstream(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The plugin's `endpoint`: the proxy in front of moto, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        match &self.proxy {
            Some(p) => format!("http://{}", p.addr),
            None => self.upstream(),
        }
    }

    /// `METHOD path` of every request the plugin sent (through the proxy), in order.
    pub fn requests(&self) -> Vec<String> {
        self.proxy
            .as_ref()
            .and_then(|p| p.shared.log.lock().ok().map(|l| l.clone()))
            .unwrap_or_default()
    }

    /// The IAM user's access key id.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The IAM user's secret access key.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The hosted zone id of `zone`.
    pub fn zone_id(&self, zone: &str) -> &str {
        self.zones.get(zone).map_or("", String::as_str)
    }

    /// Every TXT RRset of `zone`: owner name (lowercase, absolute) → values as stored
    /// (quoted).
    pub async fn txt_sets(&self, zone: &str) -> Result<BTreeMap<String, Vec<String>>> {
        let id = self.zone_id(zone).to_owned();
        let mut out = BTreeMap::new();
        let mut next: Option<(String, String)> = None;
        for _ in 0..100 {
            let mut path = format!("/2013-04-01/hostedzone/{id}/rrset?maxitems=300");
            if let Some((n, t)) = &next {
                path.push_str(&format!("&name={n}&type={t}"));
            }
            let xml = self.route53("GET", &path, None).await?;
            let doc = roxmltree::Document::parse(&xml).context("rrset listing is not XML")?;
            for set in doc
                .descendants()
                .filter(|n| n.tag_name().name() == "ResourceRecordSet")
            {
                let field = |name: &str| {
                    set.descendants()
                        .find(|n| n.tag_name().name() == name)
                        .and_then(|n| n.text())
                        .unwrap_or("")
                        .to_owned()
                };
                if field("Type") != "TXT" {
                    continue;
                }
                let values: Vec<String> = set
                    .descendants()
                    .filter(|n| n.tag_name().name() == "Value")
                    .filter_map(|n| n.text().map(str::to_owned))
                    .collect();
                out.insert(field("Name").to_ascii_lowercase(), values);
            }
            let truncated = between(&xml, "IsTruncated") == Some("true");
            if !truncated {
                return Ok(out);
            }
            next = Some((
                between(&xml, "NextRecordName").unwrap_or("").to_owned(),
                between(&xml, "NextRecordType").unwrap_or("TXT").to_owned(),
            ));
        }
        bail!("more than 100 pages of RRsets in {zone}")
    }

    /// Sets the TXT RRset of `name` (absolute) in `zone` to `values` (someone else's).
    pub async fn upsert_txt(&self, zone: &str, name: &str, values: &[&str]) -> Result<()> {
        let id = self.zone_id(zone).to_owned();
        let records: String = values
            .iter()
            .map(|v| format!("<ResourceRecord><Value>\"{v}\"</Value></ResourceRecord>"))
            .collect();
        let body = format!(
            "<ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <ChangeBatch><Changes><Change><Action>UPSERT</Action><ResourceRecordSet><Name>{name}</Name>\
             <Type>TXT</Type><TTL>300</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet>\
             </Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        );
        self.route53(
            "POST",
            &format!("/2013-04-01/hostedzone/{id}/rrset/"),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// The last `lines` of moto's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
