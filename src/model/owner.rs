//! Ownership and attribution (`workspace_id`, `external_*`) and free-form `metadata`, as
//! the seeds' platforms attach them to projects and deployments; with their limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Most metadata keys on one record, and the longest key and value (Stripe's limits,
/// which API users already know).
pub const METADATA_MAX_KEYS: usize = 50;
const METADATA_KEY_MAX: usize = 40;
const METADATA_VALUE_MAX: usize = 500;
/// Longest attribution value.
const ATTRIBUTION_MAX: usize = 200;

/// Free-form string labels.
pub type Metadata = BTreeMap<String, String>;

/// Who a record belongs to, in the caller's own terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribution {
    /// The caller's workspace (team, organisation) id.
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// The workspace's id in the caller's own system.
    #[serde(default)]
    pub external_workspace_id: Option<String>,
    /// The end user's id in the caller's own system.
    #[serde(default)]
    pub external_user_id: Option<String>,
    /// The project's id in the caller's own system.
    #[serde(default)]
    pub external_project_id: Option<String>,
}

impl Attribution {
    /// The fields by name, in a fixed order (storage and filters use the same names).
    pub fn fields(&self) -> [(&'static str, &Option<String>); 4] {
        [
            ("workspace_id", &self.workspace_id),
            ("external_workspace_id", &self.external_workspace_id),
            ("external_user_id", &self.external_user_id),
            ("external_project_id", &self.external_project_id),
        ]
    }

    /// Checks every value's length and characters.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in self.fields() {
            if let Some(v) = v {
                check_text(name, v, ATTRIBUTION_MAX)?;
            }
        }
        Ok(())
    }
}

fn check_text(name: &str, v: &str, max: usize) -> Result<(), String> {
    if v.is_empty() || v.len() > max {
        return Err(format!("{name} must be 1 to {max} bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{name} may not contain control characters"));
    }
    Ok(())
}

/// Checks metadata against the limits.
pub fn validate_metadata(m: &Metadata) -> Result<(), String> {
    if m.len() > METADATA_MAX_KEYS {
        return Err(format!(
            "metadata may hold at most {METADATA_MAX_KEYS} keys"
        ));
    }
    for (k, v) in m {
        check_text("a metadata key", k, METADATA_KEY_MAX)?;
        if v.len() > METADATA_VALUE_MAX {
            return Err(format!(
                "metadata value of {k:?} is longer than {METADATA_VALUE_MAX} bytes"
            ));
        }
    }
    Ok(())
}

/// Deserialises a field that may be absent (`None`: leave as is), `null` (`Some(None)`:
/// clear) or a value (`Some(Some(v))`: set), as PATCH bodies need.
pub fn patch_field<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change to attribution, metadata-style: absent leaves a field, `null` clears it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionPatch {
    #[serde(default, deserialize_with = "patch_field")]
    workspace_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    external_workspace_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    external_user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    external_project_id: Option<Option<String>>,
}

impl AttributionPatch {
    /// The names of the fields, as they appear at the top level of request bodies.
    pub const FIELDS: [&'static str; 4] = [
        "workspace_id",
        "external_workspace_id",
        "external_user_id",
        "external_project_id",
    ];

    /// `a` with this patch applied.
    pub fn apply(&self, a: &Attribution) -> Attribution {
        let pick = |p: &Option<Option<String>>, v: &Option<String>| match p {
            Some(new) => new.clone(),
            None => v.clone(),
        };
        Attribution {
            workspace_id: pick(&self.workspace_id, &a.workspace_id),
            external_workspace_id: pick(&self.external_workspace_id, &a.external_workspace_id),
            external_user_id: pick(&self.external_user_id, &a.external_user_id),
            external_project_id: pick(&self.external_project_id, &a.external_project_id),
        }
    }
}

/// Merges a metadata patch: a key set to `null` is removed, others are set.
pub fn patch_metadata(m: &Metadata, patch: &BTreeMap<String, Option<String>>) -> Metadata {
    let mut out = m.clone();
    for (k, v) in patch {
        match v {
            Some(v) => out.insert(k.clone(), v.clone()),
            None => out.remove(k),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_set_clear_and_leave() {
        let a = Attribution {
            workspace_id: Some("w1".into()),
            external_user_id: Some("u1".into()),
            ..Default::default()
        };
        let p: AttributionPatch =
            serde_json::from_str(r#"{"workspace_id":null,"external_project_id":"p9"}"#).unwrap();
        let b = p.apply(&a);
        assert_eq!(b.workspace_id, None);
        assert_eq!(b.external_user_id.as_deref(), Some("u1"));
        assert_eq!(b.external_project_id.as_deref(), Some("p9"));
        let m: Metadata = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let patch = [
            ("a".to_owned(), None),
            ("c".to_owned(), Some("3".to_owned())),
        ]
        .into();
        assert_eq!(
            patch_metadata(&m, &patch),
            [("b".into(), "2".into()), ("c".into(), "3".into())].into()
        );
    }

    #[test]
    fn limits_are_enforced() {
        let many: Metadata = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate_metadata(&many).is_err());
        assert!(validate_metadata(&[("".into(), "v".into())].into()).is_err());
        assert!(validate_metadata(&[("k".into(), "x".repeat(501))].into()).is_err());
        let bad = Attribution {
            workspace_id: Some("a\nb".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
