//! Every key parser: no panic on any input, and every accepted text is the one canonical
//! spelling of its key (re-encoding gives the same text back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgm_core::keys::{PresharedKey, PrivateKey, PublicKey};

fuzz_target!(|data: &[u8]| {
    // Raw bytes: the first 32 as a key of each kind.
    if let Some(bytes) = data.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        let private = PrivateKey::from_bytes(bytes);
        assert_eq!(PrivateKey::from_base64(&private.expose_base64()).unwrap(), private);
        assert_eq!(PrivateKey::from_hex(&private.expose_hex()).unwrap(), private);
        let public = private.public_key();
        assert_eq!(PublicKey::from_base64(&public.to_base64()).unwrap(), public);
        if let Ok(k) = PublicKey::from_bytes(bytes) {
            assert_eq!(k.as_bytes(), &bytes);
            assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        }
        let psk = PresharedKey::from_bytes(bytes);
        assert_eq!(psk.expose_bytes(), &bytes);
        assert_eq!(PresharedKey::from_base64(&psk.expose_base64()).unwrap(), psk);
    }

    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = PrivateKey::from_base64(s) {
        // The stored key is clamped, so only the round trip of the clamped form is exact.
        assert_eq!(PrivateKey::from_base64(&k.expose_base64()).unwrap(), k);
    }
    if let Ok(k) = PrivateKey::from_hex(s) {
        assert_eq!(PrivateKey::from_hex(&k.expose_hex()).unwrap(), k);
    }
    if let Ok(k) = PublicKey::from_base64(s) {
        assert_eq!(k.to_base64(), s, "accepted base64 must be canonical");
        assert_eq!(s.parse::<PublicKey>().unwrap(), k);
    }
    if let Ok(k) = PublicKey::from_hex(s) {
        assert_eq!(k.to_hex(), s.to_ascii_lowercase());
    }
    match PresharedKey::from_base64(s) {
        Ok(k) => assert_eq!(k.expose_base64().as_str(), s, "accepted base64 must be canonical"),
        // A 44-character candidate without spaces cannot be a substring of our messages.
        Err(e) => assert!(
            s.len() != 44 || s.contains(' ') || !e.to_string().contains(s),
            "error echoes the input"
        ),
    }
    if let Ok(k) = PresharedKey::from_hex(s) {
        assert_eq!(k.expose_hex().as_str(), s.to_ascii_lowercase());
    }
});
