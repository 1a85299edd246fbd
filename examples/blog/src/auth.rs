//! Password hashing (PBKDF2-HMAC-SHA256) and JWT (HS256), hand-rolled on
//! `hmac` + `sha2` to keep the dependency tree small.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const ITERATIONS: u32 = 10_000;
const TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// `pbkdf2-sha256$<iterations>$<salt>$<hash>`.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's random source");
    let hash = derive(password, &salt, ITERATIONS);
    format!(
        "pbkdf2-sha256${ITERATIONS}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash)
    )
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(iterations), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(hash)) = (
        iterations.parse::<u32>(),
        STANDARD_NO_PAD.decode(salt),
        STANDARD_NO_PAD.decode(hash),
    ) else {
        return false;
    };
    let computed = derive(password, &salt, iterations);
    computed.len() == hash.len()
        && computed
            .iter()
            .zip(&hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn derive(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// A signed HS256 token for this user.
pub fn sign_token(secret: &[u8], user_id: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "sub": user_id.to_string(),
        "exp": now_secs() + TOKEN_LIFETIME_SECS,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// The user id of a valid, unexpired token.
pub fn verify_token(secret: &[u8], token: &str) -> Option<i64> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let (header, payload) = signing_input.split_once('.')?;
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header.get("alg")?.as_str()? != "HS256" {
        return None;
    }
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?)
        .ok()?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    if claims.get("exp")?.as_u64()? < now_secs() {
        return None;
    }
    claims.get("sub")?.as_str()?.parse().ok()
}
