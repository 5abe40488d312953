//! The wg-quick parser and renderer: no panic on any input; every document that parses
//! gives the input back byte for byte; every configuration that parses renders, and
//! `parse(render(cfg)) == cfg` with a rendering that is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgm_core::wgquick::{self, Document, ParseOptions, ParsedConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // With hooks refused (the default for imports) and allowed (so hook lines reach the
    // typed layer and the renderer).
    for allow_hooks in [false, true] {
        let opts = ParseOptions { allow_hooks, ..ParseOptions::default() };
        let doc = Document::parse(text, &opts);
        if let Ok(doc) = &doc {
            assert_eq!(doc.as_text(), text, "document round trip");
        }
        match ParsedConfig::parse(text, &opts) {
            Ok(parsed) => {
                assert!(doc.is_ok(), "a config parsed where its document did not");
                assert_eq!(&*parsed.to_text(), text, "document round trip");
                let cfg = parsed.config();
                let rendered = wgquick::render(cfg).expect("every parsed config renders");
                let again = ParsedConfig::parse(&rendered, &opts).expect("the rendering parses");
                assert_eq!(again.config(), cfg, "parse(render(cfg)) == cfg");
                assert_eq!(&*again.to_text(), &*rendered);
                let twice = wgquick::render(again.config()).expect("renders again");
                assert_eq!(&*twice, &*rendered, "rendering is stable");
            }
            Err(e) => {
                // Parse errors carry a 1-based line within the input (or one past its
                // last line for a missing section).
                if let wgm_core::Error::Parse { line, .. } = e {
                    assert!(line >= 1 && line <= text.split('\n').count().max(1));
                }
            }
        }
    }
});
