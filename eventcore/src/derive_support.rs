//! What the code written by `#[derive(Event)]` and `#[derive(Command)]`
//! calls. Not part of the API: its only users are the derives.

use std::collections::{BTreeSet, HashSet, VecDeque};

use crate::StreamId;

/// The JSON value an upcaster takes and returns.
pub use serde_json::Value as JsonValue;

/// A field that `#[derive(Event)]` may take as an event's stream.
#[diagnostic::on_unimplemented(
    message = "`#[stream]` marks the field that holds the event's stream: `{Self}` is not a `StreamId`",
    label = "not a `StreamId`"
)]
pub trait IsStreamId {
    /// The stream id.
    fn as_stream_id(&self) -> &StreamId;
}

impl IsStreamId for StreamId {
    fn as_stream_id(&self) -> &StreamId {
        self
    }
}

/// A field that `#[derive(Command)]` may take as some of a command's
/// streams.
#[diagnostic::on_unimplemented(
    message = "`#[stream]` marks a field that holds stream ids: `{Self}` is not a `StreamId`, an `Option<StreamId>` or a collection of them",
    label = "not stream ids"
)]
pub trait StreamField {
    /// Adds the field's stream ids to `streams`.
    fn add_to(&self, streams: &mut Vec<StreamId>);
}

impl StreamField for StreamId {
    fn add_to(&self, streams: &mut Vec<StreamId>) {
        streams.push(self.clone());
    }
}

impl StreamField for Option<StreamId> {
    fn add_to(&self, streams: &mut Vec<StreamId>) {
        streams.extend(self.iter().cloned());
    }
}

/// The collections of stream ids a command field may be.
macro_rules! stream_collections {
    ($([$($generics:tt)*] $collection:ty),+ $(,)?) => {$(
        impl<$($generics)*> StreamField for $collection {
            fn add_to(&self, streams: &mut Vec<StreamId>) {
                streams.extend(self.iter().cloned());
            }
        }
    )+};
}

stream_collections!(
    [] Vec<StreamId>,
    [] [StreamId],
    [const N: usize] [StreamId; N],
    [] Box<[StreamId]>,
    [] VecDeque<StreamId>,
    [] BTreeSet<StreamId>,
    [S: std::hash::BuildHasher] HashSet<StreamId, S>,
);
