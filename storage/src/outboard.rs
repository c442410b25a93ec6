//! The BLAKE3 hash tree of a blob, kept beside it ("outboard") so any byte range can be verified
//! against the root digest without reading the whole blob.
//!
//! Pure: hashing and tree arithmetic only; callers do the I/O. The layout is the post-order
//! outboard of the `bao` family with 16 KiB chunk groups: the BLAKE3 tree is cut at subtrees of
//! 16 chunks (16 KiB), and for every parent node above that level its two child chaining values
//! (64 bytes) are stored in post-order. A blob of `n` groups has `n - 1` parents, so the outboard
//! costs 64 bytes per 16 KiB, 0.39 % of the blob; a blob of one group (≤ 16 KiB) has none.
//! Post-order is what a streaming hasher produces naturally, so the outboard is written while the
//! bytes arrive, without knowing the final size.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// Bytes in one leaf of the stored tree: 16 BLAKE3 chunks.
pub const GROUP_BYTES: u64 = 16 * 1024;
/// Bytes of one stored parent node: two chaining values.
pub const PAIR_BYTES: usize = 64;

/// Outboard size of a blob of `size` bytes.
pub fn outboard_len(size: u64) -> u64 {
    group_count(size).saturating_sub(1) * PAIR_BYTES as u64
}

fn group_count(size: u64) -> u64 {
    size.div_ceil(GROUP_BYTES).max(1)
}

/// Streaming BLAKE3 that also emits the outboard.
///
/// The pending outboard bytes collect in an internal buffer; drain them with
/// [`TreeHasher::take_outboard`] after each `update` to keep memory bounded.
pub struct TreeHasher {
    /// Hashes the current (last seen) group. It is not finished until more input proves it is
    /// not the last group, because the last group of a one-group blob is the root.
    group: blake3::Hasher,
    group_filled: u64,
    /// The current group's bytes while it arrives in parts. BLAKE3 hashes a whole group in its
    /// widest SIMD batches, but parts that start inside a group in small ones: an HTTP body
    /// arrives in 64 KiB reads shifted by the length of the request head, and hashing them as
    /// they come cost 45 % more CPU than gathering each group first. Whole groups are hashed
    /// straight from the input.
    partial: Vec<u8>,
    /// Bytes in groups before the current one.
    completed_bytes: u64,
    /// Chaining values of complete subtrees on the left edge of the unfinished tree.
    stack: Vec<ChainingValue>,
    outboard: Vec<u8>,
}

impl Default for TreeHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeHasher {
    /// A hasher at offset 0.
    pub fn new() -> Self {
        Self {
            group: blake3::Hasher::new(),
            group_filled: 0,
            partial: Vec::new(),
            completed_bytes: 0,
            stack: Vec::new(),
            outboard: Vec::new(),
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.group_filled == GROUP_BYTES {
                self.finish_group();
            }
            let room = usize::try_from(GROUP_BYTES - self.group_filled).unwrap_or(usize::MAX);
            let take = room.min(data.len());
            if take as u64 == GROUP_BYTES {
                self.group.update(&data[..take]);
            } else {
                self.partial.extend_from_slice(&data[..take]);
                if self.group_filled + take as u64 == GROUP_BYTES {
                    self.group.update(&self.partial);
                    self.partial.clear();
                }
            }
            self.group_filled += take as u64;
            data = &data[take..];
        }
    }

