//! Message types that cross the pool as they are: fixed-layout (`#[repr(C)]`, plain old data)
//! structs a callee reads in place, which also have a JSON form (and, optionally, a protobuf
//! form) for hosts that must serialise.

use bytemuck::{Pod, Zeroable};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A message type: read in place from shared memory by spright, serialised (JSON, or protobuf
/// where provided) by the other hosts.
pub trait Wire: Pod + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The protobuf encoding, for gRPC hosts; `None` when the type has none.
    fn encode_proto(&self) -> Option<Vec<u8>> {
        None
    }

    /// Decodes the protobuf encoding; `None` when the type has none.
    fn decode_proto(_bytes: &[u8]) -> Option<Result<Self, String>> {
        None
    }
}

/// The empty message.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Empty {
    _reserved: u64,
}

impl Wire for Empty {
    fn encode_proto(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }
    fn decode_proto(_bytes: &[u8]) -> Option<Result<Self, String>> {
        Some(Ok(Empty::default()))
    }
}

/// A string of at most `N` bytes in place: UTF-8, padded with zeros.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Str<const N: usize>([u8; N]);

impl<const N: usize> Str<N> {
    /// `s`, or an error naming its length when it does not fit.
    pub fn new(s: &str) -> Result<Self, TooLong> {
        if s.len() > N || s.as_bytes().contains(&0) {
            return Err(TooLong {
                len: s.len(),
                max: N,
            });
        }
        let mut bytes = [0u8; N];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Str(bytes))
    }

    /// `s`, cut at a character boundary to fit.
    pub fn truncated(s: &str) -> Self {
        let mut end = s.len().min(N);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Str::new(&s[..end]).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        // Written from a &str, or checked when read from JSON/protobuf; a forged buffer may
        // hold anything, which reads as the longest valid prefix.
        match std::str::from_utf8(&self.0[..len]) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&self.0[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl<const N: usize> Default for Str<N> {
    fn default() -> Self {
        Str([0; N])
    }
}

impl<const N: usize> fmt::Debug for Str<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for Str<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> Serialize for Str<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de, const N: usize> Deserialize<'de> for Str<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Str::new(&s).map_err(D::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes do not fit a field of {max} (or contain a NUL)")]
pub struct TooLong {
    pub len: usize,
    pub max: usize,
}

/// Up to `N` items in place, with their count.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct List<T, const N: usize> {
    len: u32,
    _pad: u32,
    items: [T; N],
}

// SAFETY: `len` and `_pad` make 8 bytes, so with items aligned to at most 8 there is no padding
// anywhere. `LAYOUT` checks it at compile time for every List that is built or read (the
// constructors, `as_slice` and `push` evaluate it); an all-zero List is empty.
unsafe impl<T: Pod, const N: usize> Zeroable for List<T, N> {}
// SAFETY: as for Zeroable; every bit pattern of the fields is valid.
unsafe impl<T: Pod, const N: usize> Pod for List<T, N> {}

impl<T: Pod, const N: usize> List<T, N> {
    const LAYOUT: () = assert!(align_of::<T>() <= 8 && size_of::<Self>() == 8 + N * size_of::<T>());

    pub fn new() -> Self {
        let () = Self::LAYOUT;
        Zeroable::zeroed()
    }

    /// The items (a forged count reads as at most `N`).
    pub fn as_slice(&self) -> &[T] {
        let () = Self::LAYOUT;
        &self.items[..(self.len as usize).min(N)]
    }

    /// Appends `item`; `Err(item)` when full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        let () = Self::LAYOUT;
        let len = (self.len as usize).min(N);
        if len == N {
            return Err(item);
        }
        self.items[len] = item;
        self.len = len as u32 + 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub const fn capacity() -> usize {
        N
    }

    /// The items, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        let len = (self.len as usize).min(N);
        &mut self.items[..len]
    }

    /// Keeps the items `keep` accepts, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut kept = 0;
        for i in 0..self.len() {
            if keep(&self.items[i]) {
                self.items[kept] = self.items[i];
                kept += 1;
            }
        }
        self.len = kept as u32;
    }
}

impl<T: Pod, const N: usize> Default for List<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Pod + fmt::Debug, const N: usize> fmt::Debug for List<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: Pod + PartialEq, const N: usize> PartialEq for List<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Pod, const N: usize> FromIterator<T> for List<T, N> {
    /// Takes the first `N` items.
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut list = List::new();
        for item in iter.into_iter().take(N) {
            let _ = list.push(item);
        }
        list
    }
}

impl<T: Pod + Serialize, const N: usize> Serialize for List<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

impl<'de, T: Pod + Deserialize<'de>, const N: usize> Deserialize<'de> for List<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(d)?;
        if items.len() > N {
            return Err(D::Error::custom(format!(
                "{} items where at most {N} fit",
                items.len()
            )));
        }
        Ok(items.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
    struct Item {
        id: Str<8>,
        n: i64,
    }

    #[test]
    fn str_round_trips_and_refuses_what_does_not_fit() {
        let s = Str::<4>::new("EUR").unwrap();
        assert_eq!(s.as_str(), "EUR");
        assert_eq!(Str::<4>::new("EURO").unwrap().as_str(), "EURO");
        assert_eq!(Str::<4>::new("EUROS"), Err(TooLong { len: 5, max: 4 }));
        assert_eq!(Str::<4>::truncated("€€").as_str(), "€");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"EUR\"");
        assert!(serde_json::from_str::<Str<2>>(&json).is_err());
    }

    #[test]
    fn forged_str_bytes_read_as_their_valid_prefix() {
        let s: Str<4> = bytemuck::cast([b'a', 0xff, b'b', 0]);
        assert_eq!(s.as_str(), "a");
    }

    #[test]
    fn list_pushes_up_to_capacity_and_serialises_only_its_items() {
        let mut l = List::<Item, 2>::new();
        let item = |n| Item {
            id: Str::new("x").unwrap(),
            n,
        };
        l.push(item(1)).unwrap();
        assert_eq!(l.len(), 1);
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, r#"[{"id":"x","n":1}]"#);
        l.push(item(2)).unwrap();
        assert!(l.push(item(3)).is_err());
        let back: List<Item, 2> =
            serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert!(
            serde_json::from_str::<List<Item, 1>>(&json.replace(']', r#",{"id":"y","n":2}]"#))
                .is_err()
        );
        l.retain(|i| i.n == 2);
        assert_eq!(l.as_slice(), &[item(2)]);
    }

    #[test]
    fn a_forged_count_reads_as_at_most_capacity() {
        let mut l = List::<u64, 2>::new();
        l.len = 1000;
        assert_eq!(l.len(), 2);
        assert_eq!(size_of::<List<u64, 2>>(), 24);
    }
}
