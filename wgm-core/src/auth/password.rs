//! Password rules and argon2id hashes.
//!
//! The rules and [`PasswordParams`] are always there; hashing and verification need the
//! `auth` feature (on by default).
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) made with the
//! OWASP parameters by default (m = 19 MiB, t = 2, p = 1) and a 16-byte salt from the OS
//! RNG. Verification uses the parameters stored in the hash and compares in constant time;
//! [`needs_rehash`] tells the caller to re-hash after a successful login when the stored
//! parameters differ from the current ones.
//!
#![cfg_attr(not(feature = "auth"), doc = "```ignore")]
#![cfg_attr(feature = "auth", doc = "```")]
//! use wgm_core::auth::password::{hash_password_with, needs_rehash, verify_password, PasswordParams};
//!
//! # let params = PasswordParams::insecure_for_tests(); // doctests run unoptimised
//! # let _ = "
//! let params = PasswordParams::owasp();
//! # ";
//! let phc = hash_password_with("correct horse battery staple", &params)?;
//! assert!(verify_password("correct horse battery staple", &phc)?);
//! assert!(!verify_password("correct horse battery stapler", &phc)?);
//! assert!(!needs_rehash(&phc, &params));
//! # Ok::<(), wgm_core::Error>(())
//! ```

#[cfg(feature = "auth")]
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
#[cfg(feature = "auth")]
use argon2::{Algorithm, Argon2, Params, Version};
#[cfg(feature = "auth")]
use rand::rngs::OsRng;

use crate::{Error, Result};

/// The longest password accepted, in bytes (UTF-8). Longer input is refused before
/// hashing, so a megabyte "password" costs nothing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The default minimum length, in characters (Unicode scalar values).
pub const DEFAULT_MIN_LEN: usize = 12;
/// No configuration may lower the minimum length below this (NIST SP 800-63B).
pub const FLOOR_MIN_LEN: usize = 8;

/// OWASP's argon2id memory cost, in KiB (19 MiB).
pub const OWASP_M_COST_KIB: u32 = 19 * 1024;
/// OWASP's argon2id iteration count.
pub const OWASP_T_COST: u32 = 2;
/// OWASP's argon2id parallelism.
pub const OWASP_P_COST: u32 = 1;

/// Upper bounds that catch configuration mistakes (4 GiB, 64 passes, 64 lanes).
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;

const FIELD: &str = "password";
#[cfg(feature = "auth")]
const HASH_FIELD: &str = "password_hash";

/// Parameters for password rules and argon2id hashing.
///
/// Built with [`PasswordParams::owasp`] (the default) or [`PasswordParams::new`], which
/// refuses anything weaker than OWASP's minimum. [`PasswordParams::insecure_for_tests`]
/// is the only way below it and says so in its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordParams {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    min_len: usize,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::owasp()
    }
}

impl PasswordParams {
    /// OWASP's recommendation: argon2id, m = 19 MiB, t = 2, p = 1; minimum length 12.
    pub const fn owasp() -> Self {
        Self {
            m_cost_kib: OWASP_M_COST_KIB,
            t_cost: OWASP_T_COST,
            p_cost: OWASP_P_COST,
            min_len: DEFAULT_MIN_LEN,
        }
    }