    /// Outboard bytes produced so far and not yet taken.
    pub fn take_outboard(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outboard)
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.completed_bytes + self.group_filled
    }

    /// True before any byte was hashed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finishes the tree: the root digest and the last outboard bytes.
    pub fn finalize(mut self) -> (blake3::Hash, Vec<u8>) {
        self.group.update(&self.partial);
        if self.stack.is_empty() {
            return (self.group.finalize(), self.outboard);
        }
        let mut right = self.group.finalize_non_root();
        loop {
            let left = self.stack.pop().expect("stack checked non-empty");
            self.emit_pair(&left, &right);
            if self.stack.is_empty() {
                let root = merge_subtrees_root(&left, &right, Mode::Hash);
                return (root, self.outboard);
            }
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
    }

    /// Closes the full current group, knowing more input follows, and merges every subtree
    /// that is now complete (the classic BLAKE3 chaining-value stack).
    fn finish_group(&mut self) {
        let mut cv = self.group.finalize_non_root();
        self.completed_bytes += GROUP_BYTES;
        let mut groups_done = self.completed_bytes / GROUP_BYTES;
        while groups_done & 1 == 0 {
            let left = self.stack.pop().expect("an even count has a left sibling");
            self.emit_pair(&left, &cv);
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            groups_done >>= 1;
        }
        self.stack.push(cv);
        self.group = blake3::Hasher::new();
        self.group.set_input_offset(self.completed_bytes);
        self.group_filled = 0;
    }

    fn emit_pair(&mut self, left: &ChainingValue, right: &ChainingValue) {
        self.outboard.extend_from_slice(left);
        self.outboard.extend_from_slice(right);
    }
}

/// Where verification found a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The data of the group starting at this byte offset does not match its stored hash.
    #[error("data at byte {offset} does not match the hash tree")]
    Data {
        /// Offset of the first byte of the failing group.
        offset: u64,
    },
    /// A stored tree node does not match its parent: the outboard itself is damaged.
    #[error("hash tree node {index} is damaged")]
    Tree {
        /// Post-order index of the damaged node.
        index: u64,
    },
}

/// Reads one stored parent pair by its post-order index (64 bytes at `index * 64`).
pub trait PairSource {
    /// Error of the underlying reader.
    type Error;
    /// The pair at `index`.
    fn pair(&mut self, index: u64) -> Result<[u8; PAIR_BYTES], Self::Error>;
}

/// The first and last group touched by bytes `start..end` (`end` exclusive, `start < end`),
/// widened to group boundaries: the bytes a verified read must load.
pub fn group_aligned(start: u64, end: u64, size: u64) -> (u64, u64) {
    let aligned_start = start / GROUP_BYTES * GROUP_BYTES;
    let aligned_end = end
        .div_ceil(GROUP_BYTES)
        .saturating_mul(GROUP_BYTES)
        .min(size);
    (aligned_start, aligned_end)
}

/// Verifies `data`, the blob bytes from `offset` (a multiple of [`GROUP_BYTES`]) to a group
/// boundary or the end of the blob, against `root`. Only the tree nodes on the paths to these
/// groups are read.
pub fn verify<S: PairSource>(
    pairs: &mut S,
    size: u64,
    root: &blake3::Hash,
    offset: u64,
    data: &[u8],
) -> Result<Result<(), Mismatch>, S::Error> {
    assert_eq!(offset % GROUP_BYTES, 0, "verified reads start on a group");
    let end = offset + data.len() as u64;
    assert!(end <= size, "verified reads stay inside the blob");
    let groups = group_count(size);
    if groups == 1 {
        let matches = blake3::hash(data) == *root;
        return Ok(if matches {
            Ok(())
        } else {
            Err(Mismatch::Data { offset: 0 })
        });
    }
    if data.is_empty() {
        return Ok(Ok(()));
    }
    let target = Span {
        start: offset / GROUP_BYTES,
        end: end.div_ceil(GROUP_BYTES),
    };
    let mut walk = Walk {
        pairs,
        target,
        data,
        data_offset: offset,
    };
    let whole = Span {
        start: 0,
        end: groups,
    };
    walk.node(whole, Expected::Root(*root), 0)
}

#[derive(Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
}

