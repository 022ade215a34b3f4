//! Names of chains, functions and replicas, checked the same way wherever they come from (a
//! chain file, a manifest, a container's annotations).

/// The longest chain name.
pub const MAX_CHAIN_NAME: usize = 48;
/// The longest function name.
pub const MAX_FUNCTION_NAME: usize = 48;

/// Checks a name: 1 to `max` lowercase letters, digits and '-', not leading with '-'. The
/// error says what is wrong, without saying what the name is for.
pub fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > max {
        return Err(format!("{name:?} is longer than {max} characters"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        return Err(format!(
            "{name:?} may only hold lowercase letters, digits and '-' (not leading)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_words_with_dashes() {
        assert!(check_name("parse-2", MAX_FUNCTION_NAME).is_ok());
        for bad in ["", "-x", "Upper", "a_b", "a.b", "a/b"] {
            assert!(check_name(bad, MAX_FUNCTION_NAME).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(48), 48).is_ok());
        assert!(check_name(&"a".repeat(49), 48)
            .unwrap_err()
            .contains("longer than 48"));
    }
}
