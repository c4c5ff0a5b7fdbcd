//! Random tile spawns and the seeded generator behind every random choice.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::board::{Board, nth_cell};

/// The generator used for spawns and seeded play. A fixed algorithm (xoshiro256++), so a seed
/// reproduces a game on every platform and every version of this crate.
pub type GameRng = Xoshiro256PlusPlus;

/// A generator from a 64-bit seed.
pub fn rng_from_seed(seed: u64) -> GameRng {
    GameRng::seed_from_u64(seed)
}

/// Seed of game `index` in a series started from `base`: the SplitMix64 output of the pair, so
/// neighbouring seeds give unrelated games.
pub fn derive_seed(base: u64, index: u64) -> u64 {
    let mut z = base.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A spawned tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Spawn {
    /// Cell index, row-major (0..16).
    pub cell: u8,
    /// 1 for a 2, 2 for a 4.
    pub exponent: u8,
}

/// How tiles spawn: uniformly over the empty cells, a 4 with `four_probability`, else a 2.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SpawnRuleFields", into = "SpawnRuleFields")]
pub struct SpawnRule {
    four_probability: f64,
    /// `four_probability` scaled to 2^32, compared against 32 random bits.
    four_threshold: u64,
}

/// The serialized form: only the probability; the threshold is derived.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnRuleFields {
    four_probability: f64,
}

impl TryFrom<SpawnRuleFields> for SpawnRule {
    type Error = BadProbability;
    fn try_from(fields: SpawnRuleFields) -> Result<SpawnRule, BadProbability> {
        SpawnRule::new(fields.four_probability)
    }
}

impl From<SpawnRule> for SpawnRuleFields {
    fn from(rule: SpawnRule) -> SpawnRuleFields {
        SpawnRuleFields { four_probability: rule.four_probability }
    }
}

/// A spawn probability outside 0..=1.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("the probability of spawning a 4 must be within 0..=1, not {0}")]
pub struct BadProbability(pub f64);

impl SpawnRule {
    /// The standard game: a 4 one time in ten.
    pub const STANDARD: SpawnRule = SpawnRule::from_valid_probability(0.1);

    const fn from_valid_probability(four_probability: f64) -> SpawnRule {
        SpawnRule { four_probability, four_threshold: (four_probability * 4_294_967_296.0) as u64 }
    }

    /// A rule spawning a 4 with probability `four_probability`.
    pub fn new(four_probability: f64) -> Result<SpawnRule, BadProbability> {
        if !(0.0..=1.0).contains(&four_probability) {
            return Err(BadProbability(four_probability));
        }
        Ok(SpawnRule::from_valid_probability(four_probability))
    }

    /// The probability of a 4.
    pub fn four_probability(&self) -> f64 {
        self.four_probability
    }

    /// Picks a spawn on `board` from one 64-bit draw: the high half picks the cell (multiply-shift,
    /// uniform to within 2^-32), the low half the tile. `None` when the board is full.
    #[inline]
    pub fn pick(&self, board: Board, rng: &mut impl Rng) -> Option<Spawn> {
        let empty = board.empty_mask();
        let count = empty.count_ones() as u64;
        if count == 0 {
            return None;
        }
        let draw = rng.next_u64();
        let nth = ((draw >> 32) * count) >> 32;
        let exponent = if (draw & 0xFFFF_FFFF) < self.four_threshold { 2 } else { 1 };
        Some(Spawn { cell: nth_cell(empty, nth as u32) as u8, exponent })
    }
}

impl Default for SpawnRule {
    fn default() -> SpawnRule {
        SpawnRule::STANDARD
    }
}

impl Board {
    /// The board with `spawn` placed, assuming its cell is empty (see [`Board::place`] to check).
    #[inline]
    pub fn with_spawn(self, spawn: Spawn) -> Board {
        Board::from_raw(self.raw() | ((spawn.exponent as u64) << (4 * spawn.cell as u32)))
    }
}
