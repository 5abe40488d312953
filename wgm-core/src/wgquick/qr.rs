//! QR codes of a (client) configuration, for the `WireGuard` mobile apps.
//!
//! The text is encoded as bytes, as the apps expect. The terminal form uses error
//! correction level L, as `qrencode` does by default, to keep the symbol small: a
//! dual-stack client config with DNS, a preshared key and an endpoint (350–450 bytes)
//! gives a version 12–14 symbol, 73–81 columns with its quiet zone. The SVG and PNG forms
//! are not limited by a terminal's width and use level M, which survives more damage when
//! printed or shown on a scratched screen.
//!
//! The QR library keeps its own copies of the encoded bytes while it works; those copies
//! are not zeroized. Render QR codes of configs holding private keys only on demand.

use std::io::Cursor;

use image::{ImageEncoder as _, Luma};
use qrcode::{EcLevel, QrCode};

use crate::{Error, Result};

/// Quiet zone around the symbol, in modules (ISO/IEC 18004 asks for 4).
const QUIET: usize = 4;
/// PNG pixels per module.
const PNG_MODULE_PX: u32 = 8;

fn encode(text: &str, level: EcLevel) -> Result<QrCode> {
    QrCode::with_error_correction_level(text.as_bytes(), level).map_err(|e| match e {
        qrcode::types::QrError::DataTooLong => Error::invalid(
            "qr",
            "text is too long for a QR code (at most about 2900 bytes)",
        ),
        _ => Error::invalid("qr", "text cannot be encoded as a QR code"),
    })
}

