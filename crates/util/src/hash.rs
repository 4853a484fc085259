//! A stable, dependency-free content hash.

/// 64-bit FNV-1a. Stable across platforms and releases, so it can decide data splits and
/// identify a normaliser in a checkpoint; not a cryptographic hash.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
