//! The guarded reqwest client: URL check before the request, a resolver that drops refused
//! addresses at connect time, no redirects, no proxy, timeouts.
//!
//! Two reqwest clients sit inside one [`EgressClient`]: the https one resolves names to public
//! or allowlisted addresses; the plain-http one resolves only to allowlisted addresses. The URL
//! check picks the client, so an http request to a name can never reach a public (or
//! rebinding) address. IP literals never reach a resolver in reqwest, so [`EgressClient::check_url`]
//! judges them itself. Callers get a [`GuardedRequest`]; the one exception is
//! [`EgressClient::client_for`], which hands the MCP client the same guarded inner client.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, Response, redirect};
use url::{Host, Url};

use super::{AddrClass, EgressError, EgressPolicy, EgressTimeouts, classify, host_of};

/// Name resolution, pluggable so tests can make a name resolve to chosen loopback addresses.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver, through tokio.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_string();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Which inner client a URL goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// https: public or allowlisted addresses.
    Https,
    /// Plain http: allowlisted addresses only.
    HttpAllowlisted,
}

/// Refusals raised inside the resolver; found again in reqwest's error chain.
#[derive(Debug)]
enum ResolveFailure {
    Refused { host: String, class: AddrClass },
    Failed { host: String, detail: String },
}

impl std::fmt::Display for ResolveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveFailure::Refused { host, class } => {
                write!(f, "{host} resolves only to refused ({class}) addresses")
            }
            ResolveFailure::Failed { host, detail } => write!(f, "resolving {host}: {detail}"),
        }
    }
}

impl std::error::Error for ResolveFailure {}

struct GuardResolver {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
    route: Route,
}