/// The QR code of `text` as lines of Unicode half blocks (`█ ▀ ▄` and spaces), two
/// modules per character cell vertically, with a quiet zone of 4 modules, ending in a
/// newline.
///
/// Light modules are drawn as blocks and dark ones as spaces, like `qrencode -t UTF8`,
/// so the code reads correctly on the usual light-on-dark terminal.
///
/// ```
/// let qr = wgm_core::wgquick::qr_terminal("[Interface]\n")?;
/// let lines: Vec<&str> = qr.lines().collect();
/// // Version 1 with level L: 21 modules + 8 of quiet zone = 29 columns, 15 lines.
/// assert_eq!(lines[0].chars().count(), 29);
/// assert_eq!(lines.len(), 15);
/// assert!(lines[0].chars().all(|c| c == '█'));
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn qr_terminal(text: &str) -> Result<String> {
    let code = encode(text, EcLevel::L)?;
    let width = code.width();
    let colors = code.to_colors();
    let total = width + 2 * QUIET;
    // Light (true) for the quiet zone and light modules; rows past the bottom are dark,
    // so the last half-filled line ends in the terminal's own background.
    let light = |x: usize, y: usize| -> bool {
        if y >= total {
            return false;
        }
        if x < QUIET || y < QUIET || x >= QUIET + width || y >= QUIET + width {
            return true;
        }
        colors[(y - QUIET) * width + (x - QUIET)] == qrcode::Color::Light
    };
    let mut out = String::with_capacity(total.div_ceil(2) * (total * 3 + 1));
    for y in (0..total).step_by(2) {
        for x in 0..total {
            out.push(match (light(x, y), light(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Ok(out)
}

/// The QR code of `text` as an SVG document (black on white, quiet zone included,
/// 8 units per module).
///
/// ```
/// let svg = wgm_core::wgquick::qr_svg("[Interface]\n")?;
/// assert!(svg.starts_with("<?xml") && svg.ends_with("</svg>"));
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn qr_svg(text: &str) -> Result<String> {
    let code = encode(text, EcLevel::M)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .module_dimensions(PNG_MODULE_PX, PNG_MODULE_PX)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

/// The QR code of `text` as a grayscale PNG image, 8 pixels per module, quiet zone
/// included.
///
/// ```
/// let png = wgm_core::wgquick::qr_png("[Interface]\n")?;
/// assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn qr_png(text: &str) -> Result<Vec<u8>> {
    let code = encode(text, EcLevel::M)?;
    let image = code
        .render::<Luma<u8>>()
        .module_dimensions(PNG_MODULE_PX, PNG_MODULE_PX)
        .build();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(Cursor::new(&mut png))
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(|e| Error::invalid("qr", format!("PNG encoding failed: {e}")))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client config of typical size: dual stack, DNS, PSK, IPv6 endpoint, a name.
    const CLIENT: &str = "[Interface]\n# Name = alice-laptop\n\
        PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
        Address = 10.8.0.2/32, fd42:42:42::2/128\n\
        DNS = fd42:42:42::1, 10.8.0.1, corp.example.com\nMTU = 1420\n\n\
        [Peer]\n# Name = vpn.example.com\n\
        PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
        PresharedKey = /UwcSPg38hW/D9Y3tcS1FOV0K1wuURMbS0sesJEP5ak=\n\
        AllowedIPs = 0.0.0.0/0, ::/0\n\
        Endpoint = [2001:db8:1234:5678::1]:51820\nPersistentKeepalive = 25\n";

    #[test]
    fn terminal_code_of_a_client_config_has_quiet_zone_and_finder() {
        let qr = qr_terminal(CLIENT).unwrap();
        let code = encode(CLIENT, EcLevel::L).unwrap();
        let total = code.width() + 2 * QUIET;
        let lines: Vec<&str> = qr.lines().collect();
        // 437 bytes at level L: version 14, 73 modules.
        assert_eq!(code.version(), qrcode::Version::Normal(14));
        assert_eq!(total, 81);
        assert_eq!(lines.len(), total.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == total));
        assert!(qr.ends_with('\n'));
        // Quiet zone: the first two lines and the outer four columns are light.
        assert!(lines[..2].iter().all(|l| l.chars().all(|c| c == '█')));
        for l in &lines[..lines.len() - 1] {
            let cells: Vec<char> = l.chars().collect();
            assert!(cells[..QUIET]
                .iter()
                .chain(&cells[total - QUIET..])
                .all(|&c| c == '█'));
        }
        // The last line's lower half is past the symbol: upper half blocks only.
        assert!(lines[lines.len() - 1].chars().all(|c| c == '▀'));
        // The top-left finder pattern: its first two rows are a dark row of 7 modules
        // over dark, light x5, dark.
        let row2: Vec<char> = lines[2].chars().collect();
        assert_eq!(row2[QUIET], ' ', "{}", lines[2]);
        assert!(
            row2[QUIET + 1..QUIET + 6].iter().all(|&c| c == '▄'),
            "{}",
            lines[2]
        );
        assert_eq!(row2[QUIET + 6], ' ', "{}", lines[2]);
    }

    #[test]
    fn svg_has_the_expected_size() {
        let svg = qr_svg(CLIENT).unwrap();
        let code = encode(CLIENT, EcLevel::M).unwrap();
        let px = (code.width() + 2 * QUIET) * PNG_MODULE_PX as usize;
        assert!(
            svg.contains(&format!(r#"width="{px}" height="{px}""#)),
            "{svg:.300}"
        );
        assert!(svg.contains("<path"));
    }

    #[test]
    fn png_has_signature_and_size() {
        let png = qr_png(CLIENT).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height as big-endian u32 at bytes 16..24.
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        let code = encode(CLIENT, EcLevel::M).unwrap();
        let expected = (code.width() + 2 * QUIET) as u32 * PNG_MODULE_PX;
        assert_eq!((w, h), (expected, expected));
        assert_eq!(&png[12..16], b"IHDR");
    }

    #[test]
    fn too_long_is_an_error() {
        let text = "x".repeat(8000);
        assert!(matches!(
            qr_terminal(&text),
            Err(Error::InvalidInput { .. })
        ));
        assert!(qr_svg(&text).is_err());
        assert!(qr_png(&text).is_err());
    }
}
