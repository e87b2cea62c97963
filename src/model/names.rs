//! Project names (DNS labels) and random identifiers.

use rand::Rng;

/// Longest project name: leaves room for `-<deployment suffix>` inside one 63-byte DNS label.
pub const PROJECT_NAME_MAX: usize = 40;
/// Length of the random part of ids; 20 base-36 characters carry about 103 bits.
pub const ID_RANDOM_LEN: usize = 20;

/// Checks that `name` is a DNS label Halo accepts as a project name.
pub fn validate_project_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > PROJECT_NAME_MAX {
        return Err(format!(
            "project name must be 1 to {PROJECT_NAME_MAX} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("project name may contain only lowercase letters, digits and '-'".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("project name may not start or end with '-'".into());
    }
    Ok(())
}

/// A fresh id: `prefix` + `_` + [`ID_RANDOM_LEN`] random lowercase letters and digits.
pub fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut id = String::with_capacity(prefix.len() + 1 + ID_RANDOM_LEN);
    id.push_str(prefix);
    id.push('_');
    for _ in 0..ID_RANDOM_LEN {
        id.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    id
}

/// The random part of an id (`dpl_abc` → `abc`), used in preview host names.
pub fn id_suffix(id: &str) -> &str {
    id.split_once('_').map_or(id, |(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_dns_labels() {
        for ok in ["a", "my-app", "app2", &"x".repeat(40)] {
            assert!(validate_project_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "My-App", "-a", "a-", "a_b", "a.b", "ü", &"x".repeat(41)] {
            assert!(validate_project_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_prefixed_random_and_distinct() {
        let a = random_id("dpl");
        let b = random_id("dpl");
        assert_ne!(a, b);
        assert!(a.starts_with("dpl_"));
        assert_eq!(id_suffix(&a).len(), ID_RANDOM_LEN);
        assert!(
            id_suffix(&a)
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
