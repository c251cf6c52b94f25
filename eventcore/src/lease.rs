//! What names a subscription's lease and fences its holders: the
//! subscription's name and the lease's token. Apart from the subscriptions,
//! so that errors can name them without depending on subscriptions.

use nutype::nutype;

fn valid_name(name: &str) -> bool {
    !name.chars().any(char::is_control)
}

/// The name of a subscription: 1 to 200 characters, no control characters.
#[nutype(
    sanitize(trim),
    validate(len_char_min = 1, len_char_max = 200, predicate = valid_name),
    derive(Debug, Clone, PartialEq, Eq, Hash, AsRef, Display)
)]
pub struct SubscriptionName(String);

/// A lease's fencing token: every lease taken under a subscription name
/// carries a token larger than any taken before it under that name, so
/// that whatever a holder writes can be refused once a newer holder exists.
///
/// ```
/// use eventcore::LeaseToken;
/// assert!(LeaseToken::new(2) > LeaseToken::new(1));
/// assert_eq!(LeaseToken::new(7).get(), 7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaseToken(u64);

impl LeaseToken {
    /// The token numbered `n`.
    pub const fn new(n: u64) -> Self {
        LeaseToken(n)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
