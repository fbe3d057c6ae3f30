//! Attribute values and attribute sets.
//!
//! Every data type carries attributes: string, integer, float or boolean values
//! under string keys. [`Attributes`] is the owned, order-independent set stored
//! in items and batches. [`AsAttributes`] is what the recording calls accept: it
//! is implemented for [`Attributes`] and for plain arrays, slices and vectors of
//! `(key, value)` pairs, so that recording into an existing series borrows the
//! caller's pairs and allocates nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// One attribute value: a string, an integer, a float or a boolean.
///
/// Built with `From` from the usual Rust types:
///
/// ```
/// use newrelic_telemetry::Value;
///
/// assert_eq!(Value::from("GET"), Value::String("GET".into()));
/// assert_eq!(Value::from(200), Value::Int(200));
/// assert_eq!(Value::from(0.25), Value::Float(0.25));
/// assert_eq!(Value::from(true), Value::Bool(true));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A string value (shared, so cloning it is cheap).
    String(Arc<str>),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float. NaN and infinities are rejected when an item is recorded.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Value {
    /// Borrows this value as a [`ValueRef`].
    ///
    /// ```
    /// use newrelic_telemetry::{Value, ValueRef};
    ///
    /// assert_eq!(Value::from("GET").as_value_ref(), ValueRef::Str("GET"));
    /// ```
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::String(s) => ValueRef::Str(s),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Bool(b) => ValueRef::Bool(*b),
        }
    }
}

/// A borrowed attribute value, as recording calls see it.
///
/// It is what [`AsValueRef`] hands out; most users never name it.
///
/// ```
/// use newrelic_telemetry::{AsValueRef, Value, ValueRef};
///
/// assert_eq!(42_i64.as_value_ref(), ValueRef::Int(42));
/// assert_eq!(ValueRef::Str("eu").to_value(), Value::from("eu"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ValueRef<'a> {
    /// A borrowed string.
    Str(&'a str),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl ValueRef<'_> {
    /// Makes an owned [`Value`] (allocates for strings).
    ///
    /// ```
    /// use newrelic_telemetry::{Value, ValueRef};
    ///
    /// assert_eq!(ValueRef::Bool(true).to_value(), Value::Bool(true));
    /// ```
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Str(s) => Value::String(Arc::from(s)),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Bool(b) => Value::Bool(b),
        }
    }

    /// Identity comparison: floats compare by bit pattern, so that a series
    /// keyed by a float attribute is always found again.
    pub(crate) fn same_as(self, other: ValueRef<'_>) -> bool {
        match (self, other) {
            (ValueRef::Str(a), ValueRef::Str(b)) => a == b,
            (ValueRef::Int(a), ValueRef::Int(b)) => a == b,
            (ValueRef::Float(a), ValueRef::Float(b)) => a.to_bits() == b.to_bits(),
            (ValueRef::Bool(a), ValueRef::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_value_ref().serialize(serializer)
    }
}

impl Serialize for ValueRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            ValueRef::Str(s) => serializer.serialize_str(s),
            ValueRef::Int(i) => serializer.serialize_i64(i),
            ValueRef::Float(f) => serializer.serialize_f64(f),
            ValueRef::Bool(b) => serializer.serialize_bool(b),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

macro_rules! value_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::Int(i64::from(v)) }
        }
        impl AsValueRef for $t {
            fn as_value_ref(&self) -> ValueRef<'_> { ValueRef::Int(i64::from(*self)) }
        }
    )*};
}
value_from_int!(i8, i16, i32, i64, u8, u16, u32);

/// Integers that may not fit in `i64` become floats, as JSON numbers would.
macro_rules! value_from_wide_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { v.as_value_ref().to_value() }
        }
        impl AsValueRef for $t {
            fn as_value_ref(&self) -> ValueRef<'_> {
                match i64::try_from(*self) {
                    Ok(i) => ValueRef::Int(i),
                    Err(_) => ValueRef::Float(*self as f64),
                }
            }
        }
    )*};
}
value_from_wide_int!(u64, usize, isize, u128, i128);

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(Arc::from(v))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(Arc::from(v))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::String(Arc::from(v.as_str()))
    }
}
impl From<Arc<str>> for Value {
    fn from(v: Arc<str>) -> Self {
        Value::String(v)
    }
}
impl From<ValueRef<'_>> for Value {
    fn from(v: ValueRef<'_>) -> Self {
        v.to_value()
    }
}