impl Resolve for GuardResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let policy = Arc::clone(&self.policy);
        let lookup = Arc::clone(&self.lookup);
        let route = self.route;
        Box::pin(async move {
            let found = lookup
                .lookup(&host)
                .await
                .map_err(|e| ResolveFailure::Failed {
                    host: host.clone(),
                    detail: e.to_string(),
                })?;
            let mut refused = None;
            let mut kept = Vec::new();
            for ip in found {
                let ok = match route {
                    Route::Https => policy.permits(ip),
                    Route::HttpAllowlisted => policy.allowlisted(ip),
                };
                if ok {
                    kept.push(SocketAddr::new(ip, 0));
                } else {
                    tracing::debug!(%host, class = %classify(ip), "egress: dropped resolved address");
                    refused.get_or_insert(classify(ip));
                }
            }
            if kept.is_empty() {
                let err = match refused {
                    Some(class) => ResolveFailure::Refused { host, class },
                    None => ResolveFailure::Failed {
                        host,
                        detail: "no addresses".into(),
                    },
                };
                return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The guarded HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct EgressClient {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
    connect_timeout: Duration,
    https: reqwest::Client,
    http: reqwest::Client,
}

impl std::fmt::Debug for EgressClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl EgressClient {
    /// A client resolving names with the system resolver.
    pub fn new(policy: EgressPolicy, timeouts: EgressTimeouts) -> Result<Self, EgressError> {
        Self::with_lookup(policy, timeouts, Arc::new(SystemLookup))
    }

    /// A client resolving names with `lookup` (tests map names to chosen loopback addresses).
    pub fn with_lookup(
        policy: EgressPolicy,
        timeouts: EgressTimeouts,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Self, EgressError> {
        Self::build(
            Arc::new(policy),
            lookup,
            timeouts.connect,
            Some(timeouts.total),
            None,
        )
    }

    /// The same guard for long-lived protocol traffic (upstream MCP sessions: SSE streams,
    /// slow tool calls): no whole-request deadline, but a read that stalls for `read_timeout`
    /// fails. Callers bound each call with their own timeout.
    pub fn for_streams(&self, read_timeout: Duration) -> Result<Self, EgressError> {
        Self::build(
            self.policy.clone(),
            self.lookup.clone(),
            self.connect_timeout,
            None,
            Some(read_timeout),
        )
    }

    fn build(
        policy: Arc<EgressPolicy>,
        lookup: Arc<dyn Lookup>,
        connect: Duration,
        total: Option<Duration>,
        read: Option<Duration>,
    ) -> Result<Self, EgressError> {
        let build = |route: Route| {
            let mut builder = reqwest::Client::builder();
            if let Some(total) = total {
                builder = builder.timeout(total);
            }
            if let Some(read) = read {
                builder = builder.read_timeout(read);
            }
            builder
                .dns_resolver(GuardResolver {
                    policy: Arc::clone(&policy),
                    lookup: Arc::clone(&lookup),
                    route,
                })
                .redirect(redirect::Policy::none())
                .referer(false)
                .no_proxy()
                .connect_timeout(connect)
                .tcp_nodelay(true)
                .user_agent(concat!("agp/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| EgressError::Http {
                    host: "(client)".into(),
                    detail: e.to_string(),
                })
        };
        Ok(Self {
            https: build(Route::Https)?,
            http: build(Route::HttpAllowlisted)?,
            policy,
            lookup,
            connect_timeout: connect,
        })
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Judge a URL before any request: scheme, credentials, and IP-literal hosts (which
    /// reqwest connects to without asking the resolver). Names are judged at connect time.
    pub fn check_url(&self, url: &Url) -> Result<Route, EgressError> {
        let host = host_of(url);
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::InvalidUrl {
                reason: format!("credentials in the URL for {host}"),
            });
        }
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(EgressError::SchemeRefused {
                    host,
                    scheme: other.to_string(),
                });
            }
        };
        let scheme_refused = || EgressError::SchemeRefused {
            host: host.clone(),
            scheme: url.scheme().to_string(),
        };
        let literal = match url.host() {
            None => {
                return Err(EgressError::InvalidUrl {
                    reason: "no host".into(),
                });
            }
            Some(Host::Domain(_)) => None,
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        };
        match (https, literal) {
            (true, Some(ip)) if !self.policy.permits(ip) => Err(EgressError::AddressRefused {
                host,
                class: classify(ip),
            }),
            (true, _) => Ok(Route::Https),
            (false, Some(ip)) if self.policy.allowlisted(ip) => Ok(Route::HttpAllowlisted),
            (false, Some(ip)) if !self.policy.permits(ip) => Err(EgressError::AddressRefused {
                host,
                class: classify(ip),
            }),
            (false, Some(_)) => Err(scheme_refused()),
            (false, None) if self.policy.allow.is_empty() => Err(scheme_refused()),
            (false, None) => Ok(Route::HttpAllowlisted),
        }
    }

    /// Start a request to `url`, after [`check_url`](Self::check_url).
    pub fn request(&self, method: Method, url: &Url) -> Result<GuardedRequest, EgressError> {
        let client = match self.check_url(url)? {
            Route::Https => &self.https,
            Route::HttpAllowlisted => &self.http,
        };
        Ok(GuardedRequest {
            inner: client.request(method, url.clone()),
            host: host_of(url),
        })
    }

    /// The guarded inner client for `url`, after [`check_url`](Self::check_url): for protocol
    /// clients that take a `reqwest::Client` (rmcp's streamable-HTTP client). Same resolver
    /// guard, no redirects, no proxy, timeouts, TCP_NODELAY; only `url`'s route is allowed.
    pub fn client_for(&self, url: &Url) -> Result<reqwest::Client, EgressError> {
        Ok(match self.check_url(url)? {
            Route::Https => self.https.clone(),
            Route::HttpAllowlisted => self.http.clone(),
        })
    }

    pub fn get(&self, url: &Url) -> Result<GuardedRequest, EgressError> {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: &Url) -> Result<GuardedRequest, EgressError> {
        self.request(Method::POST, url)
    }
}

/// A request whose destination passed the URL check. Its URL cannot be changed.
#[must_use]
pub struct GuardedRequest {
    inner: RequestBuilder,
    host: String,
}

impl GuardedRequest {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner = self.inner.header(name, value);
        self
    }

    pub fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.inner = self.inner.json(body);
        self
    }

    /// An `application/x-www-form-urlencoded` body (token, refresh and revocation requests).
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.inner = self
            .inner
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        self
    }

    /// HTTP Basic credentials (client_secret_basic). The caller form-encodes them first
    /// (RFC 6749 §2.3.1).
    pub fn basic_auth(mut self, user: &str, password: Option<&str>) -> Self {
        self.inner = self.inner.basic_auth(user, password);
        self
    }

    /// Send. A 3xx is an error (never followed); other statuses are the caller's to judge.
    pub async fn send(self) -> Result<Response, EgressError> {
        let host = self.host;
        let resp = self.inner.send().await.map_err(|e| map_reqwest(&host, e))?;
        if resp.status().is_redirection() {
            return Err(EgressError::Redirect {
                host,
                status: resp.status().as_u16(),
            });
        }
        Ok(resp)
    }
}

/// Lift a reqwest error into an [`EgressError`], recovering the resolver's refusal and keeping
/// the URL (and its query) out of the message.
pub(crate) fn map_reqwest(host: &str, err: reqwest::Error) -> EgressError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(f) = e.downcast_ref::<ResolveFailure>() {
            return match f {
                ResolveFailure::Refused { host, class } => EgressError::AddressRefused {
                    host: host.clone(),
                    class: *class,
                },
                ResolveFailure::Failed { host, detail } => EgressError::Resolve {
                    host: host.clone(),
                    detail: crate::oauth::text::clean(detail, 200),
                },
            };
        }
        source = e.source();
    }
    let host = host.to_string();
    if err.is_timeout() {
        return EgressError::Timeout { host };
    }
    let connect = err.is_connect();
    let detail = chain(&err.without_url());
    if connect {
        EgressError::Connect { host, detail }
    } else {
        EgressError::Http { host, detail }
    }
}

fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    crate::oauth::text::clean(&parts.join(": "), 200)
}
