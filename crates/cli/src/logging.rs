//! Log lines on stderr: what the run is doing (a revision published, a worker adopting a new
//! revision, the bucket back after an outage) at the default level, warnings and errors from
//! everything else, each stamped with the time. `RUST_LOG` replaces the default filter.
//!
//! Live progress bars and log lines share the terminal: bars are drawn through [`bars`], and
//! every log line is written with the bars lifted, so neither overwrites the other.

use std::io::Write;
use std::sync::OnceLock;

use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;

/// Our own crates speak at `info`; libraries only when something is wrong.
pub(crate) const DEFAULT_FILTER: &str = "warn,zero2048=info,zero2048_train=info,zero2048_server=info,\
     zero2048_worker=info,zero2048_storage=info,zero2048_selfplay=info";

/// The one set of live bars on stderr; add every progress bar here.
pub(crate) fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Installs the subscriber for the whole process.
pub(crate) fn init() {
    use std::io::IsTerminal;
    let _ = subscriber(LineWriter, std::io::stderr().is_terminal()).try_init();
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER))
}

fn subscriber<W>(
    writer: W,
    ansi: bool,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    tracing_subscriber::EnvFilter,
    W,
>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt().with_env_filter(filter()).with_writer(writer).with_ansi(ansi).with_target(false)
}

/// Writes each formatted event to stderr with the live bars lifted for the moment.
#[derive(Clone, Copy)]
struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        *self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn the_default_level_shows_our_news_with_a_time_and_hides_library_chatter() {
        // The default filter is what is under test; a developer's RUST_LOG replaces it.
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        let captured = Captured::default();
        let subscriber = subscriber(captured.clone(), false).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "zero2048_storage::adapter", "bucket runs is back: 3 revisions caught up");
            tracing::info!(target: "zero2048_worker::worker", "adopted revision 7");
            tracing::debug!(target: "zero2048_storage::adapter", "a detail nobody asked for");
            tracing::info!(target: "hyper::client", "library chatter");
            tracing::warn!(target: "object_store::aws", "a library warning");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("bucket runs is back"), "{text}");
        assert!(text.contains("adopted revision 7"), "{text}");
        assert!(text.contains("a library warning"), "{text}");
        assert!(!text.contains("a detail nobody asked for"), "{text}");
        assert!(!text.contains("library chatter"), "{text}");
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("20") && first.contains('T'), "no timestamp: {first}");
    }
}