/// Borrows any attribute value as a [`ValueRef`], so that one array can mix
/// value types: once the first pair names the type, `.into()` does the rest,
/// and nothing is allocated.
///
/// ```
/// use newrelic_telemetry::{MetricBatch, ValueRef};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let batch = MetricBatch::new();
/// let route = String::from("/orders");
/// let status: u16 = 201;
/// batch
///     .record_count("http.requests", 1, [("route", ValueRef::from(&route)), ("status", status.into())])
///     .await;
/// let (metrics, _) = batch.flush().await;
/// assert_eq!(metrics[0].attributes().get("route"), Some(&"/orders".into()));
/// assert_eq!(metrics[0].attributes().get("status"), Some(&201.into()));
/// # }
/// ```
impl<'a, T: AsValueRef + ?Sized> From<&'a T> for ValueRef<'a> {
    fn from(value: &'a T) -> Self {
        value.as_value_ref()
    }
}

/// Numbers and booleans by value, converted as [`AsValueRef`] does.
macro_rules! value_ref_from_copy {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {$(
        impl From<$t> for ValueRef<'_> {
            fn from($v: $t) -> Self { $e }
        }
    )*};
}
value_ref_from_copy!(
    i8 => |v| ValueRef::Int(i64::from(v)),
    i16 => |v| ValueRef::Int(i64::from(v)),
    i32 => |v| ValueRef::Int(i64::from(v)),
    i64 => |v| ValueRef::Int(v),
    u8 => |v| ValueRef::Int(i64::from(v)),
    u16 => |v| ValueRef::Int(i64::from(v)),
    u32 => |v| ValueRef::Int(i64::from(v)),
    u64 => |v| i64::try_from(v).map_or(ValueRef::Float(v as f64), ValueRef::Int),
    usize => |v| i64::try_from(v).map_or(ValueRef::Float(v as f64), ValueRef::Int),
    isize => |v| i64::try_from(v).map_or(ValueRef::Float(v as f64), ValueRef::Int),
    i128 => |v| i64::try_from(v).map_or(ValueRef::Float(v as f64), ValueRef::Int),
    u128 => |v| i64::try_from(v).map_or(ValueRef::Float(v as f64), ValueRef::Int),
    f32 => |v| ValueRef::Float(f64::from(v)),
    f64 => |v| ValueRef::Float(v),
    bool => |v| ValueRef::Bool(v),
);

/// Anything that can be borrowed as an attribute value without allocating.
///
/// Implemented for [`Value`], string types, integers, floats and booleans.
///
/// ```
/// use newrelic_telemetry::{AsValueRef, ValueRef};
///
/// fn is_text(value: &impl AsValueRef) -> bool {
///     matches!(value.as_value_ref(), ValueRef::Str(_))
/// }
/// assert!(is_text(&"GET"));
/// assert!(is_text(&String::from("POST")));
/// assert!(!is_text(&0.5));
/// ```
pub trait AsValueRef {
    /// Borrows the value.
    fn as_value_ref(&self) -> ValueRef<'_>;
}

impl AsValueRef for Value {
    fn as_value_ref(&self) -> ValueRef<'_> {
        Value::as_value_ref(self)
    }
}
impl AsValueRef for ValueRef<'_> {
    fn as_value_ref(&self) -> ValueRef<'_> {
        *self
    }
}
impl AsValueRef for str {
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Str(self)
    }
}
impl AsValueRef for String {
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Str(self)
    }
}
impl AsValueRef for Arc<str> {
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Str(self)
    }
}
impl AsValueRef for Box<str> {
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Str(self)
    }
}
impl AsValueRef for std::borrow::Cow<'_, str> {
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Str(self)
    }
}
impl AsValueRef for f64 {
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Float(*self)
    }
}
impl AsValueRef for f32 {
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Float(f64::from(*self))
    }
}
impl AsValueRef for bool {
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Bool(*self)
    }
}
impl<T: AsValueRef + ?Sized> AsValueRef for &T {
    fn as_value_ref(&self) -> ValueRef<'_> {
        (**self).as_value_ref()
    }
}

