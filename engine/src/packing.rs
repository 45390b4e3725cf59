//! Compact binary layouts for the files in `kflow-out/.state/`: every
//! string (labels, identities, output names, params) is stored once in a
//! table and referred to by index, so that loading the state of a large
//! graph allocates each distinct string once and shares it.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Collects distinct strings while packing.
#[derive(Default)]
pub(crate) struct StringTable<'a> {
    index: FxHashMap<&'a str, u32>,
    strings: Vec<&'a str>,
}

impl<'a> StringTable<'a> {
    pub fn intern(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s);
        self.index.insert(s, i);
        i
    }

    pub fn into_strings(self) -> Vec<&'a str> {
        self.strings
    }
}

/// The unpacked string table.
pub(crate) struct Strings(Vec<Arc<str>>);

impl Strings {
    pub fn new(raw: &[&str]) -> Strings {
        Strings(raw.iter().map(|s| Arc::from(*s)).collect())
    }

    /// String `i`; `None` when the file is damaged.
    pub fn get(&self, i: u32) -> Option<&Arc<str>> {
        self.0.get(i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_stored_once_and_shared() {
        let mut t = StringTable::default();
        let a = t.intern("out.txt");
        let b = t.intern("cmd");
        assert_eq!(t.intern("out.txt"), a);
        let strings = Strings::new(&t.into_strings());
        assert_eq!(&**strings.get(b).unwrap(), "cmd");
        assert!(strings.get(7).is_none());
    }
}
