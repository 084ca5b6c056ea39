//! Security headers on every answer of the HTTP port. The web app gets a strict
//! Content-Security-Policy (scripts only from this origin: no inline script, no `eval`; the
//! identity provider is the only other origin it may talk to); the API's JSON and problem
//! answers get `default-src 'none'`. Everything gets `nosniff`, `no-referrer` and is never
//! framed (`frame-ancestors 'none'`, `X-Frame-Options: DENY`).

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The API's policy: nothing may load from an API answer, nor frame it.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Clone)]
pub struct SecurityHeaders {
    web_csp: HeaderValue,
}

/// `scheme://host[:port]` of a URL, if it has one.
fn origin(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    ok.then(|| &url[..scheme.len() + 3 + end])
}

/// The web app's policy. `issuer`: the OpenID Provider the app signs in with (discovery and
/// the token endpoint are fetched from it, the login form posts there).
pub fn web_csp(issuer: Option<&str>) -> String {
    let idp = issuer
        .and_then(origin)
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'{idp}; \
         worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'self'; \
         form-action 'self'{idp}; frame-ancestors 'none'"
    )
}

impl SecurityHeaders {
    pub fn new(issuer: Option<&str>) -> Self {
        Self {
            web_csp: HeaderValue::from_str(&web_csp(issuer))
                .unwrap_or_else(|_| HeaderValue::from_static(API_CSP)),
        }
    }
}

/// Whether an answer is the web app's (its pages, scripts and service worker: a worker runs
/// under the policy its script was served with) rather than the API's.
fn is_web(path: &str, response: &Response) -> bool {
    let api = path == "/v1" || path.starts_with("/v1/") || path == "/healthz" || path == "/readyz";
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    html || (!api && response.status().is_success())
}

pub async fn layer(
    State(policy): State<SecurityHeaders>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let web = is_web(&path, &response);
    let headers = response.headers_mut();
    let csp = if web {
        policy.web_csp
    } else {
        HeaderValue::from_static(API_CSP)
    };
    let set = [
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    for (name, value) in set {
        headers.entry(name).or_insert(value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_policy_allows_no_inline_script_and_names_the_idp() {
        let csp = web_csp(Some("https://idp.example.com:8443/realms/pa"));
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-eval"));
        assert!(
            csp.contains("connect-src 'self' https://idp.example.com:8443;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        let csp = web_csp(None);
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        // A hostile issuer cannot inject directives.
        let csp = web_csp(Some("https://a.example; script-src *"));
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(HeaderValue::from_str(&csp).is_ok());
    }

    #[test]
    fn the_web_apps_files_get_its_policy_and_the_api_its_own() {
        let answer = |content_type: &'static str| {
            let mut r = Response::new(axum::body::Body::empty());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        };
        // The service worker's script: its policy is the worker's, which must reach the shell.
        assert!(is_web("/sw.js", &answer("text/javascript")));
        assert!(is_web("/assets/index-x.js", &answer("text/javascript")));
        assert!(is_web("/", &answer("text/html; charset=utf-8")));
        assert!(!is_web("/v1/chats", &answer("application/json")));
        assert!(!is_web("/v1", &answer("application/json")));
        assert!(!is_web("/healthz", &answer("text/plain")));
    }
}
