//! Logging set-up: to stderr, so that stdout stays free for command output such as
//! CSV. (The per-request log line and the request ids are HTTP's: `http::telemetry`.)

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,actix_server=warn";

/// Where actix-http reports a connection that ended in error, at ERROR: a bad request
/// line, an oversized head, a reset connection. Each is the client's doing and already
/// answered (400, 431) or gone.
const ACTIX_DISPATCHER: &str = "actix_http::h1::dispatcher";

fn is_connection_error(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::ERROR && meta.target() == ACTIX_DISPATCHER
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colour codes only for a person at a terminal: in a file or a journal they are
    // noise that breaks grep.
    let ansi = std::io::stderr().is_terminal();
    // A second init (tests start many apps) is harmless; ignore it.
    let _ = subscriber(format, filter, std::io::stderr, ansi).try_init();
}

fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(ConnectionErrors)
        .with(fmt)
}

/// Logs actix-http's connection errors again at the level they deserve and drops the
/// originals: a client's malformed request at DEBUG, anything else that broke a
/// connection at WARN. An ERROR line should mean that kassa needs a person.
struct ConnectionErrors;

impl<S: Subscriber> Layer<S> for ConnectionErrors {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if !is_connection_error(event.metadata()) {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let error = message.0;
        // Logged from inside the subscriber: this reaches the output through the
        // global subscriber (what `init` installs), not through a scoped one.
        if error.contains("parse error") {
            tracing::debug!(target: "kassa::http::connection", %error, "malformed request from a client");
        } else {
            tracing::warn!(target: "kassa::http::connection", %error, "connection ended in error");
        }
        false
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(filter: &str, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(
            LogFormat::Text,
            EnvFilter::new(filter),
            move || writer.clone(),
            false,
        );
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn actix_connection_errors_are_kept_from_the_output_and_other_errors_are_not() {
        let emit = || {
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: request parse error: invalid Header provided");
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: I/O error: reset");
            tracing::error!(target: "kassa::elsewhere", "a real error");
        };
        let debug = logged("debug", emit);
        assert!(!debug.contains("actix_http"), "{debug}");
        assert!(debug.contains("ERROR kassa::elsewhere: a real error"), "{debug}");
    }
}
