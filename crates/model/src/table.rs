//! A weight table: f32 values in an anonymous memory map advised for transparent huge pages. The
//! tables are read at random (32 reads per evaluation over 256 MB for the 4×6 network), so huge
//! pages cut TLB misses; measured elsewhere on this machine class at about +15%.

use memmap2::{Advice, MmapMut};

/// One table of weights, zero-initialised.
pub struct Table {
    map: MmapMut,
    len: usize,
}

impl Table {
    /// A zeroed table of `len` weights.
    pub fn zeroed(len: usize) -> std::io::Result<Table> {
        let map = MmapMut::map_anon(len.max(1) * 4)?;
        // Advisory: the kernel may decline (THP off); the table works either way.
        let _ = map.advise(Advice::HugePage);
        Ok(Table { map, len })
    }

    /// The weights.
    #[inline]
    pub fn weights(&self) -> &[f32] {
        &bytemuck::cast_slice(&self.map[..])[..self.len]
    }

    /// The weights, to change them.
    #[inline]
    pub fn weights_mut(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut(&mut self.map[..])[..self.len]
    }

    /// The weights as little-endian bytes (this crate only builds for little-endian targets).
    pub fn bytes(&self) -> &[u8] {
        &self.map[..self.len * 4]
    }

    /// The bytes, to fill them from a file.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len * 4;
        &mut self.map[..len]
    }

    /// Number of weights.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no weights.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy.
    pub fn try_clone(&self) -> std::io::Result<Table> {
        let mut copy = Table::zeroed(self.len)?;
        copy.bytes_mut().copy_from_slice(self.bytes());
        Ok(copy)
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("weights files are little-endian f32; this crate assumes a little-endian target");
