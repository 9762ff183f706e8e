//! Validated names ("parse, don't validate"): once a [`ResourceName`] or [`ToolName`] exists it
//! is valid.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused. Surfaces as HTTP 400 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name is longer than {max} characters")]
    TooLong { max: usize },
    #[error(
        "name may only contain lowercase letters, digits and single '-' or '_' (must start with a letter or digit): {0:?}"
    )]
    BadCharacters(String),
    #[error("name must not contain \"__\" (it separates alias and tool): {0:?}")]
    DoubleUnderscore(String),
    #[error("tool name must match ^[A-Za-z0-9._-]{{1,128}}$: {0:?}")]
    BadToolName(String),
}

/// A lowercase slug naming a connector, profile or agent: `^[a-z0-9][a-z0-9_-]{0,62}$`, without `__`.
///
/// ```
/// use agp::domain::ResourceName;
/// assert!(ResourceName::parse("notion").is_ok());
/// assert!(ResourceName::parse("Notion").is_err());
/// assert!(ResourceName::parse("a__b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

impl ResourceName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(NameError::TooLong { max: Self::MAX_LEN });
        }
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !first_ok || !rest_ok {
            return Err(NameError::BadCharacters(s.to_string()));
        }
        if s.contains("__") {
            return Err(NameError::DoubleUnderscore(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ResourceName> for String {
    fn from(n: ResourceName) -> Self {
        n.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A catalog tool name as agents see it (`<alias>__<tool>`): `^[A-Za-z0-9._-]{1,128}$` (S16).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ToolName(String);

impl ToolName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(NameError::BadToolName(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ToolName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ToolName> for String {
    fn from(n: ToolName) -> Self {
        n.0
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        for ok in ["notion", "a", "internal-api", "x_1", "9lives"] {
            assert!(ResourceName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Notion",
            "-x",
            "_x",
            "a b",
            "a__b",
            "ノ",
            "a\u{200b}b",
            &"a".repeat(64),
        ] {
            assert!(ResourceName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tool_names() {
        assert!(ToolName::parse("notion__notion-search").is_ok());
        assert!(ToolName::parse(&"a".repeat(128)).is_ok());
        for bad in [
            "",
            "a b",
            "n\u{0430}me",
            "a\u{200b}b",
            &"a".repeat(129),
            "a/b",
        ] {
            assert!(ToolName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
