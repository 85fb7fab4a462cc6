//! The `finalizing` step: the certificate key (written before finalize), finalize of a
//! `ready` order only, waiting for `valid`, download, checks, the certificate directory.

use std::path::PathBuf;
use std::sync::Arc;

use certfleet_acme::{CertId, Order, OrderStatus, ProblemKind};
use certfleet_issue::output::{CertificateMeta, KeyOutput, PRIVKEY_FILE, write_certificate_dir};
use certfleet_issue::{CertificateInfo, CertificateRequest, IssueError, IssuedCertificate};
use certfleet_keys::file::FileKey;
use certfleet_keys::{KeyAlgorithm, KeyError, KeyRef, SigningKey};

use super::{JobDriver, now};
use crate::error::RunError;
use crate::store::{IssuedCert, JobStatus, JobUpdate};

impl JobDriver {
    /// The certificate key: the stored one, the one the spec names, or a new file key in
    /// the certificate directory. Its reference is written with `finalizing` before finalize.
    pub(super) async fn cert_key(&mut self) -> Result<(Arc<dyn SigningKey>, bool), RunError> {
        if let Some(r) = self.job.cert_key.clone() {
            let generated =
                r.parse::<KeyRef>()?.file_path() == Some(self.out_dir().join(PRIVKEY_FILE));
            let key = self.sh.load_key(&r).await?;
            // A renewal keeps the key of the certificate it replaces; its status still
            // has to say `finalizing` before finalize.
            if self.job.status != JobStatus::Finalizing {
                self.write(JobUpdate::finalizing(r)).await?;
            }
            return Ok((key, generated));
        }
        let (key, generated): (Arc<dyn SigningKey>, bool) = match self.job.spec.key.clone() {
            Some(r) => (self.sh.load_key(&r).await?, false),
            None => {
                let path = self.out_dir().join(PRIVKEY_FILE);
                let alg = self
                    .job
                    .spec
                    .key_algorithm
                    .as_deref()
                    .map(str::parse::<KeyAlgorithm>)
                    .transpose()
                    .map_err(|e| RunError::InvalidJob {
                        job: self.job.id,
                        detail: e.to_string(),
                    })?
                    .unwrap_or(KeyAlgorithm::EcP256);
                let key = tokio::task::spawn_blocking(move || {
                    match FileKey::generate(alg, &path) {
                        // Ours from an attempt that died before writing `finalizing`.
                        Err(KeyError::AlreadyExists { .. }) => FileKey::load(&path),
                        other => other,
                    }
                })
                .await
                .map_err(|e| RunError::Task(e.to_string()))??;
                (Arc::new(key), true)
            }
        };
        self.write(JobUpdate::finalizing(key.key_ref().to_string()))
            .await?;
        Ok((key, generated))
    }

    pub(super) fn out_dir(&self) -> PathBuf {
        match &self.job.spec.output_dir {
            Some(d) => PathBuf::from(d),
            None => self
                .sh
                .config
                .output_root
                .join(self.job.spec.names[0].replace('*', "_")),
        }
    }

