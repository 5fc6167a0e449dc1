//! The device's client certificate (mutual TLS): read from memory or from
//! files, checked (the key matches the certificate), and named for advice.
//! The socket's connector and the poller's agent both take it from here.

use std::path::Path;

use crate::config::tls::ClientIdentity;

#[cfg(feature = "client-cert")]
pub(crate) use with_openssl::{load, Identity};
#[cfg(not(feature = "client-cert"))]
pub(crate) use without::{load, Identity};

/// What the identity's files looked like when last read: a change (a
/// certificate renewed on disk) means reading them again. Empty for an
/// identity in memory, which never changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stamp(Vec<Option<(i128, u64, u64)>>);

/// The files' modification times, sizes and inodes now.
pub(crate) fn stamp(id: &ClientIdentity) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let of = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            (mtime, m.len(), m.ino())
        })
    };
    Stamp(match id {
        ClientIdentity::PemFiles { chain, key } => vec![of(chain), of(key)],
        ClientIdentity::Pkcs12File { path, .. } => vec![of(path)],
        _ => Vec::new(),
    })
}

#[cfg(feature = "client-cert")]
mod with_openssl {
    use super::*;
    use std::fmt::Write as _;

    use openssl::pkcs12::Pkcs12;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::{X509NameRef, X509};

    /// A client certificate ready to present.
    pub(crate) struct Identity {
        /// The certificate chain, PEM, the device's certificate first.
        chain_pem: Vec<u8>,
        /// The private key, PKCS#8 PEM (the one form native-tls takes).
        key_pem: Vec<u8>,
        /// The certificates as DER (for the poller's agent).
        #[cfg_attr(not(feature = "poll"), allow(dead_code))]
        certs_der: Vec<Vec<u8>>,
        /// How the certificate is named in advice: subject, issuer, expiry.
        pub shown: String,
    }

    impl Identity {
        /// For native-tls (the socket).
        pub(crate) fn native(&self) -> Result<native_tls::Identity, String> {
            native_tls::Identity::from_pkcs8(&self.chain_pem, &self.key_pem)
                .map_err(|e| format!("the certificate {} cannot be used: {e}", self.shown))
        }

        /// For ureq (the poller).
        #[cfg(feature = "poll")]
        pub(crate) fn ureq(&self) -> Result<ureq::tls::ClientCert, String> {
            use ureq::tls::{Certificate, PrivateKey};
            let certs: Vec<_> = self
                .certs_der
                .iter()
                .map(|d| Certificate::from_der(d).to_owned())
                .collect();
            let key = PrivateKey::from_pem(&self.key_pem)
                .map_err(|e| format!("the key of {} cannot be used: {e}", self.shown))?;
            Ok(ureq::tls::ClientCert::new_with_certs(&certs, key))
        }
    }

