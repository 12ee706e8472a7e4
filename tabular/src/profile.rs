//! One pass over examples, per column: counts, missing values, moments of
//! numbers and counts of strings. Statistics, the validation schema and
//! the transform's fitted parameters are all read off a [`Profile`].

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::Result;
use crate::example::{ColumnType, ExampleReader, Schema, Value};

/// Running count, mean, variance (Welford's method, stable in one pass),
/// minimum and maximum of numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Moments {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// How many values were added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean; `None` without values.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// The population standard deviation (divides by n, not n − 1); `None`
    /// without values.
    pub fn std(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).sqrt())
    }

    /// The smallest value; `None` without values.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest value; `None` without values.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }
}

/// What one pass saw of one column.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnProfile {
    /// The column name.
    pub name: String,
    /// The column type.
    pub ty: ColumnType,
    /// Rows with a value.
    pub count: u64,
    /// Rows without one.
    pub missing: u64,
    /// Moments of a number column's values.
    pub moments: Moments,
    /// A string column's values and how often each occurs, sorted by value.
    pub categories: BTreeMap<String, u64>,
}

/// What one pass saw of every column.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// The schema of the profiled examples.
    pub schema: Schema,
    /// Rows seen.
    pub rows: u64,
    /// One per schema column, in order.
    pub columns: Vec<ColumnProfile>,
}

impl Profile {
    /// An empty profile of examples with `schema`.
    pub fn new(schema: &Schema) -> Self {
        Profile {
            schema: schema.clone(),
            rows: 0,
            columns: schema
                .columns
                .iter()
                .map(|c| ColumnProfile {
                    name: c.name.clone(),
                    ty: c.ty,
                    count: 0,
                    missing: 0,
                    moments: Moments::default(),
                    categories: BTreeMap::new(),
                })
                .collect(),
        }
    }

    /// Adds one row, checked by [`ExampleReader`] to match the schema.
    pub fn add(&mut self, row: &[Value]) {
        self.rows += 1;
        for (column, value) in self.columns.iter_mut().zip(row) {
            match value {
                Value::Missing => column.missing += 1,
                Value::Number(x) => {
                    column.count += 1;
                    column.moments.add(*x);
                }
                Value::Text(t) => {
                    column.count += 1;
                    match column.categories.get_mut(t.as_str()) {
                        Some(n) => *n += 1,
                        None => {
                            column.categories.insert(t.clone(), 1);
                        }
                    }
                }
            }
        }
    }

    /// Profiles every remaining row of `reader`.
    pub fn read(mut reader: ExampleReader<impl BufRead>) -> Result<Self> {
        let mut profile = Profile::new(reader.schema());
        while let Some((_, row)) = reader.next_row()? {
            profile.add(&row);
        }
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_match_hand_computed_values() {
        let mut m = Moments::default();
        assert_eq!(
            (m.mean(), m.std(), m.min(), m.max()),
            (None, None, None, None)
        );
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            m.add(x);
        }
        assert_eq!(m.count(), 8);
        assert_eq!(m.mean(), Some(5.0));
        assert_eq!(m.std(), Some(2.0));
        assert_eq!((m.min(), m.max()), (Some(2.0), Some(9.0)));
    }

    #[test]
    fn moments_of_one_value_have_zero_spread() {
        let mut m = Moments::default();
        m.add(-3.5);
        assert_eq!((m.mean(), m.std()), (Some(-3.5), Some(0.0)));
        assert_eq!((m.min(), m.max()), (Some(-3.5), Some(-3.5)));
    }
}