/// An owned set of attributes: unique keys, independent of insertion order.
///
/// Two sets with the same pairs inserted in another order are equal, hash the
/// same and name the same metric series. Inserting a key that is already present
/// replaces its value.
///
/// ```
/// use newrelic_telemetry::{attrs, Attributes, Value};
///
/// let a = Attributes::from(attrs!["host" => "web-1", "port" => 8080]);
/// let b = Attributes::from([("port", Value::from(8080)), ("host", Value::from("web-1"))]);
/// assert_eq!(a, b);
/// assert_eq!(a.get("port"), Some(&8080.into()));
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Attributes {
    /// Sorted by key; keys are unique.
    pairs: Vec<(Arc<str>, Value)>,
}

impl Attributes {
    /// An empty set.
    ///
    /// ```
    /// use newrelic_telemetry::Attributes;
    ///
    /// assert!(Attributes::new().is_empty());
    /// ```
    pub const fn new() -> Self {
        Attributes { pairs: Vec::new() }
    }

    /// An empty set with room for `capacity` pairs.
    ///
    /// ```
    /// use newrelic_telemetry::Attributes;
    ///
    /// let mut attrs = Attributes::with_capacity(2);
    /// attrs.insert("a", 1);
    /// attrs.insert("b", 2);
    /// assert_eq!(attrs.len(), 2);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Attributes {
            pairs: Vec::with_capacity(capacity),
        }
    }

    /// Makes room for `additional` more pairs without growing on the way.
    #[cfg(feature = "tracing-layer")]
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.pairs.reserve(additional);
    }

    /// Inserts a pair, returning the value it replaced.
    ///
    /// ```
    /// use newrelic_telemetry::{Attributes, Value};
    ///
    /// let mut attrs = Attributes::new();
    /// assert_eq!(attrs.insert("env", "staging"), None);
    /// assert_eq!(attrs.insert("env", "prod"), Some(Value::from("staging")));
    /// assert_eq!(attrs.len(), 1);
    /// ```
    pub fn insert(&mut self, key: impl Into<Arc<str>>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        match self.search(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.pairs[i].1, value.into())),
            Err(i) => {
                self.pairs.insert(i, (key, value.into()));
                None
            }
        }
    }

    /// Adds a pair, builder style.
    ///
    /// ```
    /// use newrelic_telemetry::Attributes;
    /// let attrs = Attributes::new().with("env", "prod").with("shard", 3);
    /// assert_eq!(attrs.len(), 2);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with(mut self, key: impl Into<Arc<str>>, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// The value under `key`, if any.
    ///
    /// ```
    /// use newrelic_telemetry::{Attributes, Value};
    ///
    /// let attrs = Attributes::new().with("shard", 3);
    /// assert_eq!(attrs.get("shard"), Some(&Value::Int(3)));
    /// assert_eq!(attrs.get("missing"), None);
    /// ```
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.search(key).ok().map(|i| &self.pairs[i].1)
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// use newrelic_telemetry::Attributes;
    ///
    /// let attrs = Attributes::new().with("env", "prod");
    /// assert!(attrs.contains_key("env") && !attrs.contains_key("host"));
    /// ```
    pub fn contains_key(&self, key: &str) -> bool {
        self.search(key).is_ok()
    }

    /// Removes `key`, returning its value.
    ///
    /// ```
    /// use newrelic_telemetry::{Attributes, Value};
    ///
    /// let mut attrs = Attributes::new().with("env", "prod");
    /// assert_eq!(attrs.remove("env"), Some(Value::from("prod")));
    /// assert!(attrs.is_empty());
    /// ```
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.search(key).ok().map(|i| self.pairs.remove(i).1)
    }

    /// The number of pairs.
    ///
    /// ```
    /// use newrelic_telemetry::Attributes;
    ///
    /// assert_eq!(Attributes::new().with("a", 1).with("a", 2).len(), 1); // keys are unique
    /// ```
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the set is empty.
    ///
    /// ```
    /// use newrelic_telemetry::Attributes;
    ///
    /// assert!(Attributes::new().is_empty());
    /// assert!(!Attributes::new().with("a", true).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs, sorted by key.
    ///
    /// ```
    /// use newrelic_telemetry::Attributes;
    ///
    /// let attrs = Attributes::new().with("b", 2).with("a", 1);
    /// let keys: Vec<&str> = attrs.iter().map(|(k, _)| k).collect();
    /// assert_eq!(keys, ["a", "b"]); // sorted by key
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + '_ {
        self.pairs.iter().map(|(k, v)| (&**k, v))
    }

    /// Where `key` is, by binary search over the sorted keys.
    pub(crate) fn position(&self, key: &str) -> Option<usize> {
        self.search(key).ok()
    }

    fn search(&self, key: &str) -> Result<usize, usize> {
        self.pairs.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// Adds every pair of `other`, replacing keys already present.
    pub(crate) fn absorb(&mut self, other: Attributes) {
        if self.is_empty() {
            *self = other;
        } else {
            for (k, v) in other.pairs {
                self.insert(k, v);
            }
        }
    }

    pub(crate) fn pairs(&self) -> &[(Arc<str>, Value)] {
        &self.pairs
    }

    pub(crate) fn pairs_mut(&mut self) -> &mut Vec<(Arc<str>, Value)> {
        &mut self.pairs
    }

    /// Builds a set from borrowed pairs; later duplicates win.
    pub(crate) fn from_source(source: &(impl AsAttributes + ?Sized)) -> Attributes {
        let mut attrs = Attributes::with_capacity(source.attribute_count());
        source.for_each_attribute(|k, v| {
            attrs.insert(k, v.to_value());
        });
        attrs
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<K: Into<Arc<str>>, V: Into<Value>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut attrs = Attributes::new();
        attrs.extend(iter);
        attrs
    }
}

