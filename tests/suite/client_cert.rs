//! Client certificates (mutual TLS) against a real OpenSSL server that asks
//! for one: the forms a certificate comes in, a renewal on disk, and how
//! each refusal is reported.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};

use heartline::testkit::{ClientCa, ClientCert, MutualTlsServer, Presented, Refusal};
use heartline::{
    ClientBuilder, ClientIdentity, ConnectionError, Error, JsonRules, Method, Polling, Tls,
    TlsProblem,
};

/// A private directory for this test's files, empty.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("heartline-mtls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a file as a renewal would: a new file renamed over the old one.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn with(server: &MutualTlsServer, id: Option<ClientIdentity>) -> ClientBuilder {
    fast(server.url()).tls(Tls {
        root_certificates: vec![server.ca_pem().to_vec()],
        client_identity: id,
        ..Tls::default()
    })
}

fn pem(cert: &ClientCert) -> ClientIdentity {
    ClientIdentity::Pem {
        chain: cert.chain_pem.clone(),
        key: cert.key_pem.clone(),
    }
}

/// The TLS problem and advice of a single failed attempt.
fn refused(b: ClientBuilder) -> (TlsProblem, String) {
    let ev = one_attempt(b);
    match ev.error {
        Some(ConnectionError::Tls {
            problem, reason, ..
        }) => (problem, reason),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[test]
fn every_form_of_identity_is_presented() {
    let ca = ClientCa::new("fleet CA").unwrap();
    let server = MutualTlsServer::start(&ca.ca_pem().unwrap(), Refusal::Alert).unwrap();
    let d = dir("forms");
    let forms: Vec<(&str, ClientIdentity)> = {
        let c = ca.issue("dev-pem").unwrap();
        let files = ca.issue("dev-files").unwrap();
        put(&d.join("chain.pem"), &files.chain_pem);
        put(&d.join("key.pem"), &files.key_pem);
        let trad = ca.issue("dev-traditional").unwrap();
        let p12 = ca.issue("dev-p12").unwrap();
        let p12f = ca.issue("dev-p12-file").unwrap();
        put(&d.join("id.p12"), &p12f.pkcs12("s3cret").unwrap());
        vec![
            ("dev-pem", pem(&c)),
            (
                "dev-files",
                ClientIdentity::PemFiles {
                    chain: d.join("chain.pem"),
                    key: d.join("key.pem"),
                },
            ),
            (
                "dev-traditional",
                ClientIdentity::Pem {
                    chain: trad.chain_pem.clone(),
                    key: trad.key_pem_traditional.clone(),
                },
            ),
            (
                "dev-p12",
                ClientIdentity::Pkcs12 {
                    der: p12.pkcs12("").unwrap(),
                    password: String::new(),
                },
            ),
            (
                "dev-p12-file",
                ClientIdentity::Pkcs12File {
                    path: d.join("id.p12"),
                    password: "s3cret".into(),
                },
            ),
        ]
    };
    for (cn, id) in forms {
        let client = with(&server, Some(id)).build().unwrap();
        assert_eq!(
            texts(&collect(&client, 1)),
            vec![format!("hello {cn}")],
            "{cn}"
        );
        client.close();
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_certificate_renewed_on_disk_is_used_at_the_next_attempt() {
    let ca = ClientCa::new("fleet CA").unwrap();
    let server = MutualTlsServer::start(&ca.ca_pem().unwrap(), Refusal::Alert).unwrap();
    let d = dir("renew");
    let (chain, key) = (d.join("chain.pem"), d.join("key.pem"));
    let old = ca.issue("dev-2026").unwrap();
    put(&chain, &old.chain_pem);
    put(&key, &old.key_pem);
    let id = ClientIdentity::PemFiles {
        chain: chain.clone(),
        key: key.clone(),
    };
    let client = with(&server, Some(id)).build().unwrap();
    assert_eq!(texts(&collect(&client, 1)), vec!["hello dev-2026"]);

    // Half a renewal: the new certificate, the old key. The attempt fails
    // with a problem of its own, and the client keeps trying.
    let new = ca.issue("dev-2027").unwrap();
    put(&chain, &new.chain_pem);
    let events = client.events();
    server.drop_all();
    let (ev, _) = wait_event(&events, "the half-renewed identity refused", |e| {
        matches!(
            &e.error,
            Some(ConnectionError::Tls {
                problem: TlsProblem::ClientIdentity,
                ..
            })
        )
    });
    let why = why(&ev.error);
    assert!(
        why.contains("does not match") && why.contains("dev-2027"),
        "{why}"
    );
    // The renewal completes: the next attempt presents the new certificate.
    put(&key, &new.key_pem);
    assert_eq!(texts(&collect(&client, 1)), vec!["hello dev-2027"]);
    client.close();
    assert_eq!(
        server.presented(),
        vec![
            Presented::Accepted("dev-2026".into()),
            Presented::Accepted("dev-2027".into())
        ]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_server_that_requires_a_certificate_none_configured_says_so() {
    let ca = ClientCa::new("fleet CA").unwrap();
    for refusal in [Refusal::Alert, Refusal::AlertTls12, Refusal::Nginx400] {
        let server = MutualTlsServer::start(&ca.ca_pem().unwrap(), refusal).unwrap();
        let (problem, reason) = refused(with(&server, None));
        // Over TLS 1.2 OpenSSL's server says only "handshake failure",
        // which a cipher mismatch says too: the advice names both.
        let expected = match refusal {
            Refusal::AlertTls12 => TlsProblem::Other,
            _ => TlsProblem::ClientCertificate,
        };
        assert_eq!(problem, expected, "{refusal:?}: {reason}");
        assert!(
            reason.contains("none is configured") && reason.contains("client_identity"),
            "{refusal:?}: {reason}"
        );
        assert!(server.wait_for(WAIT, |p| p == [Presented::Refused]));
    }
}

#[test]
fn a_certificate_the_server_does_not_trust_is_named_in_the_advice() {
    let ca = ClientCa::new("fleet CA").unwrap();
    let other = ClientCa::new("someone else's CA").unwrap();
    let stranger = other.issue("stranger").unwrap();
    for refusal in [Refusal::Alert, Refusal::AlertTls12, Refusal::Nginx400] {
        let server = MutualTlsServer::start(&ca.ca_pem().unwrap(), refusal).unwrap();
        let (problem, reason) = refused(with(&server, Some(pem(&stranger))));
        assert_eq!(
            problem,
            TlsProblem::ClientCertificate,
            "{refusal:?}: {reason}"
        );
        assert!(
            reason.contains("CN=stranger") && reason.contains("someone else's CA"),
            "the certificate sent and its issuer: {refusal:?}: {reason}"
        );
    }
}

#[test]
fn a_key_that_does_not_match_or_a_missing_file_is_refused_at_build() {
    let ca = ClientCa::new("fleet CA").unwrap();
    let (a, b) = (ca.issue("a").unwrap(), ca.issue("b").unwrap());
    let mismatched = ClientIdentity::Pem {
        chain: a.chain_pem.clone(),
        key: b.key_pem.clone(),
    };
    let missing = ClientIdentity::PemFiles {
        chain: "/nonexistent/chain.pem".into(),
        key: "/nonexistent/key.pem".into(),
    };
    let wrong_password = ClientIdentity::Pkcs12 {
        der: a.pkcs12("right").unwrap(),
        password: "wrong".into(),
    };
    for (id, says) in [
        (mismatched, "does not match"),
        (missing, "/nonexistent/chain.pem"),
        (wrong_password, "wrong password"),
    ] {
        let e = fast("wss://localhost:1/")
            .tls(Tls {
                client_identity: Some(id),
                ..Tls::default()
            })
            .build()
            .expect_err("refused at build");
        match e {
            Error::Config { field, reason } => {
                assert_eq!(field, "tls.client_identity");
                assert!(reason.contains(says), "{reason}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn the_key_and_the_password_never_show_in_debug() {
    let ca = ClientCa::new("fleet CA").unwrap();
    let c = ca.issue("dev").unwrap();
    let tls = Tls {
        client_identity: Some(pem(&c)),
        ..Tls::default()
    };
    let key_text = String::from_utf8(c.key_pem.clone()).unwrap();
    let key_line = key_text.lines().nth(1).unwrap();
    let shown = format!("{tls:?}");
    assert!(!shown.contains(key_line), "{shown}");
    let p12 = ClientIdentity::Pkcs12File {
        path: "/etc/device/id.p12".into(),
        password: "hunter2-secret".into(),
    };
    let shown = format!("{p12:?}");
    assert!(shown.contains("/etc/device/id.p12") && !shown.contains("hunter2"));
}

#[test]
fn polls_present_the_certificate_too() {
    let ca = ClientCa::new("fleet CA").unwrap();
    let server = MutualTlsServer::start(&ca.ca_pem().unwrap(), Refusal::Alert).unwrap();
    let (_closed, port) = refusing_port();
    let client = fast(format!("ws://127.0.0.1:{port}/"))
        .tls(Tls {
            root_certificates: vec![server.ca_pem().to_vec()],
            client_identity: Some(pem(&ca.issue("dev-poll").unwrap())),
            ..Tls::default()
        })
        .protocol(
            JsonRules::new()
                .id("/id")
                .poll(server.poll_url(), Method::Get, None),
        )
        .polling(Polling {
            after: 1,
            every: 20 * MS,
            ..Polling::default()
        })
        .build()
        .unwrap();
    let got = collect(&client, 1);
    assert_eq!(
        got[0]
            .json()
            .and_then(|v| v["text"].as_str().map(str::to_owned)),
        Some("polled dev-poll".to_owned())
    );
    client.close();
}
