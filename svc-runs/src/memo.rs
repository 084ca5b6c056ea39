//! A bounded memo of what a run's start learnt (a chat's classification, the tags a model
//! resolved to, a reusable toolset, a chat's latest messages).

/// At most `CAPACITY` entries; when full it starts over (forgetting only costs what an entry
/// saved).
pub(crate) struct Memo<K, V, const CAPACITY: usize = 50_000>(
    std::sync::Mutex<std::collections::HashMap<K, V>>,
);

impl<K, V, const CAPACITY: usize> Default for Memo<K, V, CAPACITY> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<K: Eq + std::hash::Hash, V: Clone, const CAPACITY: usize> Memo<K, V, CAPACITY> {
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.0.lock().ok()?.get(key).cloned()
    }

    pub(crate) fn remember(&self, key: K, value: V) {
        if let Ok(mut known) = self.0.lock() {
            if known.len() >= CAPACITY {
                known.clear();
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
