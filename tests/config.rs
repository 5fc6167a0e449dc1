mod common;

use std::time::Duration;

use heartline::{Backoff, Client, Error};

fn field(r: heartline::Result<Client>) -> String {
    match r {
        Err(Error::Config { field, .. }) => field.to_owned(),
        Err(Error::Url { .. }) => "url".to_owned(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn config_errors_come_back_at_once_and_name_the_field() {
    let url = "ws://127.0.0.1:9/";
    assert_eq!(field(Client::builder("http://127.0.0.1/").build()), "url");
    assert_eq!(field(Client::builder("not a url").build()), "url");
    assert_eq!(
        field(
            Client::builder(url)
                .heartbeat_interval(Duration::ZERO)
                .build()
        ),
        "heartbeat_interval"
    );
    assert_eq!(
        field(Client::builder(url).server_timeout(Duration::ZERO).build()),
        "server_timeout"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .server_timeout(Duration::from_secs(86_400))
                .build()
        ),
        "server_timeout"
    );
    assert_eq!(
        field(Client::builder(url).connect_timeout(Duration::ZERO).build()),
        "connect_timeout"
    );
    assert_eq!(
        field(Client::builder(url).inbound_capacity(0).build()),
        "inbound_capacity"
    );
    assert_eq!(
        field(Client::builder(url).outbound_capacity(0).build()),
        "outbound_capacity"
    );
    assert_eq!(
        field(Client::builder(url).batch_max(0).build()),
        "batch_max"
    );
    assert_eq!(
        field(Client::builder(url).max_attempts(Some(0)).build()),
        "max_attempts"
    );
    assert_eq!(
        field(Client::builder(url).terminal_close_codes([99]).build()),
        "terminal_close_codes"
    );
    assert_eq!(
        field(Client::builder(url).root_certificate_pem("garbage").build()),
        "root_certificate_pem"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .backoff(Backoff::Exponential {
                    initial: Duration::from_secs(2),
                    max: Duration::from_secs(1)
                })
                .build()
        ),
        "backoff"
    );
}

#[test]
fn a_bad_url_error_says_what_and_hides_the_token() {
    let err = Client::builder("https://h/ws?token=SECRET")
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("scheme `https` is not ws or wss"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}

#[test]
fn an_ack_template_that_is_not_an_object_is_refused() {
    let rules = heartline::JsonRules::new()
        .id("/id")
        .ack(serde_json::json!("ack"), [("/id", "id")]);
    let r = Client::builder("ws://127.0.0.1:9/").protocol(rules).build();
    match r {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "protocol");
            assert!(reason.contains("JSON object"), "{reason}");
        }
        other => panic!("expected a config error, got {:?}", other.err()),
    }
}