    /// Finalizes (only a `ready` order), waits for `valid`, downloads and writes the
    /// certificate directory, then writes `issued`.
    pub(super) async fn finalize(&mut self) -> Result<JobStatus, RunError> {
        let (cert_key, generated) = self.cert_key().await?;
        let Some((mut order, assumed_ready)) = self.current_order().await? else {
            return Ok(JobStatus::Ordering);
        };
        let sh = self.sh.clone();
        if assumed_ready && order.state.status == OrderStatus::Pending {
            // Every authorization is valid and the CA derives `ready` from them.
            order.state.status = OrderStatus::Ready;
        }
        match order.state.status {
            OrderStatus::Invalid => {
                return self
                    .reorder(format!("order {} became invalid", order.url))
                    .await;
            }
            OrderStatus::Pending => {
                self.write(JobUpdate::to(JobStatus::Authorizing)).await?;
                self.order = Some((order, false));
                return Ok(JobStatus::Authorizing);
            }
            OrderStatus::Ready => {
                let csr =
                    certfleet_keys::csr::build_csr(cert_key.as_ref(), &self.job.spec.names).await?;
                order = match sh.account.finalize(&order, &csr.der).await {
                    Err(e)
                        if assumed_ready
                            && e.problem_kind() == Some(&ProblemKind::OrderNotReady) =>
                    {
                        let fresh = sh.account.order(&order.url).await?;
                        let ready = self.wait_order(fresh, &[OrderStatus::Ready]).await?;
                        sh.account.finalize(&ready, &csr.der).await?
                    }
                    other => other?,
                };
            }
            OrderStatus::Processing | OrderStatus::Valid => {}
        }
        let order = self.wait_order(order, &[OrderStatus::Valid]).await?;
        let cert_url = order.state.certificate.clone().ok_or_else(|| {
            RunError::from(certfleet_acme::AcmeError::InvalidResponse {
                url: order.url.clone(),
                detail: "order is valid but has no certificate URL".to_owned(),
            })
        })?;
        let chain = sh.account.download_certificate(&cert_url).await?.chain;
        let info = CertificateInfo::from_der(chain.leaf_der())?;
        let request = CertificateRequest {
            names: self.job.spec.names.clone(),
            cert_key: cert_key.clone(),
            profile: None,
            replaces: None,
            preferred_chain: None,
        };
        certfleet_issue::check_matches(&request, &info)?;
        let issued = IssuedCertificate {
            names: self.job.spec.names.clone(),
            order_url: order.url.clone(),
            certificate_url: cert_url,
            cert_id: CertId::from_certificate_der(chain.leaf_der()).ok(),
            chain,
            info,
        };
        let dir = self.out_dir();
        let meta = CertificateMeta::new(
            &issued,
            cert_key.key_ref().clone(),
            sh.account.url(),
            sh.account.client().directory_url(),
        );
        let key_output = if generated {
            KeyOutput::Unchanged
        } else {
            KeyOutput::Reference(cert_key.key_ref())
        };
        write_certificate_dir(&dir, &issued, key_output, &meta)?;
        let t = now();
        sh.governor
            .certificate_issued(&self.ctx, &issued.info.serial_hex, issued.info.not_after, t)
            .await?;
        self.write(JobUpdate::issued(IssuedCert {
            serial: issued.info.serial_hex.clone(),
            not_after: issued.info.not_after,
            cert_dir: dir.display().to_string(),
        }))
        .await?;
        tracing::info!(job = %self.job.id, names = %self.job.spec.names.join(","), serial = %issued.info.serial_hex, "certificate issued");
        if let Some(hook) = sh.issued_hook.clone() {
            let job = self.job.clone();
            let outcome = tokio::task::spawn_blocking(move || hook.issued(&job))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            if let Err(e) = outcome {
                tracing::warn!(job = %self.job.id, "after issuance: {e}");
            }
        }
        Ok(JobStatus::Issued)
    }

    pub(super) async fn wait_order(
        &self,
        mut order: Order,
        targets: &[OrderStatus],
    ) -> Result<Order, RunError> {
        let started = now();
        let mut attempt = 0u32;
        loop {
            if targets.contains(&order.state.status) {
                return Ok(order);
            }
            if order.state.status == OrderStatus::Invalid {
                return Err(IssueError::OrderInvalid {
                    url: order.url.clone(),
                    problem: order.state.error.clone().map(Box::new),
                }
                .into());
            }
            // `processing` right after finalize is normal: wait before the first re-read.
            let first = u32::from(order.state.status == OrderStatus::Processing);
            self.pause(
                attempt.max(first),
                order.retry_after.as_ref(),
                started,
                "the order",
                &order.url,
            )
            .await?;
            attempt += 1;
            order = self.sh.account.order(&order.url).await?;
        }
    }
}
