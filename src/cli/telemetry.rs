//! `agp serve`'s logs and traces (decision 0022).
//!
//! - Logs go to stdout (text or JSON), filtered by `AGP_LOG`, else `RUST_LOG`, else `info`
//!   (`AGP_LOG` wins when both are set, so an environment that sets `RUST_LOG` for other
//!   programs does not change AGP's logs unless `AGP_LOG` is absent).
//! - With `--otlp-endpoint` (a binary built with the `otlp` feature), spans are also exported
//!   over OTLP/HTTP (protobuf) to `<endpoint>/v1/traces`: each request's `request` span with
//!   its request id, and inside a `tools/call` the `policy`, `credential`, `upstream` and
//!   `record` spans. Those are `debug` spans: with no exporter and logs at `info` they are
//!   never created, so they cost the proxy nothing. The exporter has its own filter (AGP's
//!   spans and events at `debug` and above), independent of the log filter.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::app::LogFormat;

/// The log filter's directives and the variable they came from: `AGP_LOG` when set and not
/// empty, else `RUST_LOG` when set and not empty, else `info`.
pub fn log_directives(agp_log: Option<String>, rust_log: Option<String>) -> (String, &'static str) {
    let set = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    match (set(agp_log), set(rust_log)) {
        (Some(v), _) => (v, "AGP_LOG"),
        (None, Some(v)) => (v, "RUST_LOG"),
        (None, None) => ("info".into(), "default"),
    }
}

/// What must outlive the server: the trace exporter, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    otlp: Option<otlp::Exporter>,
}

impl Telemetry {
    /// Sends the spans still buffered (at most a few seconds).
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(exporter) = self.otlp {
            let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
        }
    }
}

/// Installs the global subscriber: logs to stdout in `format`, and spans to `otlp` if given.
/// Fails when `otlp` is given to a binary built without the `otlp` feature, or the exporter
/// cannot be built.
pub fn init(format: LogFormat, otlp: Option<&url::Url>) -> anyhow::Result<Telemetry> {
    let (directives, source) = log_directives(
        std::env::var("AGP_LOG").ok(),
        std::env::var("RUST_LOG").ok(),
    );
    let (filter, bad_filter) = match EnvFilter::try_new(&directives) {
        Ok(f) => (f, false),
        Err(_) => (EnvFilter::new("info"), true),
    };
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    #[cfg(feature = "otlp")]
    let (exporter, otel) = match otlp {
        Some(endpoint) => {
            let (exporter, layer) = otlp::layer(endpoint)?;
            (Some(exporter), Some(layer))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otlp"))]
    let otel: Option<tracing_subscriber::layer::Identity> = match otlp {
        Some(_) => anyhow::bail!(
            "--otlp-endpoint / AGP_OTLP_ENDPOINT: this agp was built without OTLP export; \
             rebuild it with `cargo build --features otlp`, or leave the option out"
        ),
        None => None,
    };
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter))
        .try_init();
    if bad_filter {
        // The variable's value is the operator's own, but it is not echoed: only its name.
        tracing::warn!(
            variable = source,
            "the log filter is not valid; logging at info"
        );
    }
    #[cfg(feature = "otlp")]
    if let Some(endpoint) = otlp {
        // The origin only: a URL's user info or query could carry a collector's credential.
        tracing::info!(collector = %endpoint.origin().ascii_serialization(), "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry {
        #[cfg(feature = "otlp")]
        otlp: exporter,
    })
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::Duration;

    use anyhow::Context;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    /// The tracer provider; its batch processor's thread sends the spans.
    pub struct Exporter(SdkTracerProvider);

    impl Exporter {
        pub fn shutdown(self) {
            if let Err(e) = self.0.shutdown() {
                tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
            }
        }
    }

    /// Where the spans go: `<endpoint>/v1/traces`, like `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn traces_url(endpoint: &url::Url) -> String {
        format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'))
    }

    /// The exporter and the layer that feeds it AGP's spans (`debug` and above).
    pub fn layer<S>(
        endpoint: &url::Url,
    ) -> anyhow::Result<(Exporter, Box<dyn Layer<S> + Send + Sync + 'static>)>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        anyhow::ensure!(
            matches!(endpoint.scheme(), "http" | "https"),
            "--otlp-endpoint / AGP_OTLP_ENDPOINT must be an http(s) URL"
        );
        let timeout = Duration::from_secs(10);
        // reqwest's blocking client, as the batch processor (a thread of its own, no async
        // runtime) needs; built off the runtime, which a blocking client must not be built on.
        // No ambient proxy: the collector is the one the operator named.
        let client = std::thread::spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .no_proxy()
                .build()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("building the OTLP HTTP client panicked"))?
        .context("building the OTLP HTTP client")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(traces_url(endpoint))
            .with_timeout(timeout)
            .build()
            .context("building the OTLP span exporter")?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("agp")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("agp");
        let filter = Targets::new()
            .with_target("agp", LevelFilter::DEBUG)
            .with_default(LevelFilter::OFF);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter)
            .boxed();
        Ok((Exporter(provider), layer))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_traces_path_is_appended_to_the_endpoint() {
            for (endpoint, want) in [
                ("http://c:4318", "http://c:4318/v1/traces"),
                ("http://c:4318/", "http://c:4318/v1/traces"),
                ("https://c/otel/", "https://c/otel/v1/traces"),
            ] {
                let url = url::Url::parse(endpoint).expect("url");
                assert_eq!(super::traces_url(&url), want);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_directives;

    #[test]
    fn agp_log_wins_then_rust_log_then_info() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            log_directives(s("debug"), s("warn")),
            ("debug".into(), "AGP_LOG")
        );
        assert_eq!(log_directives(None, s("warn")), ("warn".into(), "RUST_LOG"));
        assert_eq!(
            log_directives(s(" "), s("warn")),
            ("warn".into(), "RUST_LOG")
        );
        assert_eq!(log_directives(None, None), ("info".into(), "default"));
        assert_eq!(log_directives(s(""), s("")), ("info".into(), "default"));
    }
}
