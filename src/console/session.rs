//! Console sessions: sign-in with the admin token (or a one-time link `agp console-link`
//! prints), a session cookie, and the CSRF token every state-changing request must carry.
//!
//! Invariants: the cookie holds a random 256-bit id; the server keeps only its SHA-256, with
//! the session's CSRF token and expiry, in memory (a restart signs everyone out). The cookie is
//! `HttpOnly; SameSite=Strict; Path=/`, `Secure` when the public URL is https, and expires with
//! the session (8 hours). A POST is accepted only with the session's CSRF token (a form field or
//! the `x-csrf-token` header), compared in constant time, and with an `Origin` (when sent) equal
//! to the public URL's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::SharedState;

pub const COOKIE: &str = "agp_console";
/// How long a session lives after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a sign-in link stays valid (and it works once).
pub const LINK_TTL: Duration = Duration::from_secs(300);

struct Entry {
    csrf: String,
    actor: String,
    expires: Instant,
}

/// Live console sessions and unused sign-in links, by the SHA-256 of their secret.
#[derive(Default)]
pub struct Sessions {
    sessions: parking_lot::Mutex<HashMap<[u8; 32], Entry>>,
    links: parking_lot::Mutex<HashMap<[u8; 32], Instant>>,
}

/// The signed-in admin of a console request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub actor: String,
    pub csrf: String,
    /// SHA-256 of the session id (binds consent flows started from this session).
    pub session_hash: [u8; 32],
}

/// 256 random bits from the OS, hex. `getrandom` failing means the machine cannot make
/// secrets at all; the all-zero fallback is never reached in practice and is refused by
/// `open` (an empty session cannot be used: its id would be guessable).
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// SHA-256 of a session id or link code (what the server keeps).
pub fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for `actor`: the cookie value to set (`None` if the OS gave no
    /// randomness).
    pub fn open(&self, actor: String) -> Option<String> {
        let id = random_token()?;
        let csrf = random_token()?;
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        sessions.retain(|_, e| e.expires > now);
        sessions.insert(
            digest(&id),
            Entry {
                csrf,
                actor,
                expires: now + SESSION_TTL,
            },
        );
        Some(id)
    }

    fn find(&self, id: &str) -> Option<Signed> {
        let hash = digest(id);
        let sessions = self.sessions.lock();
        let e = sessions.get(&hash).filter(|e| e.expires > Instant::now())?;
        Some(Signed {
            actor: e.actor.clone(),
            csrf: e.csrf.clone(),
            session_hash: hash,
        })
    }

    pub fn close(&self, id: &str) {
        self.sessions.lock().remove(&digest(id));
    }

    /// A one-time sign-in code (for `agp console-link`).
    pub fn link(&self) -> Option<String> {
        let code = random_token()?;
        let mut links = self.links.lock();
        let now = Instant::now();
        links.retain(|_, expires| *expires > now);
        links.insert(digest(&code), now + LINK_TTL);
        Some(code)
    }

    /// Uses up `code`: true once, within its lifetime.
    pub fn redeem(&self, code: &str) -> bool {
        self.links
            .lock()
            .remove(&digest(code))
            .is_some_and(|expires| expires > Instant::now())
    }
}

/// The session cookie's value in `headers`.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    crate::api::connect::cookie(headers, COOKIE)
}

/// `Set-Cookie` for a new session (or, with `None`, one that clears it).
pub fn set_cookie(id: Option<&str>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl FromRequestParts<SharedState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        cookie(&parts.headers)
            .and_then(|id| state.console.find(&id))
            .ok_or_else(|| Redirect::to("/console/sign-in").into_response())
    }
}

impl Signed {
    /// The admin as the REST API's handlers know a caller: this session's actor, and the
    /// request's id as correlation id (as the API takes it; [`crate::api::request_id`]).
    pub fn caller(&self, headers: &HeaderMap) -> crate::api::auth::Caller {
        crate::api::auth::Caller {
            actor: self.actor.clone(),
            correlation_id: crate::api::request_id::of(headers),
        }
    }

    /// Whether `presented` is this session's CSRF token.
    pub fn csrf_ok(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Whether the request's `Origin`, if any, is the console's own. `null` (what Chromium sends on
/// some same-origin form posts) says nothing and counts as absent: the CSRF token and the
/// SameSite=Strict cookie are what stop a cross-site post; this check is one more wall.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
    else {
        return true;
    };
    let own = url::Url::parse(public_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    origin == own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_only_and_closes() {
        let s = Sessions::default();
        let id = s.open("admin:1".into()).unwrap();
        let signed = s.find(&id).expect("open");
        assert_eq!(signed.actor, "admin:1");
        assert!(signed.csrf_ok(&signed.csrf.clone()));
        assert!(!signed.csrf_ok("nope"));
        assert!(s.find("not-the-id").is_none());
        s.close(&id);
        assert!(s.find(&id).is_none());
    }

    #[test]
    fn a_link_works_once() {
        let s = Sessions::default();
        let code = s.link().unwrap();
        assert!(s.redeem(&code));
        assert!(!s.redeem(&code));
        assert!(!s.redeem("guess"));
    }

    #[test]
    fn the_cookie_is_strict_http_only_and_secure_behind_https() {
        let v = set_cookie(Some("abc"), true);
        let v = v.to_str().unwrap();
        for part in [
            "agp_console=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
        ] {
            assert!(v.contains(part), "{v}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; agp_console=abc; y=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, "https://agp.example.com"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://agp.example.com"),
        );
        assert!(same_origin(&h, "https://agp.example.com/"));
    }
}
