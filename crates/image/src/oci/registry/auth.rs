//! Registry token authentication (the distribution spec's bearer flow), anonymous
//! only, with the realm checked before it is contacted.
//!
//! A registry answers 401 with `WWW-Authenticate: Bearer realm="...",service=...`,
//! and the client fetches a token from the realm. The realm is chosen by the
//! registry, so it is untrusted: it must be https, or, for a plain-http registry
//! (a local one), the registry's own host and port. Anything else (a plain-http
//! URL elsewhere, an internal address over http) is refused before any request.

use super::error::RegistryError;
use reqwest::Url;

/// Largest token response accepted (real ones are a few KiB of JWT).
pub(crate) const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// A parsed `Bearer` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parse a `WWW-Authenticate` value; `None` unless it is a Bearer challenge with a
/// realm. Parameters are `key=value` or `key="quoted, with \"escapes\""`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = vec![];
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        params.push((key, value));
        if params.len() > 16 {
            break;
        }
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    Some(Challenge {
        realm: get("realm").filter(|r| !r.is_empty())?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// Check the realm against the registry's base URL (see the module docs).
pub(crate) fn check_realm(realm: &str, registry: &Url) -> Result<Url, RegistryError> {
    let refuse = |reason: &str| RegistryError::Realm {
        registry: registry.host_str().unwrap_or_default().to_string(),
        realm: realm.chars().take(200).collect(),
        reason: reason.to_string(),
    };
    let url = Url::parse(realm).map_err(|_| refuse("not an absolute URL"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("no host"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http"
            if registry.scheme() == "http"
                && url.host_str() == registry.host_str()
                && url.port_or_known_default() == registry.port_or_known_default() =>
        {
            Ok(url)
        }
        "http" => Err(refuse(
            "a plain-http realm is only accepted on the registry's own host, for a registry that is itself plain http",
        )),
        _ => Err(refuse("only https realms are accepted")),
    }
}

/// The token in a realm's JSON answer (`token`, or OAuth2's `access_token`).
pub(crate) fn token_from(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("the token answer is not JSON: {e}"))?;
    let token = a
        .token
        .filter(|t| !t.is_empty())
        .or(a.access_token)
        .ok_or("the token answer has no token")?;
    // It goes into a header: printable ASCII only.
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(token)
    } else {
        Err("the token has characters a header cannot carry".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/alpine:pull"));
        let c = parse_challenge(r#"bearer realm=https://r/t, service="a \"b\"""#).unwrap();
        assert_eq!(c.realm, "https://r/t");
        assert_eq!(c.service.as_deref(), Some("a \"b\""));
        assert!(parse_challenge(r#"Basic realm="x""#).is_none());
        assert!(parse_challenge("Bearer service=x").is_none());
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn realms() {
        let tls = Url::parse("https://registry.example/v2/").unwrap();
        let plain = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert!(check_realm("https://auth.example/token", &tls).is_ok());
        assert!(check_realm("http://registry.example/token", &tls).is_err());
        assert!(check_realm("http://169.254.169.254/latest", &tls).is_err());
        assert!(check_realm("http://127.0.0.1:5000/token", &plain).is_ok());
        assert!(check_realm("http://127.0.0.1:5001/token", &plain).is_err());
        assert!(check_realm("http://10.0.0.1/token", &plain).is_err());
        assert!(check_realm("file:///etc/passwd", &tls).is_err());
        assert!(check_realm("/token", &tls).is_err());
    }

    #[test]
    fn tokens() {
        assert_eq!(token_from(br#"{"token":"abc"}"#).unwrap(), "abc");
        assert_eq!(token_from(br#"{"access_token":"x.y"}"#).unwrap(), "x.y");
        assert!(token_from(br#"{"token":"a\nb"}"#).is_err());
        assert!(token_from(b"{}").is_err());
    }
}
