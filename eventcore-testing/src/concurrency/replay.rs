//! Generating batches, shrinking a failing one, and naming it so that one
//! line runs exactly that case again.

use std::{fmt, str::FromStr};

use proptest::{
    strategy::{Strategy, ValueTree},
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};

/// The environment variable [`check_concurrency`](super::check_concurrency)
/// reads a [`Replay`] from: set it to the value a failure printed to run
/// exactly that case again.
pub const REPLAY_VAR: &str = "EVENTCORE_REPLAY";

/// One case of [`check_concurrency`](super::check_concurrency): the seed
/// its batches were generated from, which of them failed first, and the
/// shrinking moves from it to the smallest failing batch. Its text form
/// (`seed:case:moves`, such as `9f2c41d07a11e3b5:3:sscs`) is what a failure
/// prints; [`ConcurrencyConfig::with_replay`](super::ConcurrencyConfig::with_replay)
/// pins it in a test, [`REPLAY_VAR`] in a shell.
///
/// ```
/// use eventcore_testing::concurrency::Replay;
/// let replay: Replay = "9f2c41d07a11e3b5:3:sscs".parse().unwrap();
/// assert_eq!(replay.seed, 0x9f2c_41d0_7a11_e3b5);
/// assert_eq!(replay.case, 3);
/// assert_eq!(replay.to_string(), "9f2c41d07a11e3b5:3:sscs");
/// assert!("9f2c:x:s".parse::<Replay>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The seed of the generator of batches (and of their perturbation
    /// seeds).
    pub seed: u64,
    /// Which generated case failed first, from 0.
    pub case: u32,
    /// The shrinking moves, in order: `s` to simplify, `c` to complicate.
    pub moves: String,
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{}:{}", self.seed, self.case, self.moves)
    }
}

/// Why a text is not a [`Replay`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a replay (expected seed:case:moves, such as 9f2c41d07a11e3b5:3:sscs)")]
pub struct NotAReplay {
    /// The text given.
    pub text: String,
}

impl FromStr for Replay {
    type Err = NotAReplay;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || NotAReplay {
            text: text.to_owned(),
        };
        let mut parts = text.trim().splitn(3, ':');
        let seed = parts
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(bad)?;
        let case = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let moves = parts.next().unwrap_or_default().to_owned();
        if !moves.chars().all(|c| c == 's' || c == 'c') {
            return Err(bad());
        }
        Ok(Replay { seed, case, moves })
    }
}

/// A runner whose every draw follows from `seed`.
fn runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    let mut rng = fastrand::Rng::with_seed(seed);
    rng.fill(&mut bytes);
    TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Applies `moves` to a fresh tree.
fn apply<T: ValueTree>(tree: &mut T, moves: &str) {
    for m in moves.chars() {
        if m == 's' {
            tree.simplify();
        } else {
            tree.complicate();
        }
    }
}

/// How a search ended.
pub(super) enum Found<V> {
    /// Every case passed.
    Passed,
    /// A case failed: the smallest failing value, its failure and its name.
    Failed {
        value: V,
        failure: String,
        replay: Replay,
    },
    /// The strategy could not generate a value.
    Aborted(String),
}

/// How many times a replayed case is run before it counts as passing.
pub(super) const REPLAY_RUNS: usize = 20;

/// Most runs spent shrinking one failure.
const MAX_SHRINK_RUNS: usize = 512;

/// Runs `cases` generated values from `seed` through `test` (a failure's
/// text, or `None` if it passed), shrinking the first failure; or, with
/// `replay`, only the value it names, up to [`REPLAY_RUNS`] times until it
/// fails.
pub(super) fn search<S, F>(
    strategy: &S,
    cases: u32,
    seed: u64,
    replay: Option<&Replay>,
    mut test: F,
) -> Found<S::Value>
where
    S: Strategy,
    F: FnMut(&S::Value) -> Option<String>,
{
    let mut runner = runner(replay.map_or(seed, |r| r.seed));
    let last = replay.map_or(cases.max(1), |r| r.case.saturating_add(1));
    for case in 0..last {
        let mut tree = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree,
            Err(reason) => return Found::Aborted(reason.to_string()),
        };
        if let Some(replay) = replay {
            if case < replay.case {
                continue;
            }
            apply(&mut tree, &replay.moves);
            let value = tree.current();
            // The batch and its perturbations are the same each run; the
            // threads' interleaving is the scheduler's, so a race may need
            // a few runs to show again.
            for _ in 0..REPLAY_RUNS {
                if let Some(failure) = test(&value) {
                    return Found::Failed {
                        value,
                        failure,
                        replay: replay.clone(),
                    };
                }
            }
            return Found::Passed;
        }
        let Some(mut failure) = test(&tree.current()) else {
            continue;
        };
        // Shrink as proptest does: simplify while it fails, complicate
        // back when it passes.
        let mut moves = String::new();
        let mut best = String::new();
        let mut runs = 0;
        if tree.simplify() {
            moves.push('s');
            while runs < MAX_SHRINK_RUNS {
                runs += 1;
                match test(&tree.current()) {
                    Some(smaller) => {
                        failure = smaller;
                        best.clone_from(&moves);
                        if !tree.simplify() {
                            break;
                        }
                        moves.push('s');
                    }
                    None => {
                        if !tree.complicate() {
                            break;
                        }
                        moves.push('c');
                    }
                }
            }
        }
        // The tree may stand past the last failure: rebuild the smallest
        // failing value from its moves.
        let replay = Replay {
            seed,
            case,
            moves: best,
        };
        let mut again = runner_at(strategy, &replay);
        return match again.as_mut() {
            Some(tree) => Found::Failed {
                value: tree.current(),
                failure,
                replay,
            },
            None => Found::Aborted("the strategy did not generate the same case twice".into()),
        };
    }
    Found::Passed
}

/// The tree of the case `replay` names, with its moves applied.
fn runner_at<S: Strategy>(strategy: &S, replay: &Replay) -> Option<S::Tree> {
    let mut runner = runner(replay.seed);
    let mut tree = None;
    for _ in 0..=replay.case {
        tree = Some(strategy.new_tree(&mut runner).ok()?);
    }
    let mut tree = tree?;
    apply(&mut tree, &replay.moves);
    Some(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure found and shrunk is found again, exactly, from its replay.
    #[test]
    fn a_replay_names_exactly_the_smallest_failing_case() {
        let strategy = proptest::collection::vec(0u32..1000, 0..20);
        let fails = |v: &Vec<u32>| {
            (v.iter().filter(|x| **x > 500).count() >= 2).then(|| format!("{v:?} has two over 500"))
        };
        let Found::Failed { value, replay, .. } = search(&strategy, 64, 7, None, fails) else {
            panic!("some batch of 64 has two values over 500");
        };
        assert_eq!(value.len(), 2, "shrunk to two values: {value:?}");
        let text = replay.to_string();
        let parsed: Replay = text.parse().unwrap();
        let Found::Failed { value: again, .. } = search(&strategy, 64, 0, Some(&parsed), fails)
        else {
            panic!("the replay {text} fails again");
        };
        assert_eq!(again, value);
    }

    #[test]
    fn a_replayed_case_that_passes_passes() {
        let strategy = proptest::collection::vec(0u32..10, 0..5);
        let replay = Replay {
            seed: 1,
            case: 2,
            moves: String::new(),
        };
        assert!(matches!(
            search(&strategy, 8, 0, Some(&replay), |_| None),
            Found::Passed
        ));
    }
}
