//! A weight table: f32 values in an anonymous memory map, read and written through atomics so
//! that many threads can play and learn on one network at once without locks (the "Hogwild"
//! updates of TDL2048's parallel mode: a read-modify-write may lose a concurrent one, which
//! stochastic learning tolerates, and no thread ever waits).
//!
//! Relaxed atomic loads and stores of 32 bits compile to plain moves on x86-64 and AArch64, so a
//! shared table costs nothing over a private one. The tables are read at random (32 reads per
//! evaluation over 256 MiB for the 4×6 network), so the map is advised for transparent huge
//! pages by default; [`Pages::Normal`] keeps 4 KiB pages (for measuring the difference).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use memmap2::{Advice, MmapMut, MmapRaw};

/// The page size asked of the kernel for a table's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pages {
    /// Advise transparent huge pages (2 MiB): far fewer TLB misses on random reads. The kernel
    /// may decline (THP off); the table works either way.
    #[default]
    Huge,
    /// Plain 4 KiB pages.
    Normal,
}

/// Weights in the table of a 6-tuple (16^6): every table of the compiled network shapes.
pub const SIX_TUPLE_WEIGHTS: usize = 1 << 24;

/// How far apart, in 64-byte cache lines, the starts of consecutive tables are staggered.
/// Tables are maps of their own, page-aligned (2 MiB-aligned on huge pages), so weight `i` of
/// every table would share a cache set, and the compiled 4×6 shape's tuples share their first
/// cells (0, 1, 2 and 4, 5, 6), so their indices share low bits: the same afterstate's weights
/// then crowd the same sets of the first- and second-level caches and evict each other. Odd, so
/// the first 64 tables start in 64 different first-level sets; wrapped at [`STAGGER_SPAN`]
/// lines. Over 20,000 online TD(0) games it cut the update's read-modify-writes by a quarter
/// and the move choice's reads by 4–14%, the same weights learned (BENCHMARKS.md, issue 11).
const STAGGER_LINES: usize = 17;

/// The stagger wraps at this many cache lines (64 KiB, the slack each map carries: the
/// first-level sets repeat every 4 KiB, and 64 KiB spreads the starts over many second-level
/// sets too).
const STAGGER_SPAN: usize = 1024;

/// Tables made so far in this process: the next one's place in the stagger.
static TABLES_MADE: AtomicUsize = AtomicUsize::new(0);

/// The byte offset at which the next table's weights start in their map.
fn next_stagger() -> usize {
    let table = TABLES_MADE.fetch_add(1, Ordering::Relaxed);
    (table * STAGGER_LINES) % STAGGER_SPAN * 64
}

/// Adds `delta` to one weight and returns the new weight (a load and a store: a concurrent
/// update between them may be lost, see the module documentation).
#[inline(always)]
fn add_to(cell: &AtomicU32, delta: f32) -> f32 {
    let value = f32::from_bits(cell.load(Ordering::Relaxed)) + delta;
    cell.store(value.to_bits(), Ordering::Relaxed);
    value
}

/// A table's first weight's address, taken once: prefetches interleaved with other work (bit
/// extractions, in the move choice) otherwise reload the table's map pointer before each one, as
/// the compiler may not move a load across a prefetch.
#[derive(Clone, Copy, Debug)]
pub struct WeightLines {
    first: *const u8,
}

impl WeightLines {
    /// [`Table::prefetch`].
    #[inline(always)]
    #[allow(unsafe_code)]
    pub fn prefetch(self, index: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: a prefetch reads nothing the program sees and never faults, whatever the
            // address; the address is computed with wrapping arithmetic, never dereferenced.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(self.first.wrapping_add(index.wrapping_mul(4)) as *const i8)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = index;
    }
}

/// One table of weights.
pub struct Table {
    map: MmapRaw,
    len: usize,
    /// Where the weights start in the map, in bytes (a multiple of 64; see [`STAGGER_LINES`]).
    start: usize,
}

impl Table {
    /// A table of `len` zero weights (the kernel's zero pages: nothing is touched until written).
    pub fn zeroed(len: usize, pages: Pages) -> std::io::Result<Table> {
        let start = next_stagger();
        let map = MmapMut::map_anon(start + len.max(1) * 4)?;
        if pages == Pages::Huge {
            // Advisory only; see `Pages::Huge`.
            let _ = map.advise(Advice::HugePage);
        }
        Ok(Table { map: MmapRaw::from(map), len, start })
    }