impl<K: Into<Arc<str>>, V: Into<Value>> Extend<(K, V)> for Attributes {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Into<Arc<str>>, V: Into<Value>, const N: usize> From<[(K, V); N]> for Attributes {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<K: Into<Arc<str>>, V: Into<Value>> From<Vec<(K, V)>> for Attributes {
    fn from(pairs: Vec<(K, V)>) -> Self {
        pairs.into_iter().collect()
    }
}

impl<K: Into<Arc<str>>, V: Into<Value>, S> From<HashMap<K, V, S>> for Attributes {
    /// ```
    /// use newrelic_telemetry::{Attributes, Value};
    /// use std::collections::HashMap;
    ///
    /// let map = HashMap::from([("plan".to_string(), Value::from("pro")), ("seats".to_string(), 5.into())]);
    /// assert_eq!(Attributes::from(map).get("seats"), Some(&Value::Int(5)));
    /// ```
    fn from(map: HashMap<K, V, S>) -> Self {
        map.into_iter().collect()
    }
}

impl<K: Into<Arc<str>>, V: Into<Value>> From<BTreeMap<K, V>> for Attributes {
    /// ```
    /// use newrelic_telemetry::{Attributes, Value};
    /// use std::collections::BTreeMap;
    ///
    /// let map = BTreeMap::from([("region", "eu"), ("zone", "b")]);
    /// assert_eq!(Attributes::from(map).get("zone"), Some(&Value::from("b")));
    /// ```
    fn from(map: BTreeMap<K, V>) -> Self {
        map.into_iter().collect()
    }
}

impl From<()> for Attributes {
    /// No attributes: what `attrs![]` builds.
    fn from((): ()) -> Self {
        Attributes::new()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, &'a Value);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a Value)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// What the recording calls accept as attributes: anything that can lend its
/// `(key, value)` pairs without allocating.
///
/// Implemented for [`Attributes`]; for arrays, slices and vectors of pairs whose
/// keys are strings and whose values implement [`AsValueRef`]; for `HashMap`s
/// and `BTreeMap`s of the same; for tuples of up to 16 pairs whose values may
/// each be of another type (what [`attrs!`](crate::attrs) builds); for `()`
/// (no attributes); and for references to all of these. Pairs may come in any
/// order; a key given twice keeps its last value.
///
/// ```
/// use newrelic_telemetry::{AsAttributes, Value, ValueRef, attrs};
/// use std::collections::{BTreeMap, HashMap};
///
/// fn count(attrs: impl AsAttributes) -> usize { attrs.attribute_count() }
///
/// assert_eq!(count([("route", "/a"), ("method", "GET")]), 2);
/// // Mixed value types: a tuple of pairs, `attrs!`, or `ValueRef`s.
/// assert_eq!(count((("route", "/a"), ("status", 200))), 2);
/// assert_eq!(count(attrs!["route" => "/a", "status" => 200, "ok" => true]), 3);
/// assert_eq!(count([("route", ValueRef::from("/a")), ("status", 200.into())]), 2);
/// assert_eq!(count(&[("status", Value::from(200)), ("ok", true.into())]), 2);
/// // Maps with string keys.
/// let map: HashMap<String, Value> = HashMap::from([("plan".into(), "pro".into())]);
/// assert_eq!(count(&map), 1);
/// assert_eq!(count(BTreeMap::from([("a", 1), ("b", 2)])), 2);
/// assert_eq!(count(()), 0);
/// ```
pub trait AsAttributes {
    /// How many pairs [`for_each_attribute`](Self::for_each_attribute) visits.
    fn attribute_count(&self) -> usize;
    /// Calls `f` with each pair.
    fn for_each_attribute<'s>(&'s self, f: impl FnMut(&'s str, ValueRef<'s>));
}

impl AsAttributes for Attributes {
    fn attribute_count(&self) -> usize {
        self.len()
    }
    fn for_each_attribute<'s>(&'s self, mut f: impl FnMut(&'s str, ValueRef<'s>)) {
        for (k, v) in &self.pairs {
            f(k, v.as_value_ref());
        }
    }
}

impl AsAttributes for () {
    fn attribute_count(&self) -> usize {
        0
    }
    fn for_each_attribute<'s>(&'s self, _f: impl FnMut(&'s str, ValueRef<'s>)) {}
}

impl<K: AsRef<str>, V: AsValueRef> AsAttributes for [(K, V)] {
    fn attribute_count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn for_each_attribute<'s>(&'s self, mut f: impl FnMut(&'s str, ValueRef<'s>)) {
        for (k, v) in self {
            f(k.as_ref(), v.as_value_ref());
        }
    }
}

