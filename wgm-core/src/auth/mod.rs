//! Authentication building blocks, all pure (time is passed in, randomness comes from the
//! OS RNG or a caller's RNG):
//!
//! Hashing, JWTs and TOTP need the `auth` feature (on by default); password rules,
//! throttling and API tokens do not.
//!
//! - [`password`]: password rules (length, byte cap, no NUL) and, with `auth`, argon2id
//!   hashes with OWASP parameters and rehash on upgrade.
//! - [`totp`] (`auth`): RFC 6238 one-time codes with ±1 step and replay refusal.
//! - [`token`]: 256-bit API tokens, stored as SHA-256 hashes, compared in constant time.
//! - [`jwt`] (`auth`): HS256 access and refresh tokens checked by RFC 8725 rules.
//! - [`throttle`]: login throttling per account and per source with exponential backoff.
//!
//! The `Manager` combines them with the store: it loads the user, checks the throttle
//! (whose records the store keeps, shared by every process on it:
//! [`crate::store::ThrottleStore`]), verifies the password and the TOTP code, records
//! the outcome and issues a JWT.

#[cfg(feature = "auth")]
pub mod jwt;
pub mod password;
pub mod throttle;
pub mod token;
#[cfg(feature = "auth")]
pub mod totp;
