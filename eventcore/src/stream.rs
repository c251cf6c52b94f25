//! Stream identity and versions.

use std::fmt;

use nutype::nutype;
use serde::{Deserialize, Serialize};

/// The longest stream id accepted, in characters.
pub const MAX_STREAM_ID_CHARS: usize = 255;

/// Why a string is not a valid [`StreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamIdError {
    /// The id is empty once surrounding white space is trimmed.
    #[error("stream id is empty (after trimming white space)")]
    Empty,
    /// The id is longer than [`MAX_STREAM_ID_CHARS`].
    #[error("stream id is {chars} characters long; the limit is {MAX_STREAM_ID_CHARS}")]
    TooLong {
        /// Length of the trimmed id, in characters.
        chars: usize,
    },
    /// The id holds a control character (NUL included).
    #[error("stream id contains control character U+{code_point:04X} at character {index}")]
    ControlCharacter {
        /// Unicode code point of the offending character.
        code_point: u32,
        /// Zero-based character index in the trimmed id.
        index: usize,
    },
}

/// What is wrong with a name or id checked by [`check_text`].
pub(crate) enum TextFault {
    Empty,
    TooLong(usize),
    Control { code_point: u32, index: usize },
}

/// The rule every stored name and id follows: 1 to `max` characters, no
/// control character.
pub(crate) fn check_text(text: &str, max: usize) -> Result<(), TextFault> {
    let mut chars = 0;
    for (index, c) in text.chars().enumerate() {
        if c.is_control() {
            return Err(TextFault::Control {
                code_point: u32::from(c),
                index,
            });
        }
        chars += 1;
    }
    match chars {
        0 => Err(TextFault::Empty),
        n if n > max => Err(TextFault::TooLong(n)),
        _ => Ok(()),
    }
}

fn validate_stream_id(id: &str) -> Result<(), StreamIdError> {
    check_text(id, MAX_STREAM_ID_CHARS).map_err(|fault| match fault {
        TextFault::Empty => StreamIdError::Empty,
        TextFault::TooLong(chars) => StreamIdError::TooLong { chars },
        TextFault::Control { code_point, index } => {
            StreamIdError::ControlCharacter { code_point, index }
        }
    })
}

/// The name of one event stream, such as `account-42`.
///
/// Surrounding white space is trimmed; the result must hold 1 to
/// [`MAX_STREAM_ID_CHARS`] characters and no control characters. Any other
/// character is kept verbatim, quotes, `%`, `_`, backslashes and non-ASCII
/// included.
///
/// ```
/// use eventcore::{StreamId, StreamIdError};
///
/// let id = StreamId::try_new("  account-42 ").unwrap();
/// assert_eq!(id.as_ref(), "account-42");
/// assert_eq!(StreamId::try_new("   "), Err(StreamIdError::Empty));
/// assert!(matches!(
///     StreamId::try_new("a\0b"),
///     Err(StreamIdError::ControlCharacter { code_point: 0, index: 1 })
/// ));
/// ```
#[nutype(
    sanitize(trim),
    validate(with = validate_stream_id, error = StreamIdError),
    derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, AsRef, Display, Serialize, Deserialize, TryFrom)
)]
pub struct StreamId(String);

impl StreamId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        self.as_ref()
    }
}

/// The number of events in a stream: `0` means the stream has no events yet,
/// and the event written at version `n` is the stream's `n`th event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct StreamVersion(u64);

impl StreamVersion {
    /// The version of a stream that holds no events.
    pub const INITIAL: StreamVersion = StreamVersion(0);

    /// A version from a raw event count.
    pub const fn new(version: u64) -> Self {
        StreamVersion(version)
    }