impl<K: AsRef<str>, V: AsValueRef, const N: usize> AsAttributes for [(K, V); N] {
    fn attribute_count(&self) -> usize {
        N
    }
    #[inline]
    fn for_each_attribute<'s>(&'s self, f: impl FnMut(&'s str, ValueRef<'s>)) {
        self.as_slice().for_each_attribute(f)
    }
}

impl<K: AsRef<str>, V: AsValueRef> AsAttributes for Vec<(K, V)> {
    fn attribute_count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn for_each_attribute<'s>(&'s self, f: impl FnMut(&'s str, ValueRef<'s>)) {
        self.as_slice().for_each_attribute(f)
    }
}

impl<K: AsRef<str>, V: AsValueRef, S> AsAttributes for HashMap<K, V, S> {
    fn attribute_count(&self) -> usize {
        self.len()
    }
    fn for_each_attribute<'s>(&'s self, mut f: impl FnMut(&'s str, ValueRef<'s>)) {
        for (k, v) in self {
            f(k.as_ref(), v.as_value_ref());
        }
    }
}

impl<K: AsRef<str>, V: AsValueRef> AsAttributes for BTreeMap<K, V> {
    fn attribute_count(&self) -> usize {
        self.len()
    }
    fn for_each_attribute<'s>(&'s self, mut f: impl FnMut(&'s str, ValueRef<'s>)) {
        for (k, v) in self {
            f(k.as_ref(), v.as_value_ref());
        }
    }
}

/// Tuples of 1 to 16 `(key, value)` pairs, each value of its own type: what
/// [`attrs!`](crate::attrs) builds.
macro_rules! tuple_as_attributes {
    ($( ($($k:ident $v:ident $i:tt),+) )+) => {$(
        impl<$($k: AsRef<str>, $v: AsValueRef),+> AsAttributes for ($(($k, $v),)+) {
            fn attribute_count(&self) -> usize {
                [$($i),+].len()
            }
            fn for_each_attribute<'s>(&'s self, mut f: impl FnMut(&'s str, ValueRef<'s>)) {
                $( f(self.$i.0.as_ref(), self.$i.1.as_value_ref()); )+
            }
        }

        impl<$($k: AsRef<str>, $v: AsValueRef),+> From<($(($k, $v),)+)> for Attributes {
            fn from(pairs: ($(($k, $v),)+)) -> Self {
                let mut attributes = Attributes::with_capacity([$($i),+].len());
                pairs.for_each_attribute(|key, value| {
                    attributes.insert(key, value.to_value());
                });
                attributes
            }
        }
    )+};
}
tuple_as_attributes! {
    (K0 V0 0)
    (K0 V0 0, K1 V1 1)
    (K0 V0 0, K1 V1 1, K2 V2 2)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7, K8 V8 8)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7, K8 V8 8,
     K9 V9 9)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7, K8 V8 8,
     K9 V9 9, K10 V10 10)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7, K8 V8 8,
     K9 V9 9, K10 V10 10, K11 V11 11)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7, K8 V8 8,
     K9 V9 9, K10 V10 10, K11 V11 11, K12 V12 12)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7, K8 V8 8,
     K9 V9 9, K10 V10 10, K11 V11 11, K12 V12 12, K13 V13 13)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7, K8 V8 8,
     K9 V9 9, K10 V10 10, K11 V11 11, K12 V12 12, K13 V13 13, K14 V14 14)
    (K0 V0 0, K1 V1 1, K2 V2 2, K3 V3 3, K4 V4 4, K5 V5 5, K6 V6 6, K7 V7 7, K8 V8 8,
     K9 V9 9, K10 V10 10, K11 V11 11, K12 V12 12, K13 V13 13, K14 V14 14, K15 V15 15)
}

