//! TOTP (RFC 6238) as every authenticator app reads it: HMAC-SHA-1, six
//! digits, 30-second steps; its `otpauth://` URI and that URI as a QR code
//! in SVG; and recovery codes.
//!
//! SHA-1 is what the apps implement; as an HMAC over a 160-bit secret it is
//! not weakened by SHA-1's collisions.

use ring::hmac;
use time::OffsetDateTime;

/// Bytes of a secret: 160 bits, RFC 4226's recommended length.
pub const SECRET_BYTES: usize = 20;
pub const DIGITS: usize = 6;
pub const PERIOD_SECONDS: i64 = 30;
/// Steps accepted either side of the current one (clock drift, typing).
pub const WINDOW: u64 = 1;
/// Recovery codes issued at once.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (base32: 5 bits each, 60 bits).
const RECOVERY_CHARS: usize = 12;

/// A new secret from the OS generator.
pub fn new_secret() -> Result<Vec<u8>, getrandom::Error> {
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    Ok(secret)
}

/// The secret as apps take it typed in: base32, no padding.
pub fn secret_text(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The time step `at` falls in.
pub fn step_at(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp().div_euclid(PERIOD_SECONDS)).unwrap_or(0)
}

/// The code of `step` (RFC 4226 dynamic truncation), as six ASCII digits.
pub fn code(secret: &[u8], step: u64) -> [u8; DIGITS] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let word = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    let mut value = word % 1_000_000;
    let mut digits = [b'0'; DIGITS];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
    }
    digits
}

/// Whether `text` has the shape of a TOTP code (six ASCII digits).
pub fn looks_like_code(text: &str) -> bool {
    text.len() == DIGITS && text.bytes().all(|b| b.is_ascii_digit())
}

/// The step within [`WINDOW`] of `now` whose code is `text`, newest
/// first. Every candidate is computed and compared in constant time, so
/// the answer's timing says nothing about which step, if any, matched.
pub fn matching_step(secret: &[u8], text: &str, now: OffsetDateTime) -> Option<u64> {
    if !looks_like_code(text) {
        return None;
    }
    let current = step_at(now);
    let mut found = None;
    for step in (current.saturating_sub(WINDOW)..=current + WINDOW).rev() {
        let same = subtle::ConstantTimeEq::ct_eq(&code(secret, step)[..], text.as_bytes());
        if bool::from(same) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The `otpauth://` URI apps import: issuer and account in the label and
/// the issuer again as a parameter, as Google's key URI format asks.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}",
        percent_encode(issuer),
        percent_encode(account),
        secret_text(secret),
        percent_encode(issuer),
    )
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `uri` as a QR code drawn in SVG (black modules on white, with the quiet
/// zone), for a page to show as it is.
pub fn qr_svg(uri: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// A batch of new recovery codes, as shown once (`xxxx-xxxx-xxxx`).
pub fn new_recovery_codes() -> Result<Vec<String>, getrandom::Error> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes)?;
            let text = data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
            let text = &text[..RECOVERY_CHARS];
            Ok(format!("{}-{}-{}", &text[..4], &text[4..8], &text[8..]))
        })
        .collect()
}

/// A recovery code as typed (any case, with or without dashes or spaces)
/// in its canonical form, or `None` if it cannot be one.
pub fn canonical_recovery_code(text: &str) -> Option<String> {
    let canonical: String = text
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = canonical.len() == RECOVERY_CHARS
        && canonical
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    valid.then_some(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (the eight-digit values' last six).
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, expected) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            let at = OffsetDateTime::from_unix_timestamp(time).unwrap();
            assert_eq!(&code(secret, step_at(at)), expected.as_bytes(), "at {time}");
        }
    }

    #[test]
    fn only_the_steps_beside_now_match() {
        let secret = b"12345678901234567890";
        let now = OffsetDateTime::from_unix_timestamp(1_111_111_111).unwrap();
        let step = step_at(now);
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let other = step.checked_add_signed(offset).unwrap();
            let text = String::from_utf8(code(secret, other).to_vec()).unwrap();
            assert_eq!(
                matching_step(secret, &text, now) == Some(other),
                accepted,
                "offset {offset}"
            );
        }
        assert_eq!(matching_step(secret, "12345", now), None);
        assert_eq!(matching_step(secret, "12345a", now), None);
    }

    #[test]
    fn the_uri_names_issuer_and_account_and_escapes_them() {
        let uri = otpauth_uri("notes d", "ada+1@example.com", &[0u8; 20]);
        assert_eq!(
            uri,
            "otpauth://totp/notes%20d:ada%2B1%40example.com?secret=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\
             &issuer=notes%20d&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn recovery_codes_are_distinct_and_read_back_however_typed() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
        let code = &codes[0];
        let canonical = canonical_recovery_code(code).unwrap();
        assert_eq!(
            canonical_recovery_code(&code.to_uppercase()),
            Some(canonical.clone())
        );
        assert_eq!(canonical_recovery_code(&code.replace('-', " ")), Some(canonical));
        assert_eq!(canonical_recovery_code("abcd-efgh-ijk1"), None, "1 is not base32");
        assert_eq!(canonical_recovery_code("abcd"), None);
    }
}
