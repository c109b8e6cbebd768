//! TLS for the API when `[daemon] tls_cert` and `tls_key` are set: rustls (ring, as the rest
//! of Lifeboat). Handshakes run on their own tasks, so a slow or silent client cannot hold
//! up the others; axum is handed only connections whose handshake finished.

use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

struct TlsListener {
    incoming: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(c) => c,
            // The accepting task ended (the daemon stops): wait to be dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cert: &Path,
    key: &Path,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = server_config(cert, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let local = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("listener: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, addr)).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {addr}: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
                }
            });
        }
    });
    axum::serve(
        TlsListener {
            incoming: rx,
            local,
        },
        app,
    )
    .with_graceful_shutdown(stop)
    .await
    .map_err(|e| Error::internal(format!("the API stopped: {e}")))
}
