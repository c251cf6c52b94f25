//! Where an event came from: its ids, its command's ids, and the caller's
//! own key/values.

use std::fmt;

use nutype::nutype;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::stream::{TextFault, check_text};

/// The longest id ([`CorrelationId`], [`CausationId`], [`CommandId`])
/// accepted, in characters.
pub const MAX_ID_CHARS: usize = 255;

/// Why a string is not a valid [`CorrelationId`], [`CausationId`] or
/// [`CommandId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_CHARS`].
    #[error("id is {chars} characters long; the limit is {MAX_ID_CHARS}")]
    TooLong {
        /// Length of the id, in characters.
        chars: usize,
    },
    /// The id holds a control character (NUL included).
    #[error("id contains control character U+{code_point:04X} at character {index}")]
    ControlCharacter {
        /// Unicode code point of the offending character.
        code_point: u32,
        /// Zero-based character index.
        index: usize,
    },
}

fn validate_id(id: &str) -> Result<(), IdError> {
    check_text(id, MAX_ID_CHARS).map_err(|fault| match fault {
        TextFault::Empty => IdError::Empty,
        TextFault::TooLong(chars) => IdError::TooLong { chars },
        TextFault::Control { code_point, index } => IdError::ControlCharacter { code_point, index },
    })
}

/// Methods every text id shares.
macro_rules! text_id {
    ($name:ident) => {
        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                self.as_ref()
            }

            /// A new random, time-ordered id (a UUIDv7 in its hyphenated form).
            pub fn generate() -> Self {
                Self::from(Uuid::now_v7())
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                // A hyphenated UUID is 36 ASCII characters: always valid.
                match Self::try_new(uuid.hyphenated().to_string()) {
                    Ok(id) => id,
                    Err(_) => unreachable!("a UUID is a valid id"),
                }
            }
        }
    };
}

/// The id shared by every event of one piece of work (a request, a saga),
/// across commands: set it from the incoming request, or let `execute`
/// make one per command. 1 to [`MAX_ID_CHARS`] characters, no control
/// characters, kept verbatim.
///
/// ```
/// use eventcore::{CorrelationId, IdError};
/// let id = CorrelationId::try_new("req-7f3a").unwrap();
/// assert_eq!(id.as_str(), "req-7f3a");
/// assert_eq!(CorrelationId::try_new(""), Err(IdError::Empty));
/// ```
#[nutype(
    validate(with = validate_id, error = IdError),
    derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, AsRef, Display, Serialize, Deserialize, TryFrom)
)]
pub struct CorrelationId(String);
text_id!(CorrelationId);

/// What directly caused an event: the command id that wrote it, or the
/// id of the event a handler reacted to. Same rules as [`CorrelationId`].
#[nutype(
    validate(with = validate_id, error = IdError),
    derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, AsRef, Display, Serialize, Deserialize, TryFrom)
)]
pub struct CausationId(String);
text_id!(CausationId);

/// A caller-chosen id for one command (an HTTP `Idempotency-Key`, a message
/// id). Same rules as [`CorrelationId`].
#[nutype(
    validate(with = validate_id, error = IdError),
    derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, AsRef, Display, Serialize, Deserialize, TryFrom)
)]
pub struct CommandId(String);
text_id!(CommandId);

impl From<&CommandId> for CausationId {
    fn from(id: &CommandId) -> Self {
        // Both types accept exactly the same strings.
        match CausationId::try_new(id.as_str().to_owned()) {
            Ok(id) => id,
            Err(_) => unreachable!("a command id is a valid causation id"),
        }
    }
}

/// What a writer says about an event besides its payload: the ids that
/// trace it (correlation, causation) and key/values of its own (a user, a
/// tenant, a request path). Stored with every event and read back on
/// [`RecordedEvent::metadata`](crate::RecordedEvent::metadata).
///
/// ```
/// use eventcore::{CorrelationId, Metadata};
/// let metadata = Metadata::new()
///     .with_correlation_id(CorrelationId::try_new("req-1").unwrap())
///     .with_value("user", "alice")
///     .with_value("attempt", 2);
/// assert_eq!(metadata.value("user"), Some(&serde_json::json!("alice")));
/// assert_eq!(metadata.correlation_id().unwrap().as_str(), "req-1");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    correlation_id: Option<CorrelationId>,
    causation_id: Option<CausationId>,
    values: Map<String, Value>,
}

