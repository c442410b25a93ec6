//! `Route`: what a request asks for, decided from its method and path alone, before any I/O.
//!
//! Pure, with table tests. Paths under `/_/` are the API; `/` is the status page and `/metrics`
//! is reserved for Prometheus (a key named exactly `metrics` is therefore not reachable over the
//! native API); every other path is an object key, percent-decoded per DESIGN.md §3.

use http::Method;
use storage::{KeyError, ObjectKey};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the human status page.
    StatusPage,
    /// `GET /_/health`: the process is alive.
    Health,
    /// `GET /_/ready`: the store is open and the disk writable.
    Ready,
    /// `GET /_/status`: JSON facts about the node.
    Status,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /_/list?prefix=&after=&limit=`.
    List,
    /// `GET /<key>`.
    GetObject(ObjectKey),
    /// `HEAD /<key>`.
    HeadObject(ObjectKey),
    /// `PUT /<key>`.
    PutObject(ObjectKey),
    /// `DELETE /<key>`.
    DeleteObject(ObjectKey),
    /// `POST /_/verify/<key>`: re-hash the stored copy now.
    VerifyObject(ObjectKey),
}

/// Why a request has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// An unknown API path: 404.
    UnknownApi,
    /// A method the path does not support: 405 with `Allow`.
    MethodNotAllowed {
        /// The methods it supports.
        allow: &'static str,
    },
    /// The path is not a valid key: 400.
    BadKey(KeyError),
}

const READ_ONLY: &str = "GET, HEAD";
const OBJECT: &str = "GET, HEAD, PUT, DELETE";

impl Route {
    /// Decides the route of `method` on `path` (the raw, percent-encoded path, no query).
    pub fn decide(method: &Method, path: &str) -> Result<Route, NoRoute> {
        let read_only = |route: Route| {
            if method == Method::GET || method == Method::HEAD {
                Ok(route)
            } else {
                Err(NoRoute::MethodNotAllowed { allow: READ_ONLY })
            }
        };
        match path {
            "/" => return read_only(Route::StatusPage),
            "/metrics" | "/_/metrics" => return read_only(Route::Metrics),
            "/_/health" => return read_only(Route::Health),
            "/_/ready" => return read_only(Route::Ready),
            "/_/status" => return read_only(Route::Status),
            "/_/list" => return read_only(Route::List),
            _ if path.starts_with(client::api::VERIFY_PREFIX) => {
                // The key follows the prefix, encoded as in an object path.
                let key_path = &path[client::api::VERIFY_PREFIX.len() - 1..];
                let key = ObjectKey::from_url_path(key_path).map_err(NoRoute::BadKey)?;
                return if method == Method::POST {
                    Ok(Route::VerifyObject(key))
                } else {
                    Err(NoRoute::MethodNotAllowed { allow: "POST" })
                };
            }
            _ if path.starts_with("/_/") || path == "/_" => return Err(NoRoute::UnknownApi),
            _ => {}
        }
        let key = ObjectKey::from_url_path(path).map_err(NoRoute::BadKey)?;
        match *method {
            Method::GET => Ok(Route::GetObject(key)),
            Method::HEAD => Ok(Route::HeadObject(key)),
            Method::PUT => Ok(Route::PutObject(key)),
            Method::DELETE => Ok(Route::DeleteObject(key)),
            _ => Err(NoRoute::MethodNotAllowed { allow: OBJECT }),
        }
    }

    /// A fixed name for metrics labels and logs (never the key).
    pub fn name(&self) -> &'static str {
        match self {
            Route::StatusPage => "status_page",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Status => "status",
            Route::Metrics => "metrics",
            Route::List => "list",
            Route::GetObject(_) => "get_object",
            Route::HeadObject(_) => "head_object",
            Route::PutObject(_) => "put_object",
            Route::DeleteObject(_) => "delete_object",
            Route::VerifyObject(_) => "verify_object",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Result<Route, NoRoute>) {
        assert_eq!(Route::decide(&method, path), expected, "{method} {path}");
    }

    fn key(text: &str) -> ObjectKey {
        ObjectKey::parse(text).expect("valid key")
    }

    #[test]
    fn routes() {
        check(Method::GET, "/", Ok(Route::StatusPage));
        check(Method::GET, "/_/health", Ok(Route::Health));
        check(Method::HEAD, "/_/ready", Ok(Route::Ready));
        check(Method::GET, "/_/status", Ok(Route::Status));
        check(Method::GET, "/metrics", Ok(Route::Metrics));
        check(Method::GET, "/_/list", Ok(Route::List));
        check(
            Method::POST,
            "/_/list",
            Err(NoRoute::MethodNotAllowed { allow: READ_ONLY }),
        );
        check(Method::GET, "/_/nothing", Err(NoRoute::UnknownApi));
        check(Method::PUT, "/_/x", Err(NoRoute::UnknownApi));
        check(
            Method::GET,
            "/kids/a.fits",
            Ok(Route::GetObject(key("kids/a.fits"))),
        );
        check(Method::HEAD, "/a%23b", Ok(Route::HeadObject(key("a#b"))));
        check(Method::PUT, "/a%20b/c", Ok(Route::PutObject(key("a b/c"))));
        check(Method::DELETE, "/x", Ok(Route::DeleteObject(key("x"))));
        check(
            Method::POST,
            "/_/verify/kids/a%23b.fits",
            Ok(Route::VerifyObject(key("kids/a#b.fits"))),
        );
        check(
            Method::GET,
            "/_/verify/x",
            Err(NoRoute::MethodNotAllowed { allow: "POST" }),
        );
        check(
            Method::POST,
            "/_/verify/",
            Err(NoRoute::BadKey(KeyError::Empty)),
        );
        check(
            Method::POST,
            "/x",
            Err(NoRoute::MethodNotAllowed { allow: OBJECT }),
        );
        check(
            Method::GET,
            "/../etc/passwd",
            Err(NoRoute::BadKey(KeyError::DotSegment)),
        );
        check(
            Method::GET,
            "/a/%2e%2e/b",
            Err(NoRoute::BadKey(KeyError::DotSegment)),
        );
        check(
            Method::PUT,
            "/a%00",
            Err(NoRoute::BadKey(KeyError::ControlCharacter {
                code: 0,
                position: 1,
            })),
        );
        check(
            Method::GET,
            "/a//b",
            Err(NoRoute::BadKey(KeyError::EmptySegment)),
        );
        check(Method::GET, "/%ff", Err(NoRoute::BadKey(KeyError::NotUtf8)));
        check(
            Method::GET,
            &format!("/{}", "x".repeat(1025)),
            Err(NoRoute::BadKey(KeyError::TooLong { len: 1025 })),
        );
    }
}
