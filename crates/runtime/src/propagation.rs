//! W3C trace context (<https://www.w3.org/TR/trace-context/>) across the
//! services: from a request's `traceparent`/`tracestate` headers to a span's
//! parent, from a span to the headers stored with a message, and from a
//! stored message back to a parent (live deliveries) or a link (replays).
//!
//! Everything here does nothing while traces are off ([`enabled`] is false
//! until `telemetry::init` has set up an exporter), so the hot paths pay
//! one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};

use broker_client::TraceContext;
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::TraceContextExt as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataMap};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A trace context read back from a stored message.
pub use opentelemetry::trace::SpanContext;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (an OTLP endpoint was configured).
#[must_use]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// A request's headers as the propagator reads them (gRPC metadata; the
/// HTTP/JSON and gRPC-web faces hand their headers over as metadata too).
struct Metadata<'a>(&'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The headers of a stored message, as the propagator writes and reads them.
#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TraceContext::TRACEPARENT => self.traceparent = Some(value),
            TraceContext::TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TraceContext::TRACEPARENT => self.traceparent.as_deref(),
            TraceContext::TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TraceContext::TRACEPARENT, TraceContext::TRACESTATE]
    }
}

/// Makes `span` a child of the trace context `metadata` carries (a client's
/// `traceparent`, and its `tracestate`); without one, or with one that is
/// not valid, `span` starts a trace of its own.
pub fn set_request_parent(span: &tracing::Span, metadata: &MetadataMap) {
    if !enabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
    if parent.span().span_context().is_valid() {
        // Fails only when the layer is not installed or the span was
        // already started: then there is no trace to join anyway.
        let _ = span.set_parent(parent);
    }
}

/// The trace context to store with a message sent inside `span`: `span`'s
/// own, so that what is done with the message later is part of its trace.
/// `None` while traces are off.
#[must_use]
pub fn of_span(span: &tracing::Span) -> Option<TraceContext> {
    if !enabled() {
        return None;
    }
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    Some(TraceContext {
        traceparent: carrier.traceparent?,
        tracestate: carrier.tracestate,
    })
}

/// The span context stored with a message, if it is a valid one and traces
/// are on (parse it once per message, not once per subscriber).
#[must_use]
pub fn stored(trace: Option<TraceContext>) -> Option<SpanContext> {
    if !enabled() {
        return None;
    }
    let trace = trace?;
    let carrier = Carrier {
        traceparent: Some(trace.traceparent),
        tracestate: trace.tracestate,
    };
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.clone())
}

/// Makes `span` a child of a stored message's context (a live delivery:
/// part of the send's trace).
pub fn set_stored_parent(span: &tracing::Span, stored: &SpanContext) {
    let _ = span.set_parent(Context::new().with_remote_span_context(stored.clone()));
}

/// Links `span` to a stored message's context (a replay, a page, a catch-up:
/// later work of its own that refers to the send's trace).
pub fn link(span: &tracing::Span, stored: &SpanContext) {
    span.add_link(stored.clone());
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::{fmt::MakeWriter, prelude::*};

    use super::*;
    use crate::telemetry::{DispatchSlot, WithTraceIds};

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Log lines, for the JSON layer to write into.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
    }

    /// A client's traceparent → the send span (its child) → the context
    /// stored with the message (the send span's own, with the client's
    /// tracestate) → a live delivery (a child of it) and a replay (a link
    /// to it); the JSON log line inside the send span names its ids.
    #[test]
    fn the_trace_context_goes_from_the_request_to_the_deliveries() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let lines = Lines::default();
        let dispatch = DispatchSlot::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(dispatch.clone())
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(WithTraceIds {
                        format: tracing_subscriber::fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(false),
                        dispatch,
                    })
                    .with_writer(lines.clone()),
            );
        set_enabled();
        let mut metadata = MetadataMap::new();
        metadata.insert("traceparent", CLIENT.parse().expect("ascii"));
        metadata.insert("tracestate", "vendor=opaque".parse().expect("ascii"));

        let stored_trace = tracing::subscriber::with_default(subscriber, || {
            let send = tracing::info_span!("send");
            set_request_parent(&send, &metadata);
            let stored_trace = of_span(&send).expect("traces are on");
            send.in_scope(|| tracing::info!("stored"));
            drop(send);

            let stored = stored(Some(stored_trace.clone())).expect("a valid stored context");
            let live = tracing::info_span!("deliver_live");
            set_stored_parent(&live, &stored);
            live.in_scope(|| {});
            drop(live);
            let replay = tracing::info_span!("deliver_replay");
            link(&replay, &stored);
            replay.in_scope(|| {});
            drop(replay);
            stored_trace
        });

        let spans = exporter.get_finished_spans().expect("spans");
        let client_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
        let send = span(&spans, "send");
        assert_eq!(send.span_context.trace_id(), client_trace);
        assert_eq!(
            send.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").expect("hex")
        );
        // What is stored is the send span's context, not the client's.
        assert_eq!(
            stored_trace.traceparent,
            format!("00-{client_trace}-{}-01", send.span_context.span_id())
        );
        assert_eq!(stored_trace.tracestate.as_deref(), Some("vendor=opaque"));

        let live = span(&spans, "deliver_live");
        assert_eq!(live.span_context.trace_id(), client_trace);
        assert_eq!(live.parent_span_id, send.span_context.span_id());

        let replay = span(&spans, "deliver_replay");
        assert_ne!(
            replay.span_context.trace_id(),
            client_trace,
            "a trace of its own"
        );
        assert_eq!(replay.parent_span_id, SpanId::INVALID);
        let linked: Vec<_> = replay
            .links
            .iter()
            .map(|l| l.span_context.clone())
            .collect();
        assert_eq!(linked.len(), 1, "{linked:?}");
        assert_eq!(linked[0].trace_id(), client_trace);
        assert_eq!(linked[0].span_id(), send.span_context.span_id());

        let log = String::from_utf8(
            lines
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
        .expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(log.trim()).expect("one JSON line");
        assert_eq!(line["trace_id"], client_trace.to_string(), "{log}");
        assert_eq!(
            line["span_id"],
            send.span_context.span_id().to_string(),
            "{log}"
        );
        assert_eq!(line["message"], "stored", "{log}");
    }

    #[test]
    fn an_invalid_stored_context_is_none() {
        set_enabled();
        let bad = TraceContext {
            traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
            tracestate: None,
        };
        assert!(stored(Some(bad)).is_none());
        assert!(stored(None).is_none());
        let good = TraceContext {
            traceparent: CLIENT.into(),
            tracestate: None,
        };
        let context = stored(Some(good)).expect("valid");
        assert!(context.is_sampled());
        assert!(context.is_remote());
    }
}
