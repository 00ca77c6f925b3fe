//! Tracing set-up: `RUST_LOG` (or `log.filter`) decides what is logged,
//! `log.format` decides text or JSON lines; OpenTelemetry traces go out over
//! OTLP/gRPC when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and not at all otherwise.
//!
//! The exporter reads the other standard variables itself
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
//! and `_ARG`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_BSP_*`). `OTEL_EXPORTER_OTLP_PROTOCOL` may only be `grpc` (the one
//! protocol built in); `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! turn traces off whatever the endpoint says.
//!
//! Spans reach OpenTelemetry at `info` and above whatever the log filter
//! says: the log level is about the log, not about which traces exist. In
//! JSON logs, a line logged inside a span carries that span's `trace_id`
//! and `span_id`.

use std::{
    io::IsTerminal as _,
    sync::{Arc, OnceLock},
};

use anyhow::Context as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::{Dispatch, Event, Subscriber, dispatcher::WeakDispatch};
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::LevelFilter,
    fmt::{
        self, FmtContext, FormatEvent, FormatFields,
        format::{self as format, Writer},
    },
    prelude::*,
    registry::LookupSpan,
};

use crate::config::{LogConfig, LogFormat};

/// The trace pipeline, to flush and stop when the service ends. Dropping it
/// without [`Telemetry::shutdown`] loses the spans not yet exported.
#[derive(Debug)]
#[must_use = "call shutdown() at exit, or spans still queued are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter. Call while the
    /// async runtime still runs (the gRPC exporter's connection lives on it).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("traces: flushing the exporter at shutdown failed: {e}");
        }
    }
}

/// Whether the environment asks for traces: an OTLP endpoint is set, and
/// neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says no.
fn wanted(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    endpoint && !disabled && !no_exporter
}

/// Refuses an OTLP protocol other than gRPC, the one built in (rather than
/// exporting to a port that expects another).
fn check_protocol(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(name).filter(|v| !v.trim().is_empty()) {
            anyhow::ensure!(
                value.trim().eq_ignore_ascii_case("grpc"),
                "{name}={value}: only `grpc` is supported (OTLP over gRPC, port 4317 by convention)"
            );
            // The signal-specific variable wins over the general one.
            return Ok(());
        }
    }
    Ok(())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The tracer provider the environment asks for, or `None`. Must run inside
/// the Tokio runtime (the exporter's channel is spawned on it).
fn provider(service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if !wanted(&env_var) {
        return Ok(None);
    }
    check_protocol(&env_var)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("cannot set up the OTLP trace exporter (OTEL_EXPORTER_OTLP_*)")?;
    // OTEL_SERVICE_NAME, or service.name in OTEL_RESOURCE_ATTRIBUTES, name
    // the service if given; the binary's name does otherwise.
    let named = env_var("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || env_var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.name="));
    let resource = Resource::builder();
    let resource = if named {
        resource
    } else {
        resource.with_service_name(service.to_owned())
    };
    let resource = resource.with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    // Replicas told apart: the host name (a container's, a pod's) unless
    // OTEL_RESOURCE_ATTRIBUTES names the instance.
    let instance =
        env_var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.instance.id="));
    let resource = match env_var("HOSTNAME").filter(|h| !h.is_empty()) {
        Some(host) if !instance => {
            resource.with_attribute(opentelemetry::KeyValue::new("service.instance.id", host))
        }
        _ => resource,
    };
    let resource = resource.build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// Installs the global subscriber, and the trace exporter if the
/// environment asks for one. Call once, first thing in `main`, inside the
/// Tokio runtime (`Runtime::enter`); `service` names the service in traces
/// unless `OTEL_SERVICE_NAME` does.
///
/// # Errors
/// If the filter directives do not parse, a subscriber is already set, or
/// the `OTEL_*` variables ask for an exporter that cannot be built.
pub fn init(config: &LogConfig, service: &str) -> anyhow::Result<Telemetry> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(value)?,
        _ => EnvFilter::try_new(&config.filter)?,
    };
    let provider = provider(service)?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("fastchat"))
            .with_filter(LevelFilter::INFO)
    });
    let dispatch = DispatchSlot::default();
    // The slot only keeps the dispatch: filtered to nothing, so it does not
    // make every callsite (hyper's and h2's trace-level ones included)
    // interesting to the registry, which an unfiltered layer would.
    let registry = tracing_subscriber::registry()
        .with(otel)
        .with(dispatch.clone().with_filter(LevelFilter::OFF));
    match config.format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .event_format(WithTraceIds {
                        format: json_format(),
                        dispatch,
                    })
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()?,
    }
    if provider.is_some() {
        crate::propagation::set_enabled();
    }
    Ok(Telemetry { provider })
}

/// The JSON line format `log.format = "json"` writes.
fn json_format() -> format::Format<format::Json> {
    format::format()
        .json()
        .flatten_event(true)
        .with_current_span(false)
}

/// The subscriber the JSON format runs in, kept when it is installed: the
/// format needs it to ask the OpenTelemetry layer for a span's ids, and
/// while an event is dispatched `tracing` lends no other.
#[derive(Debug, Clone, Default)]
pub(crate) struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> tracing_subscriber::Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// A JSON event format that adds, first on the line, the `trace_id` and
/// `span_id` of the span the event is logged in (when traces are on and the
/// span has a valid context).
#[derive(Debug)]
pub(crate) struct WithTraceIds<F> {
    pub(crate) format: F,
    pub(crate) dispatch: DispatchSlot,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = if crate::propagation::enabled() {
            let dispatch = self.dispatch.0.get().and_then(WeakDispatch::upgrade);
            // The innermost span the OpenTelemetry layer knows (it sees
            // `info` and above; a `debug` span inside is the log's alone).
            dispatch.and_then(|dispatch| {
                ctx.event_scope()?
                    .find_map(|span| ids_of(&span.id(), &dispatch))
            })
        } else {
            None
        };
        let Some((trace_id, span_id)) = ids else {
            return self.format.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.format
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                let comma = if rest.starts_with('}') { "" } else { "," };
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{comma}{rest}"
                )
            }
            None => writer.write_str(&line),
        }
    }
}

/// The OpenTelemetry trace and span id of a span, in hex.
fn ids_of(id: &tracing::span::Id, dispatch: &Dispatch) -> Option<(String, String)> {
    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        assert!(!wanted(&env(&[])));
        assert!(!wanted(&env(&[("OTEL_SERVICE_NAME", "x")])));
        assert!(!wanted(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(wanted(&env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(wanted(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert!(!wanted(&env(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(!wanted(&env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])));
        assert!(wanted(&env(&[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")])));
    }

    #[test]
    fn only_the_grpc_protocol_is_accepted() {
        assert!(check_protocol(&env(&[])).is_ok());
        assert!(check_protocol(&env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).is_ok());
        let error = check_protocol(&env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]))
            .expect_err("http is not built in");
        assert!(error.to_string().contains("only `grpc`"), "{error}");
        // The signal-specific variable wins.
        assert!(
            check_protocol(&env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ]))
            .is_ok()
        );
    }
}