    /// Custom argon2id costs, at least OWASP's (m ≥ 19456 KiB, t ≥ 2, p ≥ 1) and within
    /// sane bounds (m ≤ 4 GiB, t ≤ 64, p ≤ 64).
    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        if !(OWASP_M_COST_KIB..=MAX_M_COST_KIB).contains(&m_cost_kib) {
            return Err(Error::invalid(
                "password_params.m_cost",
                "must be between 19456 KiB (19 MiB) and 4 GiB",
            ));
        }
        if !(OWASP_T_COST..=MAX_T_COST).contains(&t_cost) {
            return Err(Error::invalid(
                "password_params.t_cost",
                "must be between 2 and 64",
            ));
        }
        if !(OWASP_P_COST..=MAX_P_COST).contains(&p_cost) {
            return Err(Error::invalid(
                "password_params.p_cost",
                "must be between 1 and 64",
            ));
        }
        Ok(Self {
            m_cost_kib,
            t_cost,
            p_cost,
            min_len: DEFAULT_MIN_LEN,
        })
    }

    /// Set the minimum password length in characters (at least 8, at most the byte cap).
    pub fn with_min_len(mut self, min_len: usize) -> Result<Self> {
        if !(FLOOR_MIN_LEN..=MAX_PASSWORD_BYTES).contains(&min_len) {
            return Err(Error::invalid(
                "password_params.min_len",
                "must be between 8 and 1024",
            ));
        }
        self.min_len = min_len;
        Ok(self)
    }

    /// Tiny argon2id costs (m = 64 KiB, t = 1) for tests that hash many passwords in
    /// unoptimised builds. **Never use this outside tests**: such hashes are cheap to
    /// brute-force. [`needs_rehash`] reports them against any real parameters, so a hash
    /// made with them by mistake is replaced at the next login.
    pub const fn insecure_for_tests() -> Self {
        Self {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
            min_len: DEFAULT_MIN_LEN,
        }
    }

    /// Memory cost in KiB.
    pub fn m_cost_kib(&self) -> u32 {
        self.m_cost_kib
    }

    /// Number of passes.
    pub fn t_cost(&self) -> u32 {
        self.t_cost
    }

    /// Degree of parallelism.
    pub fn p_cost(&self) -> u32 {
        self.p_cost
    }

    /// Minimum password length in characters.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    #[cfg(feature = "auth")]
    fn argon2(&self) -> Result<Argon2<'static>> {
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map_err(|_| Error::invalid("password_params", "argon2 refused these costs"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Check `password` against the default rules ([`PasswordParams::owasp`]).
pub fn validate_password(password: &str) -> Result<()> {
    validate_password_with(password, &PasswordParams::owasp())
}

/// Check `password`: not empty, no NUL, at most [`MAX_PASSWORD_BYTES`] bytes, at least
/// `params.min_len()` characters. Errors name the field `password` and never the value.
pub fn validate_password_with(password: &str, params: &PasswordParams) -> Result<()> {
    if password.is_empty() {
        return Err(Error::invalid(FIELD, "must not be empty"));
    }
    if password.contains('\0') {
        return Err(Error::invalid(FIELD, "must not contain NUL characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(
            FIELD,
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    if password.chars().count() < params.min_len {
        return Err(Error::invalid(
            FIELD,
            format!("must be at least {} characters", params.min_len),
        ));
    }
    Ok(())
}

#[cfg(feature = "auth")]
/// Validate and hash `password` with the OWASP parameters; returns a PHC string.
pub fn hash_password(password: &str) -> Result<String> {
    hash_password_with(password, &PasswordParams::owasp())
}

#[cfg(feature = "auth")]
/// Validate and hash `password` with `params`; returns a PHC string.
pub fn hash_password_with(password: &str, params: &PasswordParams) -> Result<String> {
    validate_password_with(password, params)?;
    let salt = SaltString::generate(&mut OsRng);
    let hash = params
        .argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|_| Error::invalid(HASH_FIELD, "argon2 could not hash the password"))?;
    Ok(hash.to_string())
}

#[cfg(feature = "auth")]
/// Whether `password` matches the PHC string `phc` (argon2id, or argon2i/argon2d from an
/// older system), using the parameters stored in the hash; constant-time comparison.
///
/// `Ok(false)` for a wrong password (including one that could never have been set, such
/// as one over the byte cap); `Err(InvalidInput)` naming `password_hash` when `phc` is not
/// an argon2 PHC string, so a corrupt row is not mistaken for a wrong password.
pub fn verify_password(password: &str, phc: &str) -> Result<bool> {
    let parsed = parse_phc(phc)?;
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Ok(false);
    }
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(Error::invalid(
            HASH_FIELD,
            "stored hash has unusable argon2 parameters",
        )),
    }
}

#[cfg(feature = "auth")]
/// Spend the time of one verification with `params` without a stored hash, so a login
/// for an unknown user takes as long as one for a known user with a wrong password.
pub fn verify_without_hash(password: &str, params: &PasswordParams) {
    let salt = [0u8; 16];
    let mut out = [0u8; 32];
    let input = &password.as_bytes()[..password.len().min(MAX_PASSWORD_BYTES)];
    if let Ok(argon2) = params.argon2() {
        // The output is thrown away; only the work matters.
        let _ = argon2.hash_password_into(input, &salt, &mut out);
    }
}

#[cfg(feature = "auth")]
/// Whether a hash should be replaced after the next successful login: it is not
/// argon2id v19, or its costs or output length differ from `params`. A string that is not
/// an argon2 PHC string at all also needs replacing.
pub fn needs_rehash(phc: &str, params: &PasswordParams) -> bool {
    let Ok(parsed) = parse_phc(phc) else {
        return true;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed.version != Some(Version::V0x13.into())
    {
        return true;
    }
    let Ok(stored) = Params::try_from(&parsed) else {
        return true;
    };
    stored.m_cost() != params.m_cost_kib
        || stored.t_cost() != params.t_cost
        || stored.p_cost() != params.p_cost
        || parsed.hash.map(|h| h.len()) != Some(Params::DEFAULT_OUTPUT_LEN)
}

#[cfg(feature = "auth")]
fn parse_phc(phc: &str) -> Result<PasswordHash<'_>> {
    let parsed =
        PasswordHash::new(phc).map_err(|_| Error::invalid(HASH_FIELD, "is not a PHC string"))?;
    if Algorithm::try_from(parsed.algorithm).is_err() {
        return Err(Error::invalid(HASH_FIELD, "is not an argon2 hash"));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(Error::invalid(HASH_FIELD, "has no salt or no hash"));
    }
    Ok(parsed)
}

#[cfg(all(test, feature = "auth"))]
mod tests {
    use super::*;

    const FAST: PasswordParams = PasswordParams::insecure_for_tests();

    fn invalid_reason(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!(field, "password");
                reason.into_owned()
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn rules_reject_each_bad_password_by_name() {
        assert!(invalid_reason(validate_password("")).contains("empty"));
        assert!(invalid_reason(validate_password("abcdefghijk")).contains("at least 12"));
        assert!(invalid_reason(validate_password("abcdefgh\0ijklmnop")).contains("NUL"));
        let long = "a".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(invalid_reason(validate_password(&long)).contains("1024 bytes"));
        // The cap is on bytes: 342 three-byte characters are 1026 bytes.
        assert!(invalid_reason(validate_password(&"€".repeat(342))).contains("1024 bytes"));
        // Length counts characters, not bytes: 12 two-byte characters pass, 11 do not.
        assert!(validate_password(&"é".repeat(12)).is_ok());
        assert!(invalid_reason(validate_password(&"é".repeat(11))).contains("at least 12"));
        assert!(validate_password(&"a".repeat(MAX_PASSWORD_BYTES)).is_ok());
        assert!(validate_password("twelve chars").is_ok());
        // Errors never contain the password.
        let e = validate_password("secretpw").unwrap_err().to_string();
        assert!(!e.contains("secretpw"));
    }

    #[test]
    fn params_refuse_weaker_than_owasp() {
        assert_eq!(PasswordParams::default(), PasswordParams::owasp());
        assert!(PasswordParams::new(OWASP_M_COST_KIB, OWASP_T_COST, OWASP_P_COST).is_ok());
        assert!(PasswordParams::new(OWASP_M_COST_KIB - 1, 2, 1).is_err());
        assert!(PasswordParams::new(OWASP_M_COST_KIB, 1, 1).is_err());
        assert!(PasswordParams::new(OWASP_M_COST_KIB, 2, 0).is_err());
        assert!(PasswordParams::new(u32::MAX, 2, 1).is_err());
        assert!(PasswordParams::owasp().with_min_len(7).is_err());
        let p = PasswordParams::owasp().with_min_len(16).unwrap();
        assert_eq!(p.min_len(), 16);
        assert!(validate_password_with("fifteen chars!!", &p).is_err());
    }

    #[test]
    fn owasp_hash_round_trip_at_real_parameters() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc).unwrap());
        assert!(!verify_password("correct horse battery stapLe", &phc).unwrap());
        assert!(!needs_rehash(&phc, &PasswordParams::owasp()));
    }

    #[test]
    fn salts_differ_and_wrong_passwords_fail() {
        let a = hash_password_with("same password here", &FAST).unwrap();
        let b = hash_password_with("same password here", &FAST).unwrap();
        assert_ne!(a, b);
        assert!(verify_password("same password here", &a).unwrap());
        assert!(verify_password("same password here", &b).unwrap());
        assert!(!verify_password("", &a).unwrap());
        assert!(!verify_password(&"x".repeat(MAX_PASSWORD_BYTES + 1), &a).unwrap());
        assert!(!verify_password("same password herE", &a).unwrap());
    }

    #[test]
    fn hashing_validates_first() {
        assert!(matches!(
            hash_password_with("short", &FAST),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            hash_password_with("has a \0 in the middle", &FAST),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn rehash_on_parameter_upgrade() {
        let weak = hash_password_with("upgrade me please", &FAST).unwrap();
        assert!(needs_rehash(&weak, &PasswordParams::owasp()));
        assert!(!needs_rehash(&weak, &FAST));
        let stronger = PasswordParams::new(OWASP_M_COST_KIB, 3, 1).unwrap();
        assert!(needs_rehash(&weak, &stronger));
        // argon2i (older systems) verifies but is flagged for rehash.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"legacy password!", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(verify_password("legacy password!", &argon2i).unwrap());
        assert!(needs_rehash(&argon2i, &FAST));
        assert!(needs_rehash("not a hash", &FAST));
    }

    #[test]
    fn corrupt_hashes_are_errors_not_mismatches() {
        for bad in [
            "",
            "plaintext",
            "$2b$12$abcdefghijklmnopqrstuuAbCdEfGhIjKlMnOpQrStUvWxYz01234",
            "$argon2id$v=19$m=64,t=1,p=1",
        ] {
            let e = verify_password("whatever password", bad).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidInput { field, .. } if field == "password_hash"),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn verify_without_hash_does_not_panic() {
        verify_without_hash("anything at all", &FAST);
        verify_without_hash(&"x".repeat(5000), &FAST);
    }
}