    /// The raw event count.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after `count` more events, or `None` past `u64::MAX`.
    pub const fn checked_add(self, count: u64) -> Option<Self> {
        match self.0.checked_add(count) {
            Some(v) => Some(StreamVersion(v)),
            None => None,
        }
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for StreamVersion {
    fn from(v: u64) -> Self {
        StreamVersion(v)
    }
}

/// A set of stream ids, sorted and each once: what a command reads, what a
/// snapshot covers, what a read asks for. Made from any list of ids (sorted
/// and deduplicated once, here), so code that takes one never sorts again.
///
/// ```
/// use eventcore::{StreamId, StreamSet};
/// let id = |s: &str| StreamId::try_new(s).unwrap();
/// let set: StreamSet = [id("b"), id("a"), id("b")].into_iter().collect();
/// assert_eq!(set.as_slice(), &[id("a"), id("b")]);
/// assert!(set.contains(&id("b")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StreamSet(Vec<StreamId>);

impl StreamSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ids, sorted, each once.
    pub fn as_slice(&self) -> &[StreamId] {
        &self.0
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &StreamId) -> bool {
        self.0.binary_search(id).is_ok()
    }

    /// How many ids the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set holds no id.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `id`; returns whether it was new.
    pub fn insert(&mut self, id: StreamId) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, id);
                true
            }
        }
    }

    /// The ids of `self` and `other`.
    pub fn union(&self, other: &StreamSet) -> StreamSet {
        self.iter().chain(other).cloned().collect()
    }

    /// The ids in order.
    pub fn iter(&self) -> std::slice::Iter<'_, StreamId> {
        self.0.iter()
    }
}

impl FromIterator<StreamId> for StreamSet {
    fn from_iter<I: IntoIterator<Item = StreamId>>(ids: I) -> Self {
        let mut ids: Vec<StreamId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        StreamSet(ids)
    }
}

impl From<Vec<StreamId>> for StreamSet {
    fn from(ids: Vec<StreamId>) -> Self {
        ids.into_iter().collect()
    }
}

impl From<&[StreamId]> for StreamSet {
    fn from(ids: &[StreamId]) -> Self {
        ids.iter().cloned().collect()
    }
}

impl std::ops::Deref for StreamSet {
    type Target = [StreamId];
    fn deref(&self) -> &[StreamId] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a StreamSet {
    type Item = &'a StreamId;
    type IntoIter = std::slice::Iter<'a, StreamId>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for StreamSet {
    type Item = StreamId;
    type IntoIter = std::vec::IntoIter<StreamId>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn documented_rule(raw: &str) -> bool {
        let t = raw.trim();
        let n = t.chars().count();
        (1..=MAX_STREAM_ID_CHARS).contains(&n) && !t.chars().any(char::is_control)
    }

    proptest! {
        #[test]
        fn try_new_accepts_exactly_the_documented_set(raw in any::<String>()) {
            let result = StreamId::try_new(raw.clone());
            prop_assert_eq!(result.is_ok(), documented_rule(&raw));
            if let Ok(id) = result {
                prop_assert_eq!(id.as_str(), raw.trim());
            }
        }

        #[test]
        fn try_new_on_edge_strings(raw in "[ \\t\\x00\\x1f\\x7fa%_'\"\\\\é日]{0,300}") {
            let result = StreamId::try_new(raw.clone());
            prop_assert_eq!(result.is_ok(), documented_rule(&raw));
        }
    }

    #[test]
    fn length_limit_counts_characters_not_bytes() {
        let at_limit = "é".repeat(MAX_STREAM_ID_CHARS);
        assert!(StreamId::try_new(at_limit).is_ok());
        let over = "é".repeat(MAX_STREAM_ID_CHARS + 1);
        assert_eq!(
            StreamId::try_new(over),
            Err(StreamIdError::TooLong {
                chars: MAX_STREAM_ID_CHARS + 1
            })
        );
    }

    #[test]
    fn metacharacters_are_kept_verbatim() {
        let raw = r#"o'brien"%_\x/日本"#;
        assert_eq!(StreamId::try_new(raw).unwrap().as_str(), raw);
    }
}
