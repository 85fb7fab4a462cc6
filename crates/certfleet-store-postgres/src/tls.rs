//! TLS to PostgreSQL with rustls (ring), as libpq's `sslmode` says:
//! - `require`: encrypted; the server certificate is not checked (as libpq without a
//!   root file), unless `sslrootcert` is given — then as `verify-ca`;
//! - `verify-ca`: the chain must lead to a trusted root (system roots + `sslrootcert`);
//! - `verify-full`: and the certificate must name the host of the URL.
//!
//! `sslcert` + `sslkey` (PEM files) give a client certificate. `prefer`/`allow`/`disable`
//! connect without TLS. A `MakeTlsConnect` over tokio-rustls: no extra TLS crate.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::PgError;
use crate::url::StoreUrl;

/// What the URL asked of TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub mode: TlsMode,
    pub root: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum TlsMode {
    #[default]
    Off,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Builds the connector; `None` when TLS is off.
pub(crate) fn connector(s: &TlsSettings) -> Result<Option<RustlsConnect>, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mode = match (s.mode, &s.root) {
        (TlsMode::Require, Some(_)) => TlsMode::VerifyCa,
        (m, _) => m,
    };
    let verifier = match mode {
        TlsMode::Require => ServerCheck {
            provider: provider.clone(),
            chain: None,
            check_name: false,
        },
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if let Some(path) = &s.root {
                for cert in read_certs(path, "sslrootcert")? {
                    roots
                        .add(cert)
                        .map_err(|e| tls_file(path, "sslrootcert", e))?;
                }
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        PgError::Tls(format!("no trusted root for verify-ca/verify-full: {e}"))
                    })?;
            ServerCheck {
                provider: provider.clone(),
                chain: Some(webpki),
                check_name: mode == TlsMode::VerifyFull,
            }
        }
        TlsMode::Off => return Ok(None),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match (&s.client_cert, &s.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "sslcert")?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| tls_file(key, "sslkey", e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                PgError::Tls(format!(
                    "sslkey={} is not the key of sslcert={}: {e}",
                    key.display(),
                    cert.display()
                ))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(PgError::Tls(
                "sslcert and sslkey go together (a client certificate needs its key)".into(),
            ));
        }
    };
    Ok(Some(RustlsConnect(Arc::new(config))))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, PgError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_file(path, what, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_file(path, what, e))?;
    if certs.is_empty() {
        return Err(tls_file(path, what, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn tls_file(path: &Path, what: &str, e: impl std::fmt::Display) -> PgError {
    PgError::Tls(format!("{what}={}: {e}", path.display()))
}

/// The server check of every mode: `chain` (verify-ca, verify-full) checks the chain
/// against the roots and, with `check_name`, the host name; without it (`require` without
/// a root, libpq's meaning) the session is encrypted but the server not authenticated.
/// Handshake signatures are checked in every mode.
#[derive(Debug)]
struct ServerCheck {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a first connection failed, when TLS is the cause and no retry can help: the
/// server's certificate not trusted, no TLS offered, or the client certificate missing
/// or refused. `error` is the driver's error chain; `server` the server's own message
/// when it answered.
pub(crate) fn diagnose(url: &StoreUrl, error: &str, server: Option<&str>) -> Option<PgError> {
    let (address, mode) = (url.address(), &url.sslmode);
    let s = &url.tls;
    let client_cert = || match &s.client_cert {
        Some(p) => format!("sslcert={}", p.display()),
        None => "no sslcert".to_owned(),
    };
    if let Some(msg) = server {
        if s.client_cert.is_some() && msg.contains("password authentication failed") {
            // `clientcert=verify-full` checks the CN after the password and reports a
            // mismatch as a failed password (the reason is only in the server's log).
            return Some(PgError::Tls(format!(
                "{address} refused user {:?}: {msg}; check the password (URL, PGPASSWORD or \
                 [batch] store_password_file) and, for clientcert=verify-full, that the CN of \
                 {} is the user name",
                url.user,
                client_cert()
            )));
        }
        // `clientcert=verify-ca|verify-full` or `cert` in pg_hba.conf.
        return msg.contains("certificate").then(|| {
            PgError::Tls(format!(
                "{address} (sslmode {mode}) requires a client certificate it accepts:                  {msg}; {} — set sslcert and sslkey to a certificate from the CA the server                  trusts (ssl_ca_file), whose CN is the user name {:?}",
                client_cert(),
                url.user
            ))
        });
    }
    const CLIENT_CERT_ALERTS: [&str; 5] = [
        "alert: UnknownCA",
        "alert: BadCertificate",
        "alert: CertificateRequired",
        "alert: CertificateUnknown",
        "alert: AccessDenied",
    ];
    if CLIENT_CERT_ALERTS.iter().any(|a| error.contains(a)) {
        return Some(PgError::Tls(format!(
            "{address} (sslmode {mode}) refused the client certificate ({}): {error};              check sslcert and sslkey",
            client_cert()
        )));
    }
    if error.contains("invalid peer certificate") || error.contains("TLS to PostgreSQL") {
        return Some(PgError::Tls(format!(
            "{address} (sslmode {mode}): {error}; check sslrootcert and the server's certificate"
        )));
    }
    if error.contains("server does not support TLS") {
        return Some(PgError::Tls(format!(
            "{address} does not offer TLS (sslmode {mode}): {error}"
        )));
    }
    None
}

/// tokio-postgres's `MakeTlsConnect` over tokio-rustls.
#[derive(Clone)]
pub(crate) struct RustlsConnect(Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnector> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnector {
            config: self.0.clone(),
            name,
        })
    }
}

pub(crate) struct RustlsConnector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let c = tokio_rustls::TlsConnector::from(self.config);
            Ok(RustlsStream(Box::new(c.connect(self.name, stream).await?)))
        })
    }
}

pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (tokio-postgres then uses plain SCRAM-SHA-256).
        ChannelBinding::none()
    }
}