impl Span {
    fn overlaps(self, other: Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

enum Expected {
    Root(blake3::Hash),
    Chaining(ChainingValue),
}

struct Walk<'a, S> {
    pairs: &'a mut S,
    target: Span,
    data: &'a [u8],
    data_offset: u64,
}

impl<S: PairSource> Walk<'_, S> {
    /// Checks the subtree over groups `span`, whose hash should be `expected`. `right_turns`
    /// counts the right children on the path from the root: in post-order, the node over
    /// groups `start..end` sits at index `end - 2 - right_turns`, because the nodes before it
    /// are its own `end - start - 2` descendants plus the `start - right_turns` parents inside
    /// the complete subtrees to its left.
    fn node(
        &mut self,
        span: Span,
        expected: Expected,
        right_turns: u64,
    ) -> Result<Result<(), Mismatch>, S::Error> {
        let count = span.end - span.start;
        if count == 1 {
            return Ok(self.leaf(span.start, expected));
        }
        let index = span.end - 2 - right_turns;
        let pair = self.pairs.pair(index)?;
        let (left, right) = split_pair(&pair);
        let matches = match &expected {
            Expected::Root(root) => merge_subtrees_root(&left, &right, Mode::Hash) == *root,
            Expected::Chaining(cv) => merge_subtrees_non_root(&left, &right, Mode::Hash) == *cv,
        };
        if !matches {
            return Ok(Err(Mismatch::Tree { index }));
        }
        // BLAKE3's left subtree is the largest power of two strictly below the count.
        let split = span.start + (1u64 << (63 - (count - 1).leading_zeros()));
        let left_span = Span {
            start: span.start,
            end: split,
        };
        let right_span = Span {
            start: split,
            end: span.end,
        };
        if left_span.overlaps(self.target) {
            let result = self.node(left_span, Expected::Chaining(left), right_turns)?;
            if result.is_err() {
                return Ok(result);
            }
        }
        if right_span.overlaps(self.target) {
            return self.node(right_span, Expected::Chaining(right), right_turns + 1);
        }
        Ok(Ok(()))
    }

    fn leaf(&self, group: u64, expected: Expected) -> Result<(), Mismatch> {
        let offset = group * GROUP_BYTES;
        let start = usize::try_from(offset - self.data_offset).expect("group inside data");
        let end = (start + GROUP_BYTES as usize).min(self.data.len());
        let cv = blake3::Hasher::new()
            .set_input_offset(offset)
            .update(&self.data[start..end])
            .finalize_non_root();
        match expected {
            Expected::Chaining(stored) if stored == cv => Ok(()),
            _ => Err(Mismatch::Data { offset }),
        }
    }
}

fn split_pair(pair: &[u8; PAIR_BYTES]) -> (ChainingValue, ChainingValue) {
    let mut left = [0u8; 32];
    let mut right = [0u8; 32];
    left.copy_from_slice(&pair[..32]);
    right.copy_from_slice(&pair[32..]);
    (left, right)
}