    /// The weights as atomics.
    #[inline]
    #[allow(unsafe_code)]
    fn cells(&self) -> &[AtomicU32] {
        // SAFETY: the map is `start + len * 4` bytes (at least), page-aligned, readable and
        // writable, and lives as long as `self`; `start` is a multiple of 64, so the weights are
        // aligned for `AtomicU32`, which has the size and alignment of `u32` and for which every
        // bit pattern is a valid value. `MmapRaw::as_mut_ptr` carries write provenance, and
        // every access to these bytes goes through atomics (or through `&mut self`), so there is
        // no data race.
        unsafe {
            std::slice::from_raw_parts(self.map.as_mut_ptr().add(self.start) as *const AtomicU32, self.len)
        }
    }

    /// Starts loading the cache line that holds weight `index` into the nearest cache, without
    /// waiting for it: a learner that knows which weights it touches next asks for them while it
    /// still works on the current ones, so their cache misses overlap instead of coming one after
    /// the other. A hint only: an index out of range asks for a line outside the table, which
    /// does nothing, so no index is checked (a check per prefetch cost the compiled shapes'
    /// move choice a compare and a branch per weight); targets without a prefetch instruction do
    /// nothing.
    #[inline(always)]
    pub fn prefetch(&self, index: usize) {
        self.lines().prefetch(index);
    }

    /// Where the weights start, for many prefetches in a row (see [`WeightLines`]).
    #[inline(always)]
    pub fn lines(&self) -> WeightLines {
        WeightLines { first: self.map.as_ptr().wrapping_add(self.start) }
    }

    /// Weight `index`.
    #[inline]
    pub fn get(&self, index: usize) -> f32 {
        f32::from_bits(self.cells()[index].load(Ordering::Relaxed))
    }

    /// Sets weight `index`.
    #[inline]
    pub fn set(&self, index: usize, value: f32) {
        self.cells()[index].store(value.to_bits(), Ordering::Relaxed)
    }

    /// Adds `delta` to weight `index` and returns the new weight. Not a compare-and-swap: a
    /// concurrent update of the same weight between the read and the write may be lost.
    #[inline]
    pub fn add(&self, index: usize, delta: f32) -> f32 {
        add_to(&self.cells()[index], delta)
    }

    /// The sum of the weights at `indices` (one tuple under the 8 symmetries).
    #[inline(always)]
    pub fn sum_at(&self, indices: &[usize; 8]) -> f32 {
        let cells = self.cells();
        let mut sum = 0.0;
        for &index in indices {
            sum += f32::from_bits(cells[index].load(Ordering::Relaxed));
        }
        sum
    }

    /// Adds `delta` to the weights at `indices` (a weight listed twice moves twice) and returns
    /// the sum of the weights written (a weight listed twice counts as each write left it).
    #[inline(always)]
    pub fn add_at(&self, indices: &[usize; 8], delta: f32) -> f32 {
        let cells = self.cells();
        let mut sum = 0.0;
        for &index in indices {
            sum += add_to(&cells[index], delta);
        }
        sum
    }

    /// The weights of a 6-tuple's table as an array of known length, checked once: an index
    /// masked to 24 bits then needs no check of its own.
    #[inline(always)]
    fn six_tuple_cells(&self) -> &[AtomicU32; SIX_TUPLE_WEIGHTS] {
        self.cells().try_into().expect("a 6-tuple's table holds 16^6 weights")
    }

    /// [`Self::sum_at`] for a 6-tuple's table (the compiled network shapes'), checking the
    /// table's length once instead of each index: each index's bits above the 24th are ignored.
    /// The move choice reads 32–64 weights per candidate, each behind a compare and a branch
    /// before (3.5–6.6% of a TD(0) run, within the machine's drift: BENCHMARKS.md, issue 11).
    /// Panics if the table does not hold [`SIX_TUPLE_WEIGHTS`] weights.
    #[inline(always)]
    pub fn sum_at_six(&self, indices: &[usize; 8]) -> f32 {
        let cells = self.six_tuple_cells();
        let mut sum = 0.0;
        for &index in indices {
            sum += f32::from_bits(cells[index & (SIX_TUPLE_WEIGHTS - 1)].load(Ordering::Relaxed));
        }
        sum
    }

    /// [`Self::add_at`] for a 6-tuple's table, as [`Self::sum_at_six`] is [`Self::sum_at`].
    #[inline(always)]
    pub fn add_at_six(&self, indices: &[usize; 8], delta: f32) -> f32 {
        let cells = self.six_tuple_cells();
        let mut sum = 0.0;
        for &index in indices {
            sum += add_to(&cells[index & (SIX_TUPLE_WEIGHTS - 1)], delta);
        }
        sum
    }

    /// Sets every weight to `value`.
    pub fn fill(&self, value: f32) {
        for cell in self.cells() {
            cell.store(value.to_bits(), Ordering::Relaxed);
        }
    }

