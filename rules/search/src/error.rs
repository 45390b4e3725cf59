use std::fmt;

/// A space that cannot be searched: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpaceError {
    pub field: String,
    pub message: String,
}

impl SpaceError {
    pub fn new(field: &str, message: String) -> SpaceError {
        SpaceError {
            field: field.to_owned(),
            message,
        }
    }
}

impl fmt::Display for SpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}
