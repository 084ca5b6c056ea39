//! The web app (web/dist) as static files: `/` and every non-API path that is not a file get
//! index.html (the SPA routes in the browser). Hashed assets under /assets/ are cached for a
//! year as immutable; everything else (index.html, sw.js, the manifest) must be revalidated, so a
//! new release shows at the next load.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// Where the built web app lives, when it has an index.html.
#[derive(Clone, Debug)]
pub struct WebDir {
    root: PathBuf,
}

impl WebDir {
    /// `None` when the directory has no index.html (the web app is not built): the gateway
    /// then serves only the API.
    pub fn open(root: &Path) -> Option<Self> {
        root.join("index.html").is_file().then(|| Self {
            root: root.to_path_buf(),
        })
    }

    /// The file a URL path names, refusing anything that could leave the root.
    fn file(&self, path: &str) -> Option<PathBuf> {
        let rel = Path::new(path.trim_start_matches('/'));
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return None;
        }
        let full = self.root.join(rel);
        full.is_file().then_some(full)
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn send_file(path: &Path, cache: &'static str, head: bool) -> Response {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let len = bytes.len();
            let mut res = if head {
                Response::new(Body::empty())
            } else {
                Response::new(Body::from(bytes))
            };
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        }
        Err(err) => {
            tracing::warn!(%err, path = %path.display(), "cannot read a web file");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves the SPA for a non-API GET/HEAD; None when there is no web app or the path is the API's.
pub async fn serve(web: &WebDir, method: &Method, path: &str) -> Option<Response> {
    let head = method == Method::HEAD;
    if !(head || method == Method::GET) || path == "/v1" || path.starts_with("/v1/") {
        return None;
    }
    if let Some(file) = web.file(path) {
        let cache = if path.starts_with("/assets/") {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        return Some(send_file(&file, cache, head).await);
    }
    // A missing hashed asset is a real 404 (an old index.html asking for a removed build),
    // not the SPA: the browser would otherwise parse HTML as JavaScript.
    if path.starts_with("/assets/") {
        return None;
    }
    Some(send_file(&web.root.join("index.html"), REVALIDATE, head).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_root() {
        let dir = std::env::temp_dir().join(format!("pa-web-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("assets")).expect("mkdir");
        std::fs::write(dir.join("index.html"), "<html>").expect("write");
        std::fs::write(dir.join("assets/a.js"), "x").expect("write");
        let web = WebDir::open(&dir).expect("has index.html");
        assert!(web.file("/assets/a.js").is_some());
        assert!(web.file("/../etc/passwd").is_none());
        assert!(web.file("/assets/../../secret").is_none());
        assert!(web.file("/assets/missing.js").is_none());
        assert!(WebDir::open(&dir.join("assets")).is_none());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
