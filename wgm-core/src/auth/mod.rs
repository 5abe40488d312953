//! Authentication building blocks, all pure (time is passed in, randomness comes from the
//! OS RNG or a caller's RNG):
//!
//! - [`password`]: argon2id password hashes with OWASP parameters, rehash on upgrade,
//!   password rules (length, byte cap, no NUL).
//! - [`totp`]: RFC 6238 one-time codes with ±1 step and replay refusal.
//! - [`token`]: 256-bit API tokens, stored as SHA-256 hashes, compared in constant time.
//! - [`jwt`]: HS256 access and refresh tokens checked by RFC 8725 rules.
//! - [`throttle`]: login throttling per account and per source with exponential backoff.
//!
//! The `Manager` combines them with the store: it loads the user, checks the throttle,
//! verifies the password and the TOTP code, records the outcome and issues a JWT.

pub mod jwt;
pub mod password;
pub mod throttle;
pub mod token;
pub mod totp;