    /// Number of weights.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no weights.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The weights, in order.
    pub fn iter(&self) -> impl Iterator<Item = f32> + '_ {
        self.cells().iter().map(|c| f32::from_bits(c.load(Ordering::Relaxed)))
    }

    /// The weights as little-endian bytes (a copy: the table may be changing).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len * 4);
        for cell in self.cells() {
            out.extend_from_slice(&cell.load(Ordering::Relaxed).to_le_bytes());
        }
        out
    }

    /// Writes the weights as little-endian bytes.
    pub fn write_le(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut buffer = Vec::with_capacity(1 << 16);
        for chunk in self.cells().chunks(1 << 14) {
            buffer.clear();
            for cell in chunk {
                buffer.extend_from_slice(&cell.load(Ordering::Relaxed).to_le_bytes());
            }
            out.write_all(&buffer)?;
        }
        Ok(())
    }

    /// Fills the table from exactly `len * 4` little-endian bytes.
    pub fn read_le(&mut self, input: &mut impl Read) -> std::io::Result<()> {
        let mut buffer = vec![0u8; 1 << 16];
        for chunk in self.cells().chunks(buffer.len() / 4) {
            let bytes = &mut buffer[..chunk.len() * 4];
            input.read_exact(bytes)?;
            for (cell, word) in chunk.iter().zip(bytes.chunks_exact(4)) {
                cell.store(u32::from_le_bytes([word[0], word[1], word[2], word[3]]), Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Overwrites this table with `other`'s weights (same length).
    pub fn copy_from(&self, other: &Table) {
        assert_eq!(self.len, other.len, "copy_from needs two tables of one length");
        for (mine, theirs) in self.cells().iter().zip(other.cells()) {
            mine.store(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Moves every weight the fraction `weight` of the way towards `other`'s (same length):
    /// `w += weight · (o − w)`, a step of a running mean. A weight that would not change is not
    /// written, so pages neither table has touched stay unmapped.
    pub fn blend_towards(&self, other: &Table, weight: f32) {
        assert_eq!(self.len, other.len, "blend_towards needs two tables of one length");
        for (mine, theirs) in self.cells().iter().zip(other.cells()) {
            let (before, target) = (mine.load(Ordering::Relaxed), theirs.load(Ordering::Relaxed));
            if before == target {
                continue;
            }
            let before = f32::from_bits(before);
            let after = before + (f32::from_bits(target) - before) * weight;
            mine.store(after.to_bits(), Ordering::Relaxed);
        }
    }

    /// A copy, with the same page advice.
    pub fn try_clone(&self, pages: Pages) -> std::io::Result<Table> {
        let copy = Table::zeroed(self.len, pages)?;
        copy.copy_from(self);
        Ok(copy)
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("weights files are little-endian f32; this crate assumes a little-endian target");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_table_is_zero_and_adds_return_the_new_weight() {
        let table = Table::zeroed(1000, Pages::Normal).unwrap();
        assert!(table.iter().all(|w| w == 0.0));
        assert_eq!(table.add(7, 1.5), 1.5);
        assert_eq!(table.add(7, -0.25), 1.25);
        assert_eq!(table.get(7), 1.25);
        table.set(999, -3.0);
        assert_eq!(table.iter().filter(|&w| w != 0.0).count(), 2);
    }

    #[test]
    fn tables_made_one_after_another_start_in_different_cache_sets() {
        let tables: Vec<Table> = (0..8).map(|_| Table::zeroed(1 << 12, Pages::Normal).unwrap()).collect();
        // Other tests make tables at the same time, so consecutive here need not be consecutive
        // in the stagger; every start is still a whole line, inside its slack, and the eight
        // weights `i` are at least not all in one first-level set (64 sets of 64 bytes).
        let sets: std::collections::BTreeSet<usize> = tables
            .iter()
            .map(|t| {
                assert_eq!(t.start % 64, 0);
                assert!(t.start < STAGGER_SPAN * 64);
                (t.cells().as_ptr() as usize / 64) % 64
            })
            .collect();
        assert!(sets.len() > 1, "all eight tables start in first-level set {sets:?}");
        for (n, table) in tables.iter().enumerate() {
            table.set((1 << 12) - 1, n as f32);
            table.set(0, -(n as f32));
        }
        for (n, table) in tables.iter().enumerate() {
            assert_eq!((table.get(0), table.get((1 << 12) - 1)), (-(n as f32), n as f32));
        }
    }

    #[test]
    fn a_prefetch_anywhere_changes_no_weight() {
        let table = Table::zeroed(1000, Pages::Normal).unwrap();
        table.set(3, 2.5);
        for index in [0, 3, 999, 1000, usize::MAX / 4, usize::MAX] {
            table.prefetch(index);
        }
        assert_eq!(table.get(3), 2.5);
        assert_eq!(table.iter().filter(|&w| w != 0.0).count(), 1);
    }

    #[test]
    fn a_six_tuple_tables_unchecked_reads_and_adds_match_the_checked_ones() {
        let (checked, six) = (
            Table::zeroed(SIX_TUPLE_WEIGHTS, Pages::Normal).unwrap(),
            Table::zeroed(SIX_TUPLE_WEIGHTS, Pages::Normal).unwrap(),
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize % SIX_TUPLE_WEIGHTS
        };
        for round in 0..200 {
            // A weight listed twice moves twice, as in the checked add.
            let mut indices: [usize; 8] = std::array::from_fn(|_| next());
            indices[7] = indices[round % 7];
            let delta = round as f32 * 0.25 - 7.0;
            assert_eq!(checked.add_at(&indices, delta), six.add_at_six(&indices, delta));
            assert_eq!(checked.sum_at(&indices), six.sum_at_six(&indices));
        }
        assert!(checked.iter().eq(six.iter()));
    }

    #[test]
    fn a_six_tuple_index_keeps_its_low_24_bits() {
        let table = Table::zeroed(SIX_TUPLE_WEIGHTS, Pages::Normal).unwrap();
        table.add_at_six(&[5 | (3 << 24); 8], 1.0);
        assert_eq!(table.get(5), 8.0);
        assert_eq!(table.sum_at_six(&[5 + SIX_TUPLE_WEIGHTS; 8]), 64.0);
    }

    #[test]
    #[should_panic(expected = "a 6-tuple's table holds 16^6 weights")]
    fn a_six_tuple_read_of_another_tables_weights_panics() {
        Table::zeroed(1 << 16, Pages::Normal).unwrap().sum_at_six(&[0; 8]);
    }

    #[test]
    fn bytes_round_trip_through_write_and_read() {
        let table = Table::zeroed(70_000, Pages::Huge).unwrap();
        for i in (0..70_000).step_by(7) {
            table.set(i, i as f32 * 0.5 - 10.0);
        }
        let mut bytes = Vec::new();
        table.write_le(&mut bytes).unwrap();
        assert_eq!(bytes, table.to_le_bytes());
        let mut copy = Table::zeroed(70_000, Pages::Normal).unwrap();
        copy.read_le(&mut bytes.as_slice()).unwrap();
        assert!(table.iter().eq(copy.iter()));
        let clone = copy.try_clone(Pages::Huge).unwrap();
        assert!(clone.iter().eq(table.iter()));
    }

    #[test]
    fn blending_steps_a_running_mean_and_leaves_equal_weights_alone() {
        let (mean, next) =
            (Table::zeroed(8, Pages::Normal).unwrap(), Table::zeroed(8, Pages::Normal).unwrap());
        mean.set(0, 4.0);
        next.set(0, 8.0);
        next.set(1, -2.0);
        mean.set(2, 1.0);
        mean.blend_towards(&next, 0.25);
        assert_eq!(mean.iter().take(3).collect::<Vec<_>>(), [5.0, -0.5, 0.75]);
        // A weight of 1 copies; the three means of 1/n are the mean of three tables.
        mean.blend_towards(&next, 1.0);
        assert!(mean.iter().eq(next.iter()));
        let third = Table::zeroed(8, Pages::Normal).unwrap();
        third.set(0, 2.0);
        mean.blend_towards(&third, 0.5);
        let fourth = Table::zeroed(8, Pages::Normal).unwrap();
        fourth.set(1, 5.0);
        mean.blend_towards(&fourth, 1.0 / 3.0);
        assert_eq!(mean.get(0), (8.0 + 2.0 + 0.0) / 3.0);
        assert_eq!(mean.get(1), (-2.0 + 0.0 + 5.0) / 3.0);
        assert!(mean.iter().skip(2).all(|w| w == 0.0));
    }

    #[test]
    fn threads_update_one_table_without_locks() {
        let table = Table::zeroed(64, Pages::Normal).unwrap();
        std::thread::scope(|scope| {
            for t in 0..2 {
                let table = &table;
                scope.spawn(move || {
                    for i in 0..10_000 {
                        table.add((i * 2 + t) % 64, 1.0);
                    }
                });
            }
        });
        // Each thread writes its own half of the cells, so no update is lost here.
        assert_eq!(table.iter().sum::<f32>(), 20_000.0);
    }
}
