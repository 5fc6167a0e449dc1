//! What heartline shows of what it was given: secrets kept out of logs and
//! `Debug` output, long texts cut to their start.
//!
//! Every URL and header that heartline logs passes through here first.

/// Query parameter names whose values are secrets (compared
/// case-insensitively; a name that *ends* with one of these counts too, so
/// `x_api_key` and `refresh_token` are caught).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "auth",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "signature",
    "sig",
    "session",
    "sessionid",
    "credential",
    "credentials",
    "jwt",
    "ticket",
    "code",
];

/// Header names whose values are secrets.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "sec-websocket-key",
];

const MASK: &str = "***";

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS
        .iter()
        .any(|p| name == *p || name.ends_with(&format!("_{p}")) || name.ends_with(&format!("-{p}")))
        || name.ends_with("token")
        || name.ends_with("key")
}

/// `true` when a header's value must not be shown.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str()) || name.contains("token") || name.contains("secret")
}

/// The header value as it may be shown.
pub fn header_value<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret_header(name) {
        MASK
    } else {
        value
    }
}

/// The URL with user info and the values of secret query parameters masked.
///
/// Works on any string, valid URL or not, so a bad URL can be reported
/// without leaking what it carries.
pub fn url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((a, b)) => (a, Some(b)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    // user:password@host
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((_, host)) => {
                    out.push_str(MASK);
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_secret_param(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(MASK);
                }
                _ => out.push_str(pair),
            }
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// The first bytes of a text, for error messages.
pub(crate) fn head(s: &str) -> String {
    const N: usize = 80;
    if s.len() <= N {
        return s.to_owned();
    }
    let mut end = N;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_like_query_values_are_masked() {
        assert_eq!(
            url("wss://h:8106/ws?token=abc&user=7&access_token=x&apiKey=k&page=2"),
            "wss://h:8106/ws?token=***&user=7&access_token=***&apiKey=***&page=2"
        );
    }

    #[test]
    fn user_info_is_masked() {
        assert_eq!(url("ws://bob:hunter2@h/p?a=1"), "ws://***@h/p?a=1");
    }

    #[test]
    fn a_string_that_is_not_a_url_still_loses_its_secrets() {
        assert_eq!(url("nonsense?auth=s3cret"), "nonsense?auth=***");
        assert_eq!(url("plain"), "plain");
    }

    #[test]
    fn secret_headers_are_masked_and_others_are_not() {
        assert_eq!(header_value("Authorization", "Bearer x"), "***");
        assert_eq!(header_value("cookie", "a=b"), "***");
        assert_eq!(header_value("X-Device-Token", "t"), "***");
        assert_eq!(header_value("User-Agent", "kiosk"), "kiosk");
    }
}
