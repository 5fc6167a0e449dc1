//! A CA and a server certificate for 127.0.0.1 / localhost, made at run
//! time with OpenSSL (already linked by native-tls), so no key is committed.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509NameRef, X509};

/// PEM material for a TLS test server.
pub(crate) struct Material {
    pub ca_pem: Vec<u8>,
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

fn key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn name(cn: &str) -> Result<X509Name, ErrorStack> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_text("O", "heartline testkit")?;
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

/// What is wrong with the server's certificate, for testing how a client
/// reports each failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CertProblem {
    /// A good certificate for `127.0.0.1` and `localhost`, issued by the CA.
    #[default]
    None,
    /// Issued by the CA, but expired yesterday.
    Expired,
    /// Issued by the CA, but valid only from ten days from now (what a
    /// device whose clock is behind sees).
    NotYetValid,
    /// Issued by the CA for `other.example` and `10.9.8.7` only.
    OtherHost,
    /// Self-signed, not issued by the CA.
    SelfSigned,
}

fn builder(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    key: &PKey<Private>,
) -> Result<X509Builder, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    b.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    b.set_pubkey(key)?;
    b.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    b.set_not_after(Asn1Time::days_from_now(30)?.as_ref())?;
    Ok(b)
}

/// A CA certificate named `cn` and its key.
fn make_ca(cn: &str) -> Result<(X509, PKey<Private>), ErrorStack> {
    let ca_key = key()?;
    let ca_name = name(cn)?;
    let mut ca = builder(&ca_name, &ca_name, &ca_key)?;
    ca.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    ca.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&ca.x509v3_context(None, None))?;
    ca.append_extension(ski)?;
    ca.sign(&ca_key, MessageDigest::sha256())?;
    Ok((ca.build(), ca_key))
}

pub(crate) fn generate(problem: CertProblem) -> Result<Material, ErrorStack> {
    let (ca, ca_key) = make_ca("heartline test CA")?;

    let leaf_key = key()?;
    let leaf_name = name("localhost")?;
    let self_signed = problem == CertProblem::SelfSigned;
    let issuer = if self_signed {
        leaf_name.as_ref()
    } else {
        ca.subject_name()
    };
    let mut leaf = builder(&leaf_name, issuer, &leaf_key)?;
    match problem {
        // Fixed past dates and days_from_now: both work where time_t is
        // 32 bits (armv7), unlike from_unix with an i64.
        CertProblem::Expired => {
            leaf.set_not_before(Asn1Time::from_str("20200101000000Z")?.as_ref())?;
            leaf.set_not_after(Asn1Time::from_str("20200201000000Z")?.as_ref())?;
        }
        CertProblem::NotYetValid => {
            leaf.set_not_before(Asn1Time::days_from_now(10)?.as_ref())?;
            leaf.set_not_after(Asn1Time::days_from_now(40)?.as_ref())?;
        }
        _ => {}
    }
    leaf.append_extension(BasicConstraints::new().build()?)?;
    leaf.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_agreement()
            .build()?,
    )?;
    leaf.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let (dns, ip) = match problem {
        CertProblem::OtherHost => ("other.example", "10.9.8.7"),
        _ => ("localhost", "127.0.0.1"),
    };
    let san = SubjectAlternativeName::new()
        .dns(dns)
        .ip(ip)
        .build(&leaf.x509v3_context(Some(&ca), None))?;
    leaf.append_extension(san)?;
    if !self_signed {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&leaf.x509v3_context(Some(&ca), None))?;
        leaf.append_extension(aki)?;
    }
    leaf.sign(
        if self_signed { &leaf_key } else { &ca_key },
        MessageDigest::sha256(),
    )?;
    let leaf = leaf.build();

    let ca_pem = ca.to_pem()?;
    let mut chain_pem = leaf.to_pem()?;
    if !self_signed {
        chain_pem.extend_from_slice(&ca_pem);
    }
    Ok(Material {
        ca_pem,
        chain_pem,
        key_pem: leaf_key.private_key_to_pem_pkcs8()?,
    })
}

/// A CA that issues client certificates, made at run time: for testing
/// mutual TLS ([`crate::Tls::client_identity`]) against
/// [`super::MutualTlsServer`].
pub struct ClientCa {
    cert: X509,
    key: PKey<Private>,
}

/// A client certificate issued by a [`ClientCa`].
pub struct ClientCert {
    /// The certificate chain, PEM (the certificate, then the CA).
    pub chain_pem: Vec<u8>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Vec<u8>,
    /// The same key in the traditional form (`BEGIN EC PRIVATE KEY`).
    pub key_pem_traditional: Vec<u8>,
    cert: X509,
    key: PKey<Private>,
    ca: X509,
}

impl ClientCa {
    /// A new CA named `cn`.
    ///
    /// # Errors
    /// When OpenSSL cannot make it.
    pub fn new(cn: &str) -> std::io::Result<ClientCa> {
        make_ca(cn)
            .map(|(cert, key)| ClientCa { cert, key })
            .map_err(std::io::Error::other)
    }

    /// The CA's certificate, PEM (what a server trusts).
    ///
    /// # Errors
    /// When OpenSSL cannot encode it.
    pub fn ca_pem(&self) -> std::io::Result<Vec<u8>> {
        self.cert.to_pem().map_err(std::io::Error::other)
    }

    /// A client certificate (extended key usage clientAuth) for `cn`.
    ///
    /// # Errors
    /// When OpenSSL cannot make it.
    pub fn issue(&self, cn: &str) -> std::io::Result<ClientCert> {
        let make = || -> Result<ClientCert, ErrorStack> {
            let key = key()?;
            let n = name(cn)?;
            let mut b = builder(&n, self.cert.subject_name(), &key)?;
            b.append_extension(BasicConstraints::new().build()?)?;
            b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
            b.sign(&self.key, MessageDigest::sha256())?;
            let cert = b.build();
            let mut chain_pem = cert.to_pem()?;
            chain_pem.extend(self.cert.to_pem()?);
            Ok(ClientCert {
                chain_pem,
                key_pem: key.private_key_to_pem_pkcs8()?,
                key_pem_traditional: key.ec_key()?.private_key_to_pem()?,
                cert,
                key,
                ca: self.cert.clone(),
            })
        };
        make().map_err(std::io::Error::other)
    }
}

impl ClientCert {
    /// The certificate, its CA and its key as a PKCS#12 archive (DER).
    ///
    /// # Errors
    /// When OpenSSL cannot make it.
    pub fn pkcs12(&self, password: &str) -> std::io::Result<Vec<u8>> {
        let make = || -> Result<Vec<u8>, ErrorStack> {
            let mut ca = openssl::stack::Stack::new()?;
            ca.push(self.ca.clone())?;
            openssl::pkcs12::Pkcs12::builder()
                .name("device")
                .pkey(&self.key)
                .cert(&self.cert)
                .ca(ca)
                .build2(password)?
                .to_der()
        };
        make().map_err(std::io::Error::other)
    }
}