/// An outboard held in memory (tests, small blobs).
impl PairSource for &[u8] {
    type Error = std::convert::Infallible;
    fn pair(&mut self, index: u64) -> Result<[u8; PAIR_BYTES], Self::Error> {
        let start = usize::try_from(index).expect("index fits memory") * PAIR_BYTES;
        let mut pair = [0u8; PAIR_BYTES];
        pair.copy_from_slice(&self[start..start + PAIR_BYTES]);
        Ok(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    fn build(data: &[u8], piece: usize) -> (blake3::Hash, Vec<u8>) {
        let mut hasher = TreeHasher::new();
        let mut outboard = Vec::new();
        for chunk in data.chunks(piece.max(1)) {
            hasher.update(chunk);
            outboard.extend(hasher.take_outboard());
        }
        let (root, rest) = hasher.finalize();
        outboard.extend(rest);
        (root, outboard)
    }

    fn verify_all(
        root: &blake3::Hash,
        outboard: &[u8],
        data: &[u8],
        start: u64,
        end: u64,
    ) -> Result<(), Mismatch> {
        let size = data.len() as u64;
        let (from, to) = group_aligned(start, end, size);
        let slice = &data[from as usize..to as usize];
        let mut pairs = outboard;
        match verify(&mut pairs, size, root, from, slice) {
            Ok(result) => result,
            Err(never) => match never {},
        }
    }

    const G: usize = GROUP_BYTES as usize;

    #[test]
    fn root_matches_blake3_and_outboard_size() {
        for len in [
            0,
            1,
            1024,
            G - 1,
            G,
            G + 1,
            2 * G,
            3 * G - 5,
            4 * G,
            5 * G + 7,
            17 * G,
            64 * G + 1,
        ] {
            let bytes = data(len);
            for piece in [1000, G, 3 * G + 11, len.max(1)] {
                let (root, outboard) = build(&bytes, piece);
                assert_eq!(root, blake3::hash(&bytes), "len {len} piece {piece}");
                assert_eq!(outboard.len() as u64, outboard_len(len as u64), "len {len}");
            }
        }
    }

    #[test]
    fn every_range_verifies_and_corruption_is_local() {
        let len = 9 * G + 300;
        let mut bytes = data(len);
        let (root, outboard) = build(&bytes, 4096);
        for (start, end) in [
            (0, 1),
            (0, len),
            (G - 1, G + 1),
            (5 * G, 6 * G),
            (len - 1, len),
            (3 * G + 5, 8 * G),
        ] {
            assert_eq!(
                verify_all(&root, &outboard, &bytes, start as u64, end as u64),
                Ok(())
            );
        }
        bytes[4 * G + 17] ^= 1;
        assert_eq!(
            verify_all(
                &root,
                &outboard,
                &bytes,
                (4 * G + 17) as u64,
                (4 * G + 18) as u64
            ),
            Err(Mismatch::Data {
                offset: (4 * G) as u64
            })
        );
        assert_eq!(
            verify_all(&root, &outboard, &bytes, 0, (4 * G) as u64),
            Ok(())
        );
        assert_eq!(
            verify_all(&root, &outboard, &bytes, (5 * G) as u64, len as u64),
            Ok(())
        );
        assert!(verify_all(&root, &outboard, &bytes, 0, len as u64).is_err());
    }

    #[test]
    fn damaged_tree_is_reported() {
        let bytes = data(6 * G);
        let (root, mut outboard) = build(&bytes, G);
        let last = outboard.len() - 1;
        outboard[last] ^= 0x80;
        assert!(matches!(
            verify_all(&root, &outboard, &bytes, 0, 1),
            Err(Mismatch::Tree { .. })
        ));
    }

    #[test]
    fn single_group_blob_checks_whole_data() {
        let mut bytes = data(100);
        let (root, outboard) = build(&bytes, 7);
        assert!(outboard.is_empty());
        assert_eq!(verify_all(&root, &outboard, &bytes, 10, 20), Ok(()));
        bytes[3] ^= 1;
        assert_eq!(
            verify_all(&root, &outboard, &bytes, 10, 20),
            Err(Mismatch::Data { offset: 0 })
        );
    }

    #[test]
    fn outboard_is_bao_tree_post_order() {
        let block_size = bao_tree::BlockSize::from_chunk_log(4);
        for len in [0, 1, G, G + 1, 3 * G + 5, 100 * G + 77, 256 * G] {
            let bytes = data(len);
            let (root, outboard) = build(&bytes, 70_000);
            let bao = bao_tree::io::outboard::PostOrderMemOutboard::create(&bytes, block_size);
            assert_eq!(root, bao.root, "len {len}");
            assert_eq!(outboard, bao.data, "len {len}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_sizes_and_ranges(len in 0usize..40 * G, piece in 1usize..100_000, a in any::<u64>(), b in any::<u64>(), flip in any::<u64>()) {
            let mut bytes = data(len);
            let (root, outboard) = build(&bytes, piece);
            prop_assert_eq!(root, blake3::hash(&bytes));
            if len > 0 {
                let start = a % len as u64;
                let end = start + 1 + b % (len as u64 - start);
                prop_assert_eq!(verify_all(&root, &outboard, &bytes, start, end), Ok(()));
                let flipped = (flip % len as u64) as usize;
                bytes[flipped] ^= 0x40;
                let (from, to) = group_aligned(start, end, len as u64);
                let covered = (from..to).contains(&(flipped as u64));
                let result = verify_all(&root, &outboard, &bytes, start, end);
                prop_assert_eq!(result.is_err(), covered);
            }
        }
    }
}
