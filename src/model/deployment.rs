//! Deployment states and targets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a deployment runs: `queued` (files missing) → `building` → `ready`, or `error`;
/// `canceled` before it was ready, `deleted` after. All but the first two are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for files to be uploaded.
    Queued,
    /// All files present; the version manifest is being assembled.
    Building,
    /// Immutable and servable.
    Ready,
    /// The build failed; see the deployment's error message.
    Error,
    /// Stopped by a caller before it was ready; never promotable.
    Canceled,
    /// Removed by a caller or by retention: no longer routed, its files may be collected.
    Deleted,
}

impl Status {
    /// Whether the deployment will never change state again (deletion aside).
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Queued | Status::Building)
    }
}

/// Whether a deployment goes live on the production hosts when ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Only its own preview URL.
    #[default]
    Preview,
    /// Promoted automatically once ready.
    Production,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident => $s:literal),+ }) => {
        impl $t {
            /// The lowercase wire and storage form.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err(format!("unknown {}: {s:?}", stringify!($t).to_lowercase())),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(Status {
    Queued => "queued", Building => "building", Ready => "ready", Error => "error",
    Canceled => "canceled", Deleted => "deleted"
});
str_enum!(Target { Preview => "preview", Production => "production" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_round_trip() {
        for s in [
            Status::Queued,
            Status::Building,
            Status::Ready,
            Status::Error,
            Status::Canceled,
            Status::Deleted,
        ] {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!("production".parse::<Target>().unwrap(), Target::Production);
        assert!("prod".parse::<Target>().is_err());
    }
}
