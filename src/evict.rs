//! Bounded tables make room by dropping their oldest entry (or the one used least
//! recently): the one helper for it.

use alloc::collections::BTreeMap;

/// Removes the entry of `map` whose `age` is least; gives its value (`None` if empty).
pub(crate) fn remove_oldest<K: Ord + Clone, V, T: Ord>(
    map: &mut BTreeMap<K, V>,
    age: impl Fn(&V) -> T,
) -> Option<V> {
    let oldest = map
        .iter()
        .min_by_key(|(_, v)| age(v))
        .map(|(k, _)| k.clone())?;
    map.remove(&oldest)
}
