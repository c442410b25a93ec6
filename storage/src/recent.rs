//! Small bounded memories of things recently read from disk (catalogue records, open blob
//! files), so that a hot object is served without touching the engine or the file system.
//!
//! Correctness comes first: a memory is forgotten wholesale whenever anything it could hold
//! changes, and a reader may only remember what it read if nothing changed while it read.
//! The generation counter gives that: a reader takes the generation before reading and
//! `remember` refuses the value when an `invalidate` happened since. Invalidations are rare
//! (deletes, quarantines, MD5 backfills, blob moves) next to reads, so forgetting everything
//! is cheaper than tracking which entries a change touched.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

/// A bounded map that forgets its oldest entries first and everything on invalidation.
pub(crate) struct Recent<K, V> {
    capacity: usize,
    state: Mutex<State<K, V>>,
}

struct State<K, V> {
    generation: u64,
    entries: HashMap<K, V>,
    /// Keys in the order they were remembered: the front is forgotten first.
    order: VecDeque<K>,
}

impl<K: Clone + Eq + Hash, V: Clone> Recent<K, V> {
    /// An empty memory of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State {
                generation: 0,
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        // The critical sections cannot panic halfway: a poisoned lock still holds a
        // consistent map.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value remembered for `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.state().entries.get(key).cloned()
    }

    /// Taken before reading a value from disk, and handed to [`Recent::remember`].
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Remembers `value`, read from disk after `generation` was taken, unless something was
    /// invalidated since (the value may then be stale).
    pub fn remember(&self, generation: u64, key: K, value: V) {
        let mut state = self.state();
        if state.generation != generation || state.entries.contains_key(&key) {
            return;
        }
        if state.order.len() >= self.capacity
            && let Some(oldest) = state.order.pop_front()
        {
            state.entries.remove(&oldest);
        }
        state.order.push_back(key.clone());
        state.entries.insert(key, value);
    }

    /// Forgets everything; values read before this call are refused by `remember`. Called
    /// after a change is visible on disk.
    pub fn invalidate(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.entries.clear();
        state.order.clear();
    }
}

impl<K, V> std::fmt::Debug for Recent<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let recent = Recent::new(2);
        let generation = recent.generation();
        recent.remember(generation, 1, "one");
        recent.remember(generation, 2, "two");
        recent.remember(generation, 3, "three");
        assert_eq!(recent.get(&1), None);
        assert_eq!(recent.get(&2), Some("two"));
        assert_eq!(recent.get(&3), Some("three"));
    }

    #[test]
    fn refuses_values_read_across_an_invalidation() {
        let recent = Recent::new(4);
        let before = recent.generation();
        recent.remember(before, 1, "old");
        recent.invalidate();
        assert_eq!(recent.get(&1), None, "invalidation forgets everything");
        recent.remember(before, 2, "read before the change");
        assert_eq!(
            recent.get(&2),
            None,
            "a value read before the change is stale"
        );
        recent.remember(recent.generation(), 2, "read after");
        assert_eq!(recent.get(&2), Some("read after"));
    }

    #[test]
    fn keeps_the_first_value_of_a_key() {
        let recent = Recent::new(4);
        let generation = recent.generation();
        recent.remember(generation, 1, "first");
        recent.remember(generation, 1, "second");
        assert_eq!(recent.get(&1), Some("first"));
    }
}