    /// Reads and checks an identity. The error says what is wrong, with which
    /// file, and what to do; it never holds key material.
    pub(crate) fn load(id: &ClientIdentity) -> Result<Identity, String> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p)
                .map_err(|e| format!("cannot read the client {what} {}: {e}", p.display()))
        };
        let (certs, key) = match id {
            ClientIdentity::Pem { chain, key } => (pem_chain(chain, "")?, pem_key(key, "")?),
            ClientIdentity::PemFiles { chain, key } => {
                let at = |p: &Path| format!(" in {}", p.display());
                (
                    pem_chain(&read("certificate", chain)?, &at(chain))?,
                    pem_key(&read("key", key)?, &at(key))?,
                )
            }
            ClientIdentity::Pkcs12 { der, password } => pkcs12(der, password, "")?,
            ClientIdentity::Pkcs12File { path, password } => pkcs12(
                &read("PKCS#12 archive", path)?,
                password,
                &format!(" {}", path.display()),
            )?,
        };
        let leaf = &certs[0];
        let shown = shown(leaf);
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(format!(
                "the client key does not match the certificate {shown} (the chain must start \
                 with the device's own certificate, and the key must be the one it was issued for)"
            ));
        }
        let failed =
            |e: openssl::error::ErrorStack| format!("cannot encode the client identity: {e}");
        let mut chain_pem = Vec::new();
        let mut certs_der = Vec::new();
        for c in &certs {
            chain_pem.extend(c.to_pem().map_err(failed)?);
            certs_der.push(c.to_der().map_err(failed)?);
        }
        Ok(Identity {
            chain_pem,
            key_pem: key.private_key_to_pem_pkcs8().map_err(failed)?,
            certs_der,
            shown,
        })
    }

    fn pem_chain(pem: &[u8], at: &str) -> Result<Vec<X509>, String> {
        let certs = X509::stack_from_pem(pem)
            .map_err(|e| format!("the client certificate chain{at} is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "no certificate (BEGIN CERTIFICATE) in the client certificate chain{at}"
            ));
        }
        Ok(certs)
    }

    fn pem_key(pem: &[u8], at: &str) -> Result<PKey<Private>, String> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("ENCRYPTED") {
            return Err(format!(
                "the client key{at} is encrypted: give it with its password as a PKCS#12 \
                 archive (ClientIdentity::Pkcs12File), or decrypt it (`openssl pkey -in KEY -out \
                 PLAIN`) into a file only this process can read"
            ));
        }
        // With an empty passphrase OpenSSL never prompts on a terminal.
        PKey::private_key_from_pem_passphrase(pem, b"").map_err(|_| {
            format!(
                "no usable private key in the client key{at}: expected PEM `BEGIN PRIVATE KEY` \
                 (PKCS#8), `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`"
            )
        })
    }

    fn pkcs12(der: &[u8], password: &str, at: &str) -> Result<(Vec<X509>, PKey<Private>), String> {
        let parsed = Pkcs12::from_der(der)
            .map_err(|_| format!("the PKCS#12 archive{at} is not PKCS#12 (DER, .p12 or .pfx)"))?
            .parse2(password)
            .map_err(|_| {
                format!(
                    "cannot open the PKCS#12 archive{at}: wrong password, or a cipher this \
                     OpenSSL does not have (re-export it with AES: `openssl pkcs12 -export \
                     -keypbe AES-256-CBC -certpbe AES-256-CBC ...`)"
                )
            })?;
        let (Some(cert), Some(key)) = (parsed.cert, parsed.pkey) else {
            return Err(format!(
                "the PKCS#12 archive{at} holds no certificate with its key"
            ));
        };
        let mut certs = vec![cert];
        certs.extend(parsed.ca.into_iter().flatten());
        Ok((certs, key))
    }

    /// `CN=device-42 (issued by CN=Fleet CA, valid until Jan  1 00:00:00 2027 GMT)`.
    fn shown(cert: &X509) -> String {
        let mut s = name(cert.subject_name());
        let _ = write!(
            s,
            " (issued by {}, valid until {})",
            name(cert.issuer_name()),
            cert.not_after()
        );
        s
    }

    fn name(n: &X509NameRef) -> String {
        let parts: Vec<String> = n
            .entries()
            .map(|e| {
                let key = e.object().nid().short_name().unwrap_or("?");
                let value = e.data().to_string().unwrap_or_else(|_| "?".to_owned());
                format!("{key}={value}")
            })
            .collect();
        if parts.is_empty() {
            "(no subject)".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Built without the `client-cert` feature: a configured identity is
/// refused when the client is built.
#[cfg(not(feature = "client-cert"))]
mod without {
    use super::ClientIdentity;

    pub(crate) struct Identity {
        pub shown: String,
    }

    impl Identity {
        pub(crate) fn native(&self) -> Result<native_tls::Identity, String> {
            Err(NO_FEATURE.to_owned())
        }

        #[cfg(feature = "poll")]
        pub(crate) fn ureq(&self) -> Result<ureq::tls::ClientCert, String> {
            Err(NO_FEATURE.to_owned())
        }
    }

    const NO_FEATURE: &str = "this build of heartline has no client certificate support: \
                              turn on its `client-cert` feature";

    pub(crate) fn load(_: &ClientIdentity) -> Result<Identity, String> {
        Err(NO_FEATURE.to_owned())
    }
}
