//! Credentials that must never be printed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A credential. `Debug`, `Display` and `Serialize` all print `[redacted]`; only [`Secret::expose`]
/// gives the value, at the one place it is handed to a client library.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// What every redacted value prints as.
pub const REDACTED: &str = "[redacted]";

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The credential itself. Pass it to the client that needs it; never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the credential is empty (an empty string counts as not configured).
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Replaces every occurrence of each secret in `text`, and the query string of any URL that
/// carries an S3 signature or credential, with `[redacted]`. Applied to every message that leaves
/// the storage layer.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if secret.0.len() >= 4 {
            out = out.replace(&secret.0, REDACTED);
        }
    }
    redact_signed_queries(&out)
}

/// `https://host/key?X-Amz-Signature=…` → `https://host/key?[redacted]`.
pub fn redact_signed_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(q) = rest.find('?') {
        let (before, after) = rest.split_at(q);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')')
            .unwrap_or(after.len());
        let query = &after[..end];
        if query.contains("X-Amz-") || query.contains("Signature") || query.contains("Credential") {
            out.push('?');
            out.push_str(REDACTED);
        } else {
            out.push_str(query);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}
