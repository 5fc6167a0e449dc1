use std::time::Duration;

use heartline::{Backoff, Client, Delivery, Error, Heartbeat, Limits, Reconnect, Timeouts, Tls};

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
                .heartbeat(Heartbeat {
                    interval: Duration::ZERO,
                    ..Heartbeat::default()
                })
                .build()
        ),
        "heartbeat.interval"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .heartbeat(Heartbeat {
                    server_timeout: Duration::ZERO,
                    ..Heartbeat::default()
                })
                .build()
        ),
        "heartbeat.server_timeout"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .heartbeat(Heartbeat {
                    server_timeout: Duration::from_secs(86_400),
                    ..Heartbeat::default()
                })
                .build()
        ),
        "heartbeat.server_timeout"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .timeouts(Timeouts {
                    connect: Duration::ZERO,
                    ..Timeouts::default()
                })
                .build()
        ),
        "timeouts.connect"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .limits(Limits {
                    inbound_capacity: 0,
                    ..Limits::default()
                })
                .build()
        ),
        "limits.inbound_capacity"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .limits(Limits {
                    outbound_capacity: 0,
                    ..Limits::default()
                })
                .build()
        ),
        "limits.outbound_capacity"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .delivery(Delivery {
                    batch_max: 0,
                    ..Delivery::default()
                })
                .build()
        ),
        "delivery.batch_max"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .reconnect(Reconnect {
                    max_attempts: 0,
                    ..Reconnect::default()
                })
                .build()
        ),
        "reconnect.max_attempts"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .reconnect(Reconnect {
                    terminal_close_codes: vec![99],
                    ..Reconnect::default()
                })
                .build()
        ),
        "reconnect.terminal_close_codes"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .tls(Tls {
                    root_certificates: vec!["garbage".into()],
                    ..Tls::default()
                })
                .build()
        ),
        "tls.root_certificates"
    );
    assert_eq!(
        field(
            Client::builder(url)
                .reconnect(Reconnect {
                    backoff: Backoff::Exponential {
                        initial: Duration::from_secs(2),
                        max: Duration::from_secs(1)
                    },
                    ..Reconnect::default()
                })
                .build()
        ),
        "reconnect.backoff"
    );
}

#[test]
fn a_bad_url_error_says_what_and_hides_the_token() {
    let err = Client::builder("https://h/ws?token=SECRET")
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Url { reason, .. } if reason.contains("`https`")),
        "names the scheme: {text}"
    );
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