impl Metadata {
    /// No ids and no values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: CorrelationId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: CausationId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets one key/value (replacing an earlier value of the key).
    pub fn with_value(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.values.insert(key.into(), value.into());
        self
    }

    /// Replaces all key/values.
    pub fn with_values(mut self, values: Map<String, Value>) -> Self {
        self.values = values;
        self
    }

    /// The correlation id, if set.
    pub fn correlation_id(&self) -> Option<&CorrelationId> {
        self.correlation_id.as_ref()
    }

    /// The causation id, if set.
    pub fn causation_id(&self) -> Option<&CausationId> {
        self.causation_id.as_ref()
    }

    /// The value of one key.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Every key/value.
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.correlation_id.is_none() && self.causation_id.is_none() && self.values.is_empty()
    }

    /// `self`, with what it lacks taken from `defaults`: each id if unset,
    /// each key absent from `self`.
    pub(crate) fn or(mut self, defaults: &Metadata) -> Self {
        if self.correlation_id.is_none() {
            self.correlation_id = defaults.correlation_id.clone();
        }
        if self.causation_id.is_none() {
            self.causation_id = defaults.causation_id.clone();
        }
        for (k, v) in &defaults.values {
            if !self.values.contains_key(k) {
                self.values.insert(k.clone(), v.clone());
            }
        }
        self
    }

    /// The key/values as JSON text (an object).
    pub fn values_json(&self) -> String {
        // A map of JSON values with string keys always serialises.
        serde_json::to_string(&self.values).unwrap_or_else(|_| "{}".to_owned())
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Metadata");
        if let Some(id) = &self.correlation_id {
            d.field("correlation_id", &id.as_str());
        }
        if let Some(id) = &self.causation_id {
            d.field("causation_id", &id.as_str());
        }
        if !self.values.is_empty() {
            d.field("values", &self.values);
        }
        d.finish()
    }
}

/// Whether any key or string value holds U+0000, which PostgreSQL's `jsonb`
/// cannot store.
pub(crate) fn holds_nul(values: &Map<String, Value>) -> bool {
    fn value(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(value),
            Value::Object(map) => holds_nul(map),
            _ => false,
        }
    }
    values.iter().any(|(k, v)| k.contains('\0') || value(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_and_kept_verbatim() {
        assert_eq!(CommandId::try_new(" a ").unwrap().as_str(), " a ");
        assert_eq!(CommandId::try_new(""), Err(IdError::Empty));
        assert!(matches!(
            CommandId::try_new("a\nb"),
            Err(IdError::ControlCharacter {
                code_point: 10,
                index: 1
            })
        ));
        assert_eq!(
            CommandId::try_new("x".repeat(256)),
            Err(IdError::TooLong { chars: 256 })
        );
        assert_eq!(CommandId::generate().as_str().len(), 36);
    }

    #[test]
    fn defaults_fill_only_what_is_unset() {
        let defaults = Metadata::new()
            .with_correlation_id(CorrelationId::try_new("c").unwrap())
            .with_value("user", "alice")
            .with_value("tenant", "t1");
        let own = Metadata::new()
            .with_causation_id(CausationId::try_new("e").unwrap())
            .with_value("user", "bob");
        let merged = own.or(&defaults);
        assert_eq!(merged.correlation_id().unwrap().as_str(), "c");
        assert_eq!(merged.causation_id().unwrap().as_str(), "e");
        assert_eq!(merged.value("user"), Some(&Value::from("bob")));
        assert_eq!(merged.value("tenant"), Some(&Value::from("t1")));
    }

    #[test]
    fn nul_anywhere_is_found() {
        let nested = serde_json::json!({"a": [1, {"b": "x\u{0}"}]});
        let Value::Object(map) = nested else { panic!() };
        assert!(holds_nul(&map));
        let Value::Object(key) = serde_json::json!({"k\u{0}": 1}) else {
            panic!()
        };
        assert!(holds_nul(&key));
        let Value::Object(clean) = serde_json::json!({"k": ["v", 1.5, null]}) else {
            panic!()
        };
        assert!(!holds_nul(&clean));
    }
}
