//! A bounded memo of what a run's start learnt (a chat's classification, the tags a model
//! resolved to, a reusable toolset, a chat's latest messages).

/// At most `CAPACITY` entries; when full, an arbitrary one makes room (forgetting only costs
/// what an entry saved; never all at once, which would stall every start behind the lock while
/// thousands of entries are freed).
pub(crate) struct Memo<K, V, const CAPACITY: usize = 50_000>(
    std::sync::Mutex<std::collections::HashMap<K, V>>,
);

impl<K, V, const CAPACITY: usize> Default for Memo<K, V, CAPACITY> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<K: Eq + std::hash::Hash + Clone, V: Clone, const CAPACITY: usize> Memo<K, V, CAPACITY> {
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.0.lock().ok()?.get(key).cloned()
    }

    pub(crate) fn remember(&self, key: K, value: V) {
        if let Ok(mut known) = self.0.lock() {
            if known.len() >= CAPACITY
                && !known.contains_key(&key)
                && let Some(any) = known.keys().next()
            {
                let any = any.clone();
                known.remove(&any);
            }
            known.insert(key, value);
        }
    }

    /// Changes the entry in place (no clone of it); `change` returning false forgets it.
    pub(crate) fn update(&self, key: &K, change: impl FnOnce(&mut V) -> bool) {
        if let Ok(mut known) = self.0.lock()
            && let Some(entry) = known.get_mut(key)
            && !change(entry)
        {
            known.remove(key);
        }
    }

    pub(crate) fn forget(&self, key: &K) {
        if let Ok(mut known) = self.0.lock() {
            known.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_memo_makes_room_for_one_and_keeps_the_rest() {
        let memo: Memo<u32, u32, 3> = Memo::default();
        for i in 0..3 {
            memo.remember(i, i);
        }
        memo.remember(1, 10);
        assert_eq!(
            (0..3).filter(|i| memo.get(i).is_some()).count(),
            3,
            "updated in place"
        );
        memo.remember(3, 3);
        assert_eq!(memo.get(&3), Some(3));
        assert_eq!((0..4).filter(|i| memo.get(i).is_some()).count(), 3);
    }
}
