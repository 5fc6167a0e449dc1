//! [`JsonRules`]: a [`Protocol`] made of JSON-pointer rules, for servers
//! that speak JSON: ids, cursors, kinds, acks, reliable frames and polls,
//! without writing the trait by hand.

use serde_json::Value;

use crate::frame::{Cursor, Frame};
use crate::protocol::{Inspected, Method, PollItem, PollRequest, Polled, Protocol};
use crate::redact::head;

/// Where a poll response holds messages, and what they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Place {
    /// JSON pointer to the array ("" for the body itself).
    pointer: String,
    /// The array holds strings, each one message (such as a list of
    /// URLs), rather than objects.
    strings: bool,
    /// Kinds given to every item found here.
    kinds: Vec<String>,
}

/// Takes the items out of every place. A place that is absent or `null`
/// holds nothing, as long as one place is there at all.
pub(crate) fn items_at(mut body: Value, places: &[Place]) -> Result<Vec<PollItem>, String> {
    let mut out = Vec::new();
    let mut found = false;
    for place in places {
        let at = if place.pointer.is_empty() {
            Some(&mut body)
        } else {
            body.pointer_mut(&place.pointer)
        };
        let shown = if place.pointer.is_empty() {
            "the body"
        } else {
            place.pointer.as_str()
        };
        match at {
            Some(Value::Array(items)) => {
                found = true;
                out.extend(
                    std::mem::take(items)
                        .into_iter()
                        .map(|item| item_of(item, place, shown)),
                );
            }
            Some(Value::Null) => found = true,
            Some(other) => {
                return Err(format!(
                    "{shown} is not an array: {}",
                    head(&other.to_string())
                ))
            }
            None => {}
        }
    }
    if found {
        return Ok(out);
    }
    let names: Vec<&str> = places
        .iter()
        .map(|p| {
            if p.pointer.is_empty() {
                "the body"
            } else {
                p.pointer.as_str()
            }
        })
        .collect();
    Err(format!("no {} in the response", names.join(" or ")))
}

fn item_of(item: Value, place: &Place, shown: &str) -> PollItem {
    let frame = match item {
        Value::Object(_) if !place.strings => Frame::Text(item.to_string()),
        Value::String(s) if place.strings => Frame::Text(s),
        other => {
            let want = if place.strings {
                "a string"
            } else {
                "a JSON object"
            };
            return Err(format!(
                "item in {shown} is not {want}: {}",
                head(&other.to_string())
            ));
        }
    };
    Ok(Polled::new(frame, place.kinds.clone()))
}

/// How to build an ack frame: a JSON template plus fields copied from the
/// message.
#[derive(Clone, Debug, PartialEq)]
struct AckRule {
    when: Option<(String, Value)>,
    template: serde_json::Map<String, Value>,
    copy: Vec<(String, String)>,
    /// The template given was not an object: refused at `build()`.
    not_an_object: Option<String>,
}

/// Where the kind is and what each of its values means.
type KindRule = (String, Vec<(String, Vec<String>)>);

/// A [`Protocol`] made of JSON-pointer rules, for servers that speak JSON.
///
/// A notice feed with ids, a creation time as the cursor, kinds, an ack
/// for each notice, and a poll endpoint (the
/// [protocol guide](crate::guide::protocol) explains each rule):
///
/// ```
/// use heartline::{JsonRules, Method};
/// use serde_json::json;
/// let rules = JsonRules::new()
///     .id("/id")
///     .cursor("/createdAt")
///     .kinds("/kind", [("1", &["text"][..]), ("2", &["audio"]), ("3", &["text", "audio"])])
///     .ack_when("/type", json!(4), json!({"type": 3, "device": 7}), [("/id", "id"), ("/kind", "kind")])
///     .poll("https://push.example.com/notices", Method::Post, Some(r#"{"what":"missed"}"#.into()))
///     .poll_success("/status", json!("ok"))
///     .poll_items("/data/notices")
///     .poll_strings("/data/mediaUrls", &["audio"]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct JsonRules {
    id: Option<String>,
    cursor: Option<String>,
    kinds: Option<KindRule>,
    ack: Option<AckRule>,
    poll: Option<PollRequest>,
    since: Option<String>,
    success: Option<(String, Value)>,
    places: Vec<Place>,
    reliable: Option<String>,
    acked_by: Option<(String, Value, String)>,
}

