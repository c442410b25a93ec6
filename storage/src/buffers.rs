//! Read buffers, reused: a piece read from a blob goes out as [`Bytes`] that own their buffer,
//! and when the connection has sent them the buffer comes back here for the next read.
//!
//! A fresh buffer costs a zero fill (safe code cannot read into uninitialised memory) and, at
//! 256 KiB, a `malloc` that glibc may serve with `mmap` and its page faults. A reused one is
//! already initialised and was last touched moments ago, so it is still in the core's cache
//! when the page cache is copied into it: measured, the zero fill alone was 6 % of the
//! daemon's CPU while serving a 1 GiB object.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers for ranged reads (a range of at most 256 KiB is read in one piece), 8 MiB kept.
static SMALL: Pool = Pool::new(256 * 1024, 32);

/// Buffers for the pieces of long streams, 16 MiB kept: eight streams with two pieces in flight.
static LARGE: Pool = Pool::new(crate::read::READ_PIECE_BYTES as usize, 16);

/// An initialised buffer of at least `length` bytes (stale content of an earlier read, or
/// zeros), from the smallest pool whose buffers are long enough.
pub(crate) fn take(length: usize) -> Vec<u8> {
    let pool = if length <= SMALL.buffer_bytes {
        &SMALL
    } else {
        &LARGE
    };
    let mut buffer = pool.take();
    if buffer.len() < length {
        buffer.resize(length, 0);
    }
    buffer
}

/// `buffer[range]` as `Bytes`; the whole buffer returns to its pool when the last of them is
/// dropped (a buffer of another length is freed then).
pub(crate) fn into_bytes(buffer: Vec<u8>, range: std::ops::Range<usize>) -> Bytes {
    let pool = if buffer.len() == SMALL.buffer_bytes {
        &SMALL
    } else {
        &LARGE
    };
    pool.lend(buffer, range)
}

/// Free buffers of one length, each initialised; beyond `kept` a returned buffer is freed, so
/// a burst does not pin its peak memory for good.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    buffer_bytes: usize,
    kept: usize,
}

impl Pool {
    const fn new(buffer_bytes: usize, kept: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            buffer_bytes,
            kept,
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // The list is valid whatever a panicking holder did: each push and pop is whole.
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self) -> Vec<u8> {
        let reused = self.free().pop();
        reused.unwrap_or_else(|| vec![0u8; self.buffer_bytes])
    }

    fn lend(&'static self, buffer: Vec<u8>, range: std::ops::Range<usize>) -> Bytes {
        Bytes::from_owner(Pooled { buffer, pool: self }).slice(range)
    }

    fn give_back(&self, buffer: Vec<u8>) {
        if buffer.len() != self.buffer_bytes {
            return;
        }
        let mut free = self.free();
        if free.len() < self.kept {
            free.push(buffer);
        }
    }
}

/// A buffer on loan: given back on drop.
struct Pooled {
    buffer: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ_PIECE: usize = crate::read::READ_PIECE_BYTES as usize;

    #[test]
    fn a_buffer_comes_back_after_its_last_slice_is_dropped() {
        static TEST_POOL: Pool = Pool::new(4096, 4);
        let mut buffer = TEST_POOL.take();
        assert_eq!(buffer.len(), 4096);
        buffer[..5].copy_from_slice(b"hello");
        let address = buffer.as_ptr();
        let bytes = TEST_POOL.lend(buffer, 1..4);
        assert_eq!(&bytes[..], b"ell");
        let clone = bytes.clone();
        drop(bytes);
        assert!(TEST_POOL.free().is_empty(), "a live slice keeps its buffer");
        assert_eq!(&clone[..], b"ell");
        drop(clone);
        let reused = TEST_POOL.take();
        assert_eq!(reused.as_ptr(), address);
        assert_eq!(&reused[..5], b"hello", "reused, not zeroed again");
    }

    #[test]
    fn at_most_the_kept_number_of_buffers_stays() {
        static TEST_POOL: Pool = Pool::new(4096, 4);
        let loans: Vec<Bytes> = (0..7)
            .map(|_| TEST_POOL.lend(TEST_POOL.take(), 0..1))
            .collect();
        assert!(TEST_POOL.free().is_empty());
        drop(loans);
        assert_eq!(TEST_POOL.free().len(), 4);
    }

    #[test]
    fn a_buffer_of_another_length_is_not_kept() {
        static TEST_POOL: Pool = Pool::new(4096, 4);
        drop(TEST_POOL.lend(vec![0; 100], 0..10));
        assert!(TEST_POOL.free().is_empty());
    }

    #[test]
    fn every_length_a_read_asks_for_is_served() {
        for length in [1, 16 * 1024, 256 * 1024, 256 * 1024 + 1, READ_PIECE] {
            assert!(take(length).len() >= length);
        }
    }
}
