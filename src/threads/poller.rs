//! The HTTP poller: runs only while the WebSocket is degraded. Polls at once,
//! then every `Polling::every`, backing off while the endpoint fails. Its items
//! go through the same inbox as the socket's, so a message that arrives by
//! both is delivered once.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, info, warn};

use crate::config::sections::Polling;
use crate::config::{Config, EndpointFn};
use crate::delivery::inbox::Inbox;
use crate::error::guarded;
use crate::error::ConnectionError;
use crate::machine::backoff::Backoff;
use crate::message::Offer;
use crate::message::{Message, Meta, Via};
use crate::protocol::Polled;
use crate::protocol::Protocol;
use crate::redact;
use crate::redact::head;
use crate::shared::Shared;
use crate::threads::poll_http;

use super::poll_http::Agent;

/// What the poller needs from the configuration, and nothing more.
pub(crate) struct PollSettings {
    pub poll: Polling,
    pub protocol: Arc<dyn Protocol>,
    pub endpoint: Arc<EndpointFn>,
    pub max_retry_after: std::time::Duration,
}

impl From<&Config> for PollSettings {
    fn from(cfg: &Config) -> Self {
        PollSettings {
            poll: cfg.polling,
            protocol: cfg.protocol.clone(),
            endpoint: cfg.endpoint.clone(),
            max_retry_after: cfg.reconnect.max_retry_after,
        }
    }
}

pub(crate) fn run(
    cfg: &PollSettings,
    shared: &Shared,
    inbox: &Arc<Inbox>,
    agent: &Agent,
    stop: &Receiver<()>,
) {
    info!("polling started");
    let mut failures = 0u32;
    let mut last_error = None;
    loop {
        let mut hint = None;
        let p = Poll {
            cfg,
            shared,
            inbox,
            agent,
            stop,
        };
        match poll_once(&p, last_error.take()) {
            Ok(Some(n)) => {
                failures = 0;
                shared.counters.polls.fetch_add(1, Relaxed);
                debug!("poll delivered {n} new messages");
            }
            Ok(None) => return, // stopped while waiting for queue space
            // Stopping ends the request in flight: that is no failure.
            Err(_) if stopped(stop) => break,
            Err((e, retry_after)) => {
                failures = failures.saturating_add(1);
                warn!("{e}");
                hint = Some((e.status(), retry_after));
                last_error = Some(e.clone());
                shared.poll_failed(e);
            }
        }
        // Back off while the endpoint keeps failing: 1, 2, 4, 8 intervals
        // (machine::backoff's exponential rule, without its jitter: the
        // interval is the application's choice); longer when a 429 or 503
        // said when to come back.
        let delay = match failures {
            0 => cfg.poll.every,
            n => Backoff::Exponential {
                initial: cfg.poll.every,
                max: cfg.poll.every.saturating_mul(8),
            }
            .delay(n - 1, 1.0),
        };
        let delay = match hint {
            Some((status, retry_after)) => crate::machine::hints::hinted(
                delay,
                status,
                retry_after.as_deref(),
                crate::clock::unix_now(),
                cfg.max_retry_after,
            ),
            None => delay,
        };
        match stop.recv_timeout(delay) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    info!("polling stopped");
}

/// Whether the supervisor has told the poller to stop.
fn stopped(stop: &Receiver<()>) -> bool {
    matches!(
        stop.try_recv(),
        Ok(()) | Err(crossbeam_channel::TryRecvError::Disconnected)
    )
}

/// What one poll works with.
struct Poll<'a> {
    cfg: &'a PollSettings,
    shared: &'a Shared,
    inbox: &'a Inbox,
    agent: &'a Agent,
    stop: &'a Receiver<()>,
}

/// One poll. `Ok(Some(n))`: n messages queued; `Ok(None)`: told to stop;
/// `Err`: what failed and where, with the answer's `Retry-After`.
fn poll_once(
    p: &Poll<'_>,
    last_error: Option<ConnectionError>,
) -> std::result::Result<Option<usize>, (ConnectionError, Option<String>)> {
    let mut retry_after = None;
    poll_inner(p, last_error, &mut retry_after).map_err(|e| (e, retry_after))
}

fn poll_inner(
    p: &Poll<'_>,
    last_error: Option<ConnectionError>,
    retry_after: &mut Option<String>,
) -> std::result::Result<Option<usize>, ConnectionError> {
    let Poll {
        cfg,
        shared,
        inbox,
        agent,
        stop,
    } = *p;
    let cursor = inbox.cursor();
    // Application code runs through the guard: a panic fails this poll.
    let Some(req) = guarded("poll_request", || {
        cfg.protocol.poll_request(cursor.as_ref())
    })?
    else {
        return Ok(Some(0));
    };
    let shown = redact::url(&req.url);
    let fail = |status: Option<u16>, reason: String| ConnectionError::Poll {
        url: shown.clone(),
        status,
        reason,
    };
    let ectx = crate::config::EndpointContext {
        last_error,
        for_poll: true,
    };
    let endpoint = guarded("endpoint", || (cfg.endpoint)(&ectx))?;
    let answer = poll_http::fetch(agent, &req, &endpoint.headers, cfg.poll.max_body)
        .map_err(|(status, reason)| fail(status, reason))?;
    let (status, body) = (answer.status, answer.body);
    *retry_after = answer.retry_after;
    if !(200..300).contains(&status) {
        return Err(fail(
            Some(status),
            format!(
                "HTTP {status}: {}",
                head(&String::from_utf8_lossy(&body[..body.len().min(120)]))
            ),
        ));
    }
    let items = guarded("parse_poll", || cfg.protocol.parse_poll(&body))?
        .map_err(|e| fail(Some(status), format!("(HTTP {status}) {e}")))?;
    let mut queued = 0;
    for item in items {
        let Polled { frame, kinds, .. } = match item {
            Ok(p) => p,
            Err(e) => {
                shared.counters.malformed.fetch_add(1, Relaxed);
                warn!("poll {shown}: skipped an item: {e}");
                continue;
            }
        };
        let inspected = match guarded("inspect", || cfg.protocol.inspect(&frame)) {
            Ok(i) => i,
            Err(e) => {
                // One message's panic skips that message, not the poll.
                shared.counters.malformed.fetch_add(1, Relaxed);
                warn!("poll {shown}: skipped an item: {e}");
                continue;
            }
        };
        let mut meta = Meta::from(inspected);
        // The place in the response decides, when it names kinds.
        if !kinds.is_empty() {
            meta.kinds = kinds;
        }
        // The poll endpoint is read by cursor: nothing to acknowledge.
        meta.ack = None;
        let mut m = Message::with_meta(frame, Via::Poll, Instant::now(), meta);
        loop {
            match inbox.offer(m, true) {
                Offer::Queued { .. } => {
                    queued += 1;
                    break;
                }
                Offer::Duplicate { .. } => break,
                Offer::Closed => return Ok(None),
                Offer::Full(back) => {
                    // The application is behind: wait for room (the
                    // consumer signals), or stop.
                    m = back;
                    if inbox.flow().wait_for_room(stop) {
                        return Ok(None);
                    }
                }
            }
        }
    }
    Ok(Some(queued))
}
