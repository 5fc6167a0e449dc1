//! Whom to trust: the [`Tls`] section, and the client's own certificate
//! ([`ClientIdentity`]).

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Whom to trust, for the socket and the poller alike. Default: the
/// system's roots only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Extra root certificates (PEM) trusted besides the system's, for a
    /// private CA. Parsed at `build()`.
    pub root_certificates: Vec<Vec<u8>>,
    /// **Dangerous:** accept any server certificate, so anyone on the path
    /// can read and change the traffic. For lab use only. Default: `false`.
    pub danger_accept_invalid_certs: bool,
    /// The certificate this device presents when the server asks for one
    /// (mutual TLS), on `wss://` and on `https://` polls. Default: none.
    /// Checked at `build()` (readable, and the key matches the
    /// certificate); given as files, it is read again before every
    /// connection attempt and whenever polling starts, so a certificate
    /// renewed on disk is used at the next connect without a restart.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate and its private key (mutual TLS). See
/// [`Tls::client_identity`].
///
/// The chain is PEM: the device's certificate first, then any intermediate
/// CA certificates the server needs to build the path. The key is PEM,
/// PKCS#8 (`BEGIN PRIVATE KEY`) or the traditional RSA or EC form (`BEGIN
/// RSA PRIVATE KEY`, `BEGIN EC PRIVATE KEY`), not encrypted (an encrypted
/// key belongs in a PKCS#12 archive with its password). The key and the
/// password never appear in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientIdentity {
    /// Certificate chain and key, in memory (PEM).
    Pem {
        /// The certificate chain, PEM.
        chain: Vec<u8>,
        /// The private key, PEM.
        key: Vec<u8>,
    },
    /// Certificate chain and key as PEM files, read again before every
    /// attempt.
    PemFiles {
        /// The certificate chain's file.
        chain: PathBuf,
        /// The private key's file.
        key: PathBuf,
    },
    /// A PKCS#12 archive (`.p12`, `.pfx`: DER) holding the certificate, its
    /// chain and the key, in memory.
    Pkcs12 {
        /// The archive.
        der: Vec<u8>,
        /// Its password (empty for none).
        password: String,
    },
    /// A PKCS#12 archive as a file, read again before every attempt.
    Pkcs12File {
        /// The archive's file.
        path: PathBuf,
        /// Its password (empty for none).
        password: String,
    },
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIdentity::Pem { chain, .. } => f
                .debug_struct("Pem")
                .field("chain", &format_args!("{} bytes", chain.len()))
                .field("key", &format_args!("(redacted)"))
                .finish(),
            ClientIdentity::PemFiles { chain, key } => f
                .debug_struct("PemFiles")
                .field("chain", chain)
                .field("key", key)
                .finish(),
            ClientIdentity::Pkcs12 { der, .. } => f
                .debug_struct("Pkcs12")
                .field("der", &format_args!("{} bytes", der.len()))
                .field("password", &format_args!("(redacted)"))
                .finish(),
            ClientIdentity::Pkcs12File { path, .. } => f
                .debug_struct("Pkcs12File")
                .field("path", path)
                .field("password", &format_args!("(redacted)"))
                .finish(),
        }
    }
}

impl Tls {
    pub(crate) fn roots(&self) -> Result<Vec<native_tls::Certificate>> {
        self.root_certificates
            .iter()
            .map(|pem| {
                native_tls::Certificate::from_pem(pem).map_err(|e| {
                    Error::config(
                        "tls.root_certificates",
                        format!("not a PEM certificate: {e}"),
                    )
                })
            })
            .collect()
    }
}
