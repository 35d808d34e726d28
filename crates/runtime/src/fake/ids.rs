//! Deterministic ids: 64 hex characters derived from a node's name and a sequence number, or
//! from an image reference.

/// FNV-1a, 64 bits, from `seed`.
pub(super) fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: a bijection on `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 hex characters derived from `salt`, `bytes` and `unique`. For one `salt`, distinct
/// `unique` values give distinct strings (the second quarter is a bijection of it).
pub(super) fn hex256(salt: u64, bytes: &[u8], unique: u64) -> String {
    let a = fnv1a(0xcbf2_9ce4_8422_2325 ^ salt, bytes);
    let b = mix(unique ^ salt);
    let c = mix(a ^ 0x9e37_79b9_7f4a_7c15);
    let d = mix(salt.wrapping_add(b));
    format!("{a:016x}{b:016x}{c:016x}{d:016x}")
}
