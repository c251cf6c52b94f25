//! Capturing the spans and events eventcore emits, to assert on them in
//! tests: install a [`Capture`] as the thread's default subscriber (a
//! current-thread runtime keeps spawned tasks on that thread), run, then
//! look spans and events up by name.
//!
//! ```
//! use eventcore_testing::{fixtures::{Credit, stream}, trace::Capture};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let capture = Capture::default();
//! let _guard = capture.install();
//! let store = eventcore_memory::InMemoryEventStore::new();
//! eventcore::execute(&store, Credit { account: stream("a"), amount: 1 }).await.unwrap();
//! let run = &capture.spans("eventcore.execute")[0];
//! assert_eq!(run.fields["outcome"], "applied");
//! # }
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tracing::{
    Id, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Record},
};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

/// A span or event as captured: its name (an event's message), fields, and
/// the name of the span it happened in.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// The span's name, or the event's message.
    pub name: String,
    /// Its fields, formatted.
    pub fields: HashMap<String, String>,
    /// The name of the span it was created or emitted in.
    pub parent: Option<String>,
}

/// A `tracing` layer that keeps every span and event it sees.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    spans: Arc<Mutex<HashMap<u64, Captured>>>,
    events: Arc<Mutex<Vec<Captured>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut span = Captured {
            name: attrs.metadata().name().to_owned(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.name().to_owned()),
            ..Captured::default()
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.spans.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let name = fields.remove("message").unwrap_or_default();
        self.events.lock().unwrap().push(Captured {
            name,
            fields,
            parent: ctx.event_span(event).map(|s| s.name().to_owned()),
        });
    }
}

impl Capture {
    /// Installs the capture as this thread's default subscriber until the
    /// guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    /// The spans named `name`, in creation order.
    pub fn spans(&self, name: &str) -> Vec<Captured> {
        let mut found: Vec<(u64, Captured)> = self
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        found.sort_by_key(|(id, _)| *id);
        found.into_iter().map(|(_, s)| s).collect()
    }

    /// The events with this message, in order.
    pub fn events(&self, message: &str) -> Vec<Captured> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.name == message)
            .cloned()
            .collect()
    }
}
