//! TLS between peers and their clients (rustls, the ring provider): the server's certificate
//! and key, optionally a CA its clients' certificates must chain to (mutual TLS); the client's
//! CA for the servers, optionally its own certificate, and optionally one name every server's
//! certificate must be valid for.
//!
//! The name matters in clusters where peers are found by address (a DNS name that resolves to
//! every pod of a DaemonSet): a peer is then reached as `https://10.0.1.7:7070`, and certificates
//! rarely carry pod IPs. With `name` set (`thaw-cache.thaw.svc`), each server's certificate is
//! checked against that name instead of the address, as etcd and Consul do for their peers. The
//! chain, validity and key usage are checked in full either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{Error, Result};

/// The crypto every TLS config here uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The certificates of a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error(path, format!("no private key: {e}")))
}

/// A root store of the CA certificates in `path`.
fn roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store
            .add(cert)
            .map_err(|e| tls_error(path, format!("not a CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// What a cache server serves TLS with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA that clients' certificates must chain to; `None`: clients need no certificate.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// The rustls server configuration (HTTP/1.1).
    pub fn config(&self) -> Result<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&self.cert, e))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                    .build()
                    .map_err(|e| tls_error(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certificates(&self.cert)?, private_key(&self.key)?)
            .map_err(|e| tls_error(&self.key, format!("does not match the certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// How a client reaches TLS peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA the servers' certificates must chain to (the only roots trusted).
    pub ca: PathBuf,
    /// PEM certificate chain and key to present (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name every server's certificate must be valid for, instead of the address dialled.
    pub name: Option<String>,
}

impl ClientTls {
    /// The rustls client configuration.
    pub fn config(&self) -> Result<rustls::ClientConfig> {
        let roots = roots(&self.ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&self.ca, e))?;
        let builder = match &self.name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| tls_error(&self.ca, format!("TLS name {name:?}: {e}")))?;
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| tls_error(&self.ca, e))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NamedVerifier { inner, name }))
            }
            None => builder.with_root_certificates(roots),
        };
        let mut config = match &self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| tls_error(key, format!("does not match the certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Full WebPKI verification of a server's certificate against a fixed name.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
