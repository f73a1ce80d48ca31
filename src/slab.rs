//! A slab: values stored at small, reused indexes, so mio tokens stay small and do not grow
//! without bound in a long-running server.

/// Values at reused indexes.
#[derive(Debug)]
pub struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { entries: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    /// An empty slab.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` and returns its index (a freed one when there is one).
    pub fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(index) => {
                self.entries[index] = Some(value);
                index
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    /// The index the next [`insert`](Self::insert) will use (to register a socket under its
    /// token before the socket is stored).
    pub fn next_key(&self) -> usize {
        self.free.last().copied().unwrap_or(self.entries.len())
    }

    /// Takes the value at `index` out, freeing the index.
    pub fn remove(&mut self, index: usize) -> Option<T> {
        let value = self.entries.get_mut(index)?.take()?;
        self.free.push(index);
        self.len -= 1;
        Some(value)
    }

    /// The value at `index`.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.entries.get(index)?.as_ref()
    }

    /// The value at `index`, mutably.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.entries.get_mut(index)?.as_mut()
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The indexes in use, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.entries.iter().enumerate().filter_map(|(i, v)| v.as_ref().map(|v| (i, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_reused() {
        let mut slab = Slab::new();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!((a, b), (0, 1));
        assert_eq!(slab.next_key(), 2);
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.next_key(), a);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.insert("c"), a);
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.get(7), None);
        assert_eq!(slab.iter().map(|(i, v)| (i, *v)).collect::<Vec<_>>(), [(0, "c"), (1, "b")]);
    }
}