fn pointer(p: &str) -> String {
    if p.is_empty() || p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

impl JsonRules {
    /// No rules: every frame is a message.
    pub fn new() -> Self {
        JsonRules::default()
    }

    /// Where the message id is (a JSON pointer such as `/id`).
    pub fn id(mut self, pointer_to: &str) -> Self {
        self.id = Some(pointer(pointer_to));
        self
    }

    /// Where the cursor is (`/createTime`, `/seq`).
    pub fn cursor(mut self, pointer_to: &str) -> Self {
        self.cursor = Some(pointer(pointer_to));
        self
    }

    /// Where the kind is, and which kinds each value means. A value not in
    /// the map is its own kind (its text).
    pub fn kinds<'a>(
        mut self,
        pointer_to: &str,
        map: impl IntoIterator<Item = (&'a str, &'a [&'a str])>,
    ) -> Self {
        let map = map
            .into_iter()
            .map(|(v, ks)| (v.to_owned(), ks.iter().map(|k| (*k).to_owned()).collect()))
            .collect();
        self.kinds = Some((pointer(pointer_to), map));
        self
    }

    /// Acknowledge messages with `template` (a JSON object) plus the
    /// fields copied from the message (`(from pointer, to key)`). Only a
    /// message in which **every** field to copy is found (and not `null`)
    /// is acked: a welcome frame or an echo without an id gets no bare ack.
    /// A template that is not an object is refused by `build()`.
    pub fn ack<'a>(
        mut self,
        template: Value,
        copy: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let not_an_object = (!template.is_object()).then(|| {
            let text = template.to_string();
            let mut shown: String = text.chars().take(40).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            format!("the ack template must be a JSON object, got {shown}")
        });
        self.ack = Some(AckRule {
            when: None,
            template: match template {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
            copy: copy
                .into_iter()
                .map(|(f, t)| (pointer(f), t.to_owned()))
                .collect(),
            not_an_object,
        });
        self
    }

    /// Like [`JsonRules::ack`], only for messages whose `pointer` equals
    /// `value` (for example, ack only frames whose `type` is 4).
    pub fn ack_when<'a>(
        self,
        pointer_to: &str,
        value: Value,
        template: Value,
        copy: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut s = self.ack(template, copy);
        if let Some(a) = s.ack.as_mut() {
            a.when = Some((pointer(pointer_to), value));
        }
        s
    }

    /// Outbound frames with a value at this pointer are reliable: kept until
    /// the server acknowledges that id (see [`JsonRules::acked_by`]) and
    /// sent again after every reconnect.
    pub fn reliable(mut self, pointer_to: &str) -> Self {
        self.reliable = Some(pointer(pointer_to));
        self
    }

    /// The server's acknowledgement of a reliable frame: an inbound object
    /// whose `pointer_to` equals `value`, naming the acknowledged id at
    /// `id_at` (for `{"type":"ack","id":"r-7"}`:
    /// `.acked_by("/type", json!("ack"), "/id")`). Such frames are consumed,
    /// not delivered.
    pub fn acked_by(mut self, pointer_to: &str, value: Value, id_at: &str) -> Self {
        self.acked_by = Some((pointer(pointer_to), value, pointer(id_at)));
        self
    }

    /// Enables the HTTP polling fallback with this request.
    pub fn poll(mut self, url: impl Into<String>, method: Method, body: Option<String>) -> Self {
        self.poll = Some(PollRequest {
            url: url.into(),
            method,
            body,
        });
        self
    }

    /// The query parameter that carries the cursor on polls (`since`).
    pub fn poll_since(mut self, param: &str) -> Self {
        self.since = Some(param.to_owned());
        self
    }

    /// A response is good only when `pointer` equals `value`
    /// (for example `/status` == `"ok"`).
    pub fn poll_success(mut self, pointer_to: &str, value: Value) -> Self {
        self.success = Some((pointer(pointer_to), value));
        self
    }

    /// Where an array of message objects is in a poll response (default:
    /// the body is the array). Repeatable: each call adds a place, and items
    /// are taken from every place, in the order the places were added. A
    /// place that is absent or `null` in a response holds nothing, as long
    /// as one of the places is there.
    pub fn poll_items(self, pointer_to: &str) -> Self {
        self.poll_place(pointer_to, false, &[])
    }

    /// Like [`JsonRules::poll_items`], and every item found there is of
    /// these kinds (they replace the kinds the `kinds` rule would find).
    pub fn poll_items_of_kind(self, pointer_to: &str, kinds: &[&str]) -> Self {
        self.poll_place(pointer_to, false, kinds)
    }

    /// A place holding an array of strings, each one message whose text is
    /// the string, of these kinds: a list of media URLs at
    /// `/data/mediaUrls`, with kinds `["audio"]`. Such items have no id: a repeated string is
    /// dropped as a duplicate (within the dedupe window).
    pub fn poll_strings(self, pointer_to: &str, kinds: &[&str]) -> Self {
        self.poll_place(pointer_to, true, kinds)
    }

    fn poll_place(mut self, pointer_to: &str, strings: bool, kinds: &[&str]) -> Self {
        self.places.push(Place {
            pointer: pointer(pointer_to),
            strings,
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        });
        self
    }

    fn needs_json(&self) -> bool {
        self.id.is_some()
            || self.cursor.is_some()
            || self.kinds.is_some()
            || self.ack.is_some()
            || self.acked_by.is_some()
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Protocol for JsonRules {
    fn inspect(&self, frame: &Frame) -> Inspected {
        let mut out = Inspected::default();
        if !self.needs_json() {
            return out;
        }
        let Some(Value::Object(obj)) = frame.json() else {
            return out;
        };
        let v = Value::Object(obj);
        if let Some((p, want, id_at)) = &self.acked_by {
            if v.pointer(p) == Some(want) {
                out.acknowledges = v.pointer(id_at).filter(|x| !x.is_null()).map(scalar_text);
                if out.acknowledges.is_some() {
                    return out;
                }
            }
        }
        out.id = self
            .id
            .as_deref()
            .and_then(|p| v.pointer(p))
            .filter(|x| !x.is_null())
            .map(scalar_text);
        out.cursor = self
            .cursor
            .as_deref()
            .and_then(|p| v.pointer(p))
            .and_then(Cursor::from_json);
        if let Some((p, map)) = &self.kinds {
            if let Some(k) = v.pointer(p).filter(|x| !x.is_null()) {
                let k = scalar_text(k);
                out.kinds = map
                    .iter()
                    .find(|(value, _)| *value == k)
                    .map(|(_, ks)| ks.clone())
                    .unwrap_or_else(|| vec![k]);
            }
        }
        if let Some(rule) = &self.ack {
            let applies = rule
                .when
                .as_ref()
                .is_none_or(|(p, want)| v.pointer(p) == Some(want));
            if applies {
                let mut ack = rule.template.clone();
                // Every field, or no ack: an ack without the id it is for
                // would ack nothing (and may feed an echoing server).
                let complete = rule.copy.iter().all(|(from, to)| {
                    match v.pointer(from).filter(|x| !x.is_null()) {
                        Some(x) => {
                            ack.insert(to.clone(), x.clone());
                            true
                        }
                        None => false,
                    }
                });
                if complete {
                    out.ack = Some(Frame::Text(Value::Object(ack).to_string()));
                }
            }
        }
        out
    }

    fn check(&self) -> Result<(), String> {
        match self.ack.as_ref().and_then(|a| a.not_an_object.clone()) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn reliable_id(&self, frame: &Frame) -> Option<String> {
        let p = self.reliable.as_deref()?;
        let v = frame.json()?;
        v.pointer(p).filter(|x| !x.is_null()).map(scalar_text)
    }

    fn poll_request(&self, cursor: Option<&Cursor>) -> Option<PollRequest> {
        let mut req = self.poll.clone()?;
        if let (Some(param), Some(c)) = (&self.since, cursor) {
            let sep = if req.url.contains('?') { '&' } else { '?' };
            req.url = format!("{}{sep}{param}={}", req.url, encode(&c.to_string()));
        }
        Some(req)
    }

    fn parse_poll(&self, body: &[u8]) -> Result<Vec<PollItem>, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "body is not JSON ({e}): {}",
                head(&String::from_utf8_lossy(&body[..body.len().min(120)]))
            )
        })?;
        if let Some((p, want)) = &self.success {
            let got = v.pointer(p);
            if got != Some(want) {
                return Err(format!(
                    "success rule {p} == {want} failed (got {})",
                    got.map_or("nothing".to_owned(), |g| head(&g.to_string()))
                ));
            }
        }
        if self.places.is_empty() {
            items_at(v, &[Place::default()])
        } else {
            items_at(v, &self.places)
        }
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Plain;
    use serde_json::json;

    fn notices() -> JsonRules {
        JsonRules::new()
            .id("id")
            .cursor("/createdAt")
            .kinds(
                "/kind",
                [
                    ("1", &["text"][..]),
                    ("2", &["audio"]),
                    ("3", &["text", "audio"]),
                ],
            )
            .ack_when(
                "/type",
                json!(4),
                json!({"type": 3, "device": 7}),
                [("/id", "id"), ("/kind", "kind")],
            )
            .poll(
                "http://h/notices",
                Method::Post,
                Some(r#"{"what":"missed"}"#.into()),
            )
            .poll_success("/status", json!("ok"))
            .poll_items("/data/notices")
            .poll_strings("/data/mediaUrls", &["audio"])
    }

    #[test]
    fn a_push_yields_id_cursor_kinds_and_its_ack() {
        let f = Frame::from(r#"{"type":4,"id":"m9","kind":3,"createdAt":1700}"#);
        let i = notices().inspect(&f);
        assert_eq!(i.id.as_deref(), Some("m9"));
        assert_eq!(i.cursor, Some(Cursor::Int(1700)));
        assert_eq!(i.kinds, vec!["text", "audio"]);
        let ack = i.ack.unwrap().json().unwrap();
        assert_eq!(ack, json!({"type":3,"device":7,"id":"m9","kind":3}));
    }

    #[test]
    fn only_matching_frames_are_acked() {
        let f = Frame::from(r#"{"type":5,"id":"m9"}"#);
        assert_eq!(notices().inspect(&f).ack, None);
    }

    #[test]
    fn reliable_frames_and_the_servers_acks_are_found_by_rule() {
        let r = JsonRules::new()
            .id("/id")
            .reliable("/id")
            .acked_by("/type", json!("ack"), "/id");
        assert_eq!(
            r.reliable_id(&Frame::from(json!({"type": "report", "id": "r-1"}))),
            Some("r-1".into())
        );
        assert_eq!(r.reliable_id(&Frame::from("not json")), None);
        assert_eq!(r.reliable_id(&Frame::from(json!({"type": "x"}))), None);
        let ack = r.inspect(&Frame::from(json!({"type": "ack", "id": 7})));
        assert_eq!(ack.acknowledges.as_deref(), Some("7"));
        let msg = r.inspect(&Frame::from(json!({"type": "msg", "id": "m"})));
        assert_eq!(msg.acknowledges, None);
        assert_eq!(msg.id.as_deref(), Some("m"));
        assert_eq!(Plain.reliable_id(&Frame::from("{}")), None);
    }

    #[test]
    fn non_json_frames_are_plain_messages() {
        let i = notices().inspect(&Frame::from("hello"));
        assert_eq!(i, Inspected::default());
        let i = notices().inspect(&Frame::Binary(vec![1, 2]));
        assert_eq!(i, Inspected::default());
    }

    #[test]
    fn poll_response_rules_and_malformed_items() {
        let r = notices();
        let good = br#"{"status":"ok","data":{"notices":[{"id":"a"},7,{"id":"b"}]}}"#;
        let items = r.parse_poll(good).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_err() && items[2].is_ok());
        let e = r.parse_poll(br#"{"status":"busy"}"#).unwrap_err();
        assert!(e.contains(r#"/status == "ok" failed (got "busy")"#), "{e}");
        let e = r.parse_poll(b"<html>oops</html>").unwrap_err();
        assert!(e.contains("not JSON") && e.contains("<html>"), "{e}");
        let e = r.parse_poll(br#"{"status":"ok","data":{}}"#).unwrap_err();
        assert!(e.contains("no /data/notices or /data/mediaUrls"), "{e}");
    }

    #[test]
    fn poll_items_come_from_every_place_with_that_places_kinds() {
        // A poll answer with text items and media URL strings.
        let body = br#"{"status":"ok","data":{
            "notices":[{"id":"t1","kind":1}],
            "mediaUrls":["https://cdn/v1.mp3", 7, "https://cdn/v2.mp3"]}}"#;
        let items = notices().parse_poll(body).unwrap();
        assert_eq!(items.len(), 4);
        let t1 = items[0].as_ref().unwrap();
        assert!(t1.kinds.is_empty(), "objects take the kinds rule's kinds");
        let v1 = items[1].as_ref().unwrap();
        assert_eq!(v1.frame, Frame::from("https://cdn/v1.mp3"));
        assert_eq!(v1.kinds, vec!["audio"]);
        let bad = items[2].as_ref().unwrap_err();
        assert!(bad.contains("/data/mediaUrls is not a string"), "{bad}");
        // Media URLs alone (no text items key at all) are fine too.
        let items = notices()
            .parse_poll(br#"{"status":"ok","data":{"mediaUrls":["u"]}}"#)
            .unwrap();
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn the_cursor_goes_into_the_poll_url() {
        let r = JsonRules::new()
            .poll("http://h/poll?x=1", Method::Get, None)
            .poll_since("since");
        let req = r
            .poll_request(Some(&Cursor::Text("2024-01-01 10:00".into())))
            .unwrap();
        assert_eq!(req.url, "http://h/poll?x=1&since=2024-01-01%2010%3A00");
        assert_eq!(r.poll_request(None).unwrap().url, "http://h/poll?x=1");
    }

    #[test]
    fn cursors_order_numbers_numerically() {
        assert!(Cursor::Int(9) < Cursor::Int(10));
        assert!(Cursor::Text("9".into()) > Cursor::Text("10".into()));
        assert_eq!(Cursor::from_json(&json!(3.0)), Some(Cursor::Int(3)));
        assert_eq!(Cursor::from_json(&json!(null)), None);
    }

    #[test]
    fn the_default_protocol_reads_a_plain_array() {
        let items = Plain.parse_poll(br#"[{"a":1},{"b":2}]"#).unwrap();
        assert_eq!(items.len(), 2);
        assert!(Plain.parse_poll(br#"{"a":1}"#).is_err());
    }
}
