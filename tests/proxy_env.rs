//! The proxy from the environment, as curl reads it. One test in its own
//! binary: it changes the process environment. (Which variable applies to
//! which host, NO_PROXY included, is unit-tested in src/connect/proxy.rs.)
mod common;
use common::*;

use heartline::testkit::ConnectProxy;

#[test]
fn http_proxy_carries_a_remote_host_and_loopback_and_proxy_none_bypass_it() {
    let server = server();
    let proxy = ConnectProxy::start(None).unwrap();
    // A name only the proxy can resolve, as behind a corporate proxy.
    proxy.route("push.heartline.test", server.addr());
    for v in [
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        std::env::remove_var(v);
    }
    std::env::set_var("http_proxy", proxy.url());
    let remote = format!("ws://push.heartline.test:{}/ws", server.addr().port());
    let open = |b: heartline::ClientBuilder| {
        let client = b.build().unwrap();
        wait_open(&client.events());
        client.close();
        proxy.requests().len()
    };
    assert_eq!(open(fast(remote.as_str())), 1, "http_proxy carries ws://");
    assert!(proxy.requests()[0]
        .target
        .starts_with("push.heartline.test:"));
    assert_eq!(open(fast(server.url())), 1, "loopback is never proxied");
    std::env::remove_var("http_proxy");
    std::env::set_var("ALL_PROXY", proxy.url());
    assert_eq!(open(fast(remote.as_str())), 2, "ALL_PROXY too");
    let off = fast(server.url()).proxy(None).build().unwrap();
    wait_open(&off.events());
    off.close();
    assert_eq!(proxy.requests().len(), 2);
    std::env::remove_var("ALL_PROXY");
}
