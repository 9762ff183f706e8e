//! `agp healthcheck`: asks a running AGP's `/readyz` and exits 0 when it is ready, 1 otherwise.
//!
//! For a container's `HEALTHCHECK` (the slim image has no curl; the binary it already holds is
//! the probe) and for scripts. It needs no token and reads nothing but the answer's status.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::app::config::DEFAULT_LISTEN;

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The URL to ask (default: `/readyz` at the address `agp serve` listens on).
    #[arg(long, value_name = "URL")]
    pub url: Option<url::Url>,
    /// The address `agp serve` listens on (the same flag and variable as `agp serve`'s); a
    /// wildcard address is asked on loopback.
    #[arg(long, env = "AGP_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
}

/// The URL `args` says to ask.
pub fn target(args: &HealthcheckArgs) -> anyhow::Result<url::Url> {
    if let Some(url) = &args.url {
        return Ok(url.clone());
    }
    let listen: SocketAddr = args.listen.parse().with_context(|| {
        format!(
            "--listen {:?} is not an address like 127.0.0.1:8080",
            args.listen
        )
    })?;
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}/readyz", SocketAddr::new(ip, listen.port()));
    url::Url::parse(&url).with_context(|| format!("building {url}"))
}

pub async fn run(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let url = target(&args)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    match http.get(url.clone()).send().await {
        Ok(resp) if resp.status().is_success() => {
            println!("{url}: ready ({})", resp.status().as_u16());
            Ok(ExitCode::SUCCESS)
        }
        Ok(resp) => {
            eprintln!("{url}: not ready (HTTP {})", resp.status().as_u16());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{url}: no answer: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: &str, url: Option<&str>) -> HealthcheckArgs {
        HealthcheckArgs {
            url: url.map(|u| url::Url::parse(u).unwrap()),
            listen: listen.to_string(),
            timeout: 5,
        }
    }

    #[test]
    fn a_wildcard_listen_address_is_asked_on_loopback() {
        let t = |listen| target(&args(listen, None)).unwrap().to_string();
        assert_eq!(t("0.0.0.0:8080"), "http://127.0.0.1:8080/readyz");
        assert_eq!(t("[::]:9000"), "http://[::1]:9000/readyz");
        assert_eq!(t("10.1.2.3:80"), "http://10.1.2.3/readyz");
        assert_eq!(t(DEFAULT_LISTEN), "http://127.0.0.1:8080/readyz");
    }

    #[test]
    fn an_explicit_url_wins_and_a_bad_address_is_an_error() {
        let u = target(&args("nonsense", Some("http://agp:8080/healthz"))).unwrap();
        assert_eq!(u.as_str(), "http://agp:8080/healthz");
        let err = target(&args("nonsense", None)).unwrap_err().to_string();
        assert!(err.contains("--listen \"nonsense\""), "{err}");
    }
}