/// Attributes of mixed value types for a recording call, without allocating:
/// `attrs!["route" => route, "status" => status]` is the tuple
/// `(("route", route), ("status", status))`, and each value may be a string
/// (`&str`, `String`, `Arc<str>`, ...), an integer, a float, a boolean or a
/// [`Value`]. Up to 16 pairs; for more, use an [`Attributes`] set.
///
/// ```
/// use newrelic_telemetry::{MetricBatch, attrs};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let batch = MetricBatch::new();
/// let route = String::from("/orders");
/// let status: u16 = 201;
/// batch.record_count("http.requests", 1, attrs!["route" => &route, "status" => status, "ok" => true])
///     .await;
/// let (metrics, _) = batch.flush().await;
/// let attributes = metrics[0].attributes();
/// assert_eq!(attributes.get("status"), Some(&201.into())); // an integer on the wire
/// assert_eq!(attributes.get("route"), Some(&"/orders".into()));
/// # }
/// ```
///
/// The same macro serves every call that takes attributes: items
/// ([`Event::with_attributes`](crate::Event::with_attributes) and its
/// siblings), common attributes, bound handles and recording by name. Where
/// an owned set is kept, the pairs are copied into an [`Attributes`]
/// (`Attributes::from(attrs![..])` makes one directly).
///
/// ```
/// use newrelic_telemetry::{Attributes, Event, attrs};
///
/// let status: u16 = 200;
/// let event = Event::new("Order").with_attributes(attrs!["route" => "/orders", "status" => status]);
/// assert_eq!(event.attributes().get("status"), Some(&200.into()));
///
/// let set = Attributes::from(attrs!["region" => "eu", "zone" => "b", "region" => "us"]);
/// assert_eq!(set.len(), 2); // a key given twice keeps its last value
/// assert_eq!(set.get("region"), Some(&"us".into()));
/// assert!(Attributes::from(attrs![]).is_empty());
/// ```
#[macro_export]
macro_rules! attrs {
    () => { () };
    ($($key:expr => $value:expr),+ $(,)?) => { ( $( ($key, $value), )+ ) };
}

impl<T: AsAttributes + ?Sized> AsAttributes for &T {
    fn attribute_count(&self) -> usize {
        (**self).attribute_count()
    }
    fn for_each_attribute<'s>(&'s self, f: impl FnMut(&'s str, ValueRef<'s>)) {
        (**self).for_each_attribute(f)
    }
}

impl crate::budget::HeapSize for Attributes {
    fn held_bytes(&self) -> usize {
        use crate::budget::arc_str_bytes;
        let pairs: usize = self
            .pairs
            .iter()
            .map(|(key, value)| {
                arc_str_bytes(key.len())
                    + match value {
                        Value::String(s) => arc_str_bytes(s.len()),
                        _ => 0,
                    }
            })
            .sum();
        std::mem::size_of::<Self>()
            + self.pairs.capacity() * std::mem::size_of::<(Arc<str>, Value)>()
            + pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insertion_order_does_not_matter() {
        let a = Attributes::from([("b", 2), ("a", 1)]);
        let b = Attributes::from([("a", 1), ("b", 2)]);
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn later_duplicate_wins() {
        let a = Attributes::from([("a", 1), ("a", 2)]);
        assert_eq!(a.len(), 1);
        assert_eq!(a.get("a"), Some(&Value::Int(2)));
    }

    #[test]
    fn wide_integers_fall_back_to_float() {
        assert_eq!(Value::from(u64::MAX), Value::Float(u64::MAX as f64));
        assert_eq!(Value::from(7u64), Value::Int(7));
    }

    #[test]
    fn serializes_as_object() {
        let a = Attributes::from(attrs!["s" => "x", "i" => 1, "f" => 1.5, "b" => true]);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"b":true,"f":1.5,"i":1,"s":"x"}"#
        );
    }
}
