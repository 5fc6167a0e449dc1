//! Through an HTTP CONNECT proxy: ws:// and wss://, with and without
//! credentials, and every way a proxy says no.
use crate::common;
use common::*;

use heartline::testkit::{ConnectProxy, ProxyMode, TestServer};
use heartline::{ConnectionError, Phase, Polling, State, Timeouts, Tls};

fn refused(client: &heartline::Client) -> Option<ConnectionError> {
    wait_event(&client.events(), "a failed attempt", |e| {
        matches!(e.state, State::Reconnecting { .. })
    })
    .0
    .error
}

#[test]
fn ws_and_wss_go_through_the_tunnel_with_the_servers_name_for_tls() {
    let proxy = ConnectProxy::start(Some(("dev", "s3cr3t"))).unwrap();
    for server in [server(), TestServer::start_tls().unwrap()] {
        server.echo(true);
        let mut b = fast(server.url()).proxy(Some(&proxy.url_with("dev", "s3cr3t")));
        if let Some(ca) = server.ca_pem() {
            b = b.tls(Tls {
                root_certificates: vec![ca.into()],
                ..Tls::default()
            });
        }
        let client = b.build().unwrap();
        wait_open(&client.events());
        client.send("through").unwrap();
        assert_eq!(texts(&collect(&client, 1)), ["through"]);
        client.close();
    }
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs.iter().all(|r| r.tunneled && r.had_credentials),
        "{reqs:?}"
    );
}

#[test]
fn a_proxy_that_refuses_names_itself_and_its_status_never_the_password() {
    let server = server();
    let proxy = ConnectProxy::start(Some(("dev", "s3cr3t"))).unwrap();
    let client = fast(server.url())
        .proxy(Some(&proxy.url_with("dev", "wrong-pw")))
        .build()
        .unwrap();
    let e = refused(&client).expect("an error");
    let text = e.to_string();
    assert!(
        matches!(
            e,
            ConnectionError::Proxy {
                status: Some(407),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(text.contains("credentials"), "{text}");
    assert!(text.contains("127.0.0.1"), "names the proxy: {text}");
    for shown in [text, format!("{e:?}"), format!("{client:?}")] {
        assert!(!shown.contains("wrong-pw"), "{shown}");
    }
    client.close();

    for (mode, want) in [
        (ProxyMode::Refuse(403), "access list"),
        (ProxyMode::Refuse(502), "cannot reach the server"),
        (ProxyMode::Garbage, "not an HTTP proxy"),
    ] {
        let proxy = ConnectProxy::start(None).unwrap();
        proxy.set_mode(mode.clone());
        let client = fast(server.url())
            .proxy(Some(&proxy.url()))
            .build()
            .unwrap();
        let text = refused(&client).map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(want), "{mode:?}: {text}");
        client.close();
    }
}

#[test]
fn a_proxy_that_stalls_times_out_in_the_proxy_phase_and_backs_off() {
    let server = server();
    let proxy = ConnectProxy::start(None).unwrap();
    proxy.set_mode(ProxyMode::Stall);
    let client = fast(server.url())
        .proxy(Some(&proxy.url()))
        .timeouts(Timeouts {
            handshake: 200 * MS,
            ..common::timeouts()
        })
        .build()
        .unwrap();
    let e = refused(&client);
    assert!(
        matches!(
            e,
            Some(ConnectionError::Timeout {
                phase: Phase::Proxy,
                ..
            })
        ),
        "{e:?}"
    );
    // Then it recovers when the proxy does.
    proxy.set_mode(ProxyMode::Tunnel);
    wait_open(&client.events());
    client.close();
}

#[test]
fn a_proxy_that_cannot_be_reached_is_a_proxy_error() {
    let server = server();
    let gone = {
        let p = ConnectProxy::start(None).unwrap();
        p.url()
    };
    let client = fast(server.url()).proxy(Some(&gone)).build().unwrap();
    let e = refused(&client);
    assert!(
        matches!(&e, Some(ConnectionError::Proxy { status: None, reason, .. }) if reason.contains("cannot reach the proxy")),
        "{e:?}"
    );
    client.close();
}

#[test]
fn a_bad_proxy_url_is_refused_at_build() {
    let e = fast("ws://127.0.0.1:1/")
        .proxy(Some("socks5://u:pw@h:1080"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("proxy") && e.contains("only http://"), "{e}");
    assert!(!e.contains(":pw@"), "{e}");
}

#[test]
fn polls_go_through_the_same_proxy() {
    use heartline::testkit::FeedConfig;
    use heartline::{JsonRules, Method};
    let mut server = server();
    server.enable_feed(FeedConfig::default()).unwrap();
    server.publish(serde_json::json!({"n": 1}));
    server.refuse(Some(502)); // the socket fails: polling starts
    let proxy = ConnectProxy::start(Some(("dev", "pw"))).unwrap();
    let poll_url = server.poll_url().unwrap();
    let client = fast(server.url())
        .proxy(Some(&proxy.url_with("dev", "pw")))
        .protocol(
            JsonRules::new()
                .id("/id")
                .poll(poll_url.clone(), Method::Get, None),
        )
        .polling(Polling {
            after: 1,
            every: 20 * MS,
            ..Polling::default()
        })
        .build()
        .unwrap();
    let got = collect(&client, 1);
    assert_eq!(got[0].via(), heartline::Via::Poll);
    let port = poll_url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.tunneled && r.had_credentials && r.target.ends_with(&format!(":{port}"))),
        "{:?}",
        proxy.requests()
    );
    client.close();
}

#[test]
fn the_builder_shows_the_proxy_without_its_password() {
    let b = fast("ws://127.0.0.1:1/").proxy(Some("http://dev:hunter2@proxy.lan:3128"));
    let shown = format!("{b:?}");
    assert!(shown.contains("proxy.lan:3128"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
