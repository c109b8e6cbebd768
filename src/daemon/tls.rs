//! TLS for the API when `[daemon] tls_cert` and `tls_key` are set: rustls (ring, as the rest
//! of Lifeboat). Handshakes run on each connection's own task with a time limit, so a slow
//! or silent client cannot hold up the others (see `api::serve`).

use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<std::result::Result<_, _>>())
        .map_err(|e| Error::usage(format!("[daemon] tls_cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::usage(format!(
            "[daemon] tls_cert {} holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::usage(format!("[daemon] tls_key {}: {e}", key.display())))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::usage(format!(
                "[daemon] tls_cert and tls_key do not go together: {e}"
            ))
        })
}

/// The acceptor of the API's TLS connections (the handshake itself runs in `api::serve`,
/// on the connection's own task and under its time limit).
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(
        cert, key,
    )?)))
}
