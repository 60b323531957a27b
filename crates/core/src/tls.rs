//! TLS to the cluster: [`TlsConfig`] (the files) made into the driver's
//! rustls context, with every failure named.
//!
//! A node's certificate must be signed by the configured CA and, unless
//! [`TlsConfig::verify_hostname`] is off, name the address the driver
//! connects to (an IP subject alternative name: the driver reaches nodes by
//! the addresses the cluster advertises). With a client certificate and
//! key, the cluster can require and check the client's certificate too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// TLS settings of the connection to the cluster (`[cassandra.tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities that signed the nodes' certificates.
    pub ca_file: PathBuf,
    /// PEM files of this client's certificate and its private key, for a
    /// cluster that requires client certificates.
    pub client_cert: Option<ClientCert>,
    /// Whether a node's certificate must name the node's address (default true).
    pub verify_hostname: bool,
}

/// A client certificate and its key (paths only: the key is read when
/// connecting and never kept or shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, PEM.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Why TLS could not be set up; each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A file could not be read or holds no usable PEM item.
    #[error("TLS: {what} `{path}`: {problem}")]
    File {
        /// `CA file`, `client certificate`, `client key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the settings (e.g. a key that does not match the certificate).
    #[error("TLS: {0}")]
    Refused(String),
}

impl TlsConfig {
    /// TLS with the nodes' CA, hostname verification on, no client certificate.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: ca_file.into(),
            client_cert: None,
            verify_hostname: true,
        }
    }

    /// The driver's context: reads the files, builds the verifier.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        let cas = read_certs("CA file", &self.ca_file)?;
        for ca in cas {
            roots.add(ca).map_err(|e| TlsSetupError::File {
                what: "CA file",
                path: self.ca_file.clone(),
                problem: e.to_string(),
            })?;
        }
        let verifier = WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| TlsSetupError::Refused(e.to_string()))?;
        let builder = rustls::ClientConfig::builder();
        let builder = if self.verify_hostname {
            builder.with_webpki_verifier(verifier)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
        };
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let chain = read_certs("client certificate", &c.cert_file)?;
                let key =
                    PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| TlsSetupError::File {
                        what: "client key",
                        path: c.key_file.clone(),
                        problem: pem_problem(&e),
                    })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsSetupError::Refused(format!("client certificate: {e}")))?
            }
        };
        Ok(Arc::new(config))
    }
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let error = |problem: String| TlsSetupError::File {
        what,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(pem_problem(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// A PEM error in words (never the file's content).
fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind in it".into(),
        _ => "not a valid PEM file".into(),
    }
}

/// Checks a node's certificate chain against the CA, but not the name in
/// it (`verify_hostname = false`): for clusters whose certificates name
/// hosts the driver does not connect by.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
