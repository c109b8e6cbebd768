//! HPKE (RFC 9180), the part Lifeboat uses: single-shot seal and open with
//! DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256, in base mode (the root keys sealed to a
//! write-only repository's identity) and PSK mode (frames and manifests of a write-only
//! repository, where the PSK is derived from the repository's root key, so that knowing the
//! public recipient is not enough to forge an object).
//!
//! Written here on ring's HMAC and AEADs and x25519-dalek, rather than taken from the `hpke`
//! crate, because that crate brings a second X25519, a second AES-GCM and an older
//! `rand_core` into the build; these lines are checked against RFC 9180's own test vectors
//! (Appendix A, base and PSK modes) in the tests below.

use ring::{aead, hmac};
use zeroize::Zeroize;

const KEM_ID: u16 = 0x0020; // DHKEM(X25519, HKDF-SHA256)
const KDF_ID: u16 = 0x0001; // HKDF-SHA256
const N_SECRET: usize = 32;

/// The AEAD of a suite. Lifeboat writes AES-256-GCM; the others are here so the code can be
/// checked against the RFC's vectors, which do not cover X25519 with AES-256-GCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    #[cfg_attr(not(test), allow(dead_code))]
    Aes128Gcm,
    Aes256Gcm,
    #[cfg_attr(not(test), allow(dead_code))]
    ChaCha20Poly1305,
}

impl Aead {
    fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 1,
            Aead::Aes256Gcm => 2,
            Aead::ChaCha20Poly1305 => 3,
        }
    }
    fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm => 16,
            _ => 32,
        }
    }
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Aead::Aes128Gcm => &aead::AES_128_GCM,
            Aead::Aes256Gcm => &aead::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// Base mode (no PSK) or PSK mode with a key and its id (both non-empty, RFC 9180 5.1).
#[derive(Clone, Copy)]
pub enum Psk<'a> {
    None,
    Key { psk: &'a [u8], id: &'a [u8] },
}

fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn hkdf_expand(prk: &[u8; 32], info: &[u8], out: &mut [u8]) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut previous: Vec<u8> = Vec::new();
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&previous);
        ctx.update(info);
        ctx.update(&[(i + 1) as u8]);
        previous = ctx.sign().as_ref().to_vec();
        chunk.copy_from_slice(&previous[..chunk.len()]);
    }
    previous.zeroize();
}

fn labeled_extract(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> [u8; 32] {
    let mut labeled = Vec::with_capacity(7 + suite_id.len() + label.len() + ikm.len());
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite_id);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(ikm);
    let prk = hkdf_extract(salt, &labeled);
    labeled.zeroize();
    prk
}

fn labeled_expand(suite_id: &[u8], prk: &[u8; 32], label: &[u8], info: &[u8], out: &mut [u8]) {
    let mut labeled = Vec::with_capacity(9 + suite_id.len() + label.len() + info.len());
    labeled.extend_from_slice(&(out.len() as u16).to_be_bytes());
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite_id);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(info);
    hkdf_expand(prk, &labeled, out);
}

fn kem_suite_id() -> Vec<u8> {
    let mut id = b"KEM".to_vec();
    id.extend_from_slice(&KEM_ID.to_be_bytes());
    id
}

fn hpke_suite_id(aead: Aead) -> Vec<u8> {
    let mut id = b"HPKE".to_vec();
    id.extend_from_slice(&KEM_ID.to_be_bytes());
    id.extend_from_slice(&KDF_ID.to_be_bytes());
    id.extend_from_slice(&aead.id().to_be_bytes());
    id
}

/// The KEM's shared secret from a Diffie-Hellman output; None for an all-zero output (a
/// low-order public key), which RFC 9180 7.1.4 requires to be rejected.
fn extract_and_expand(
    dh: &x25519_dalek::SharedSecret,
    enc: &[u8; 32],
    pk_r: &[u8; 32],
) -> Option<[u8; 32]> {
    if !dh.was_contributory() {
        return None;
    }
    let mut kem_context = [0u8; 64];
    kem_context[..32].copy_from_slice(enc);
    kem_context[32..].copy_from_slice(pk_r);
    let suite = kem_suite_id();
    let mut prk = labeled_extract(&suite, b"", b"eae_prk", dh.as_bytes());
    let mut shared = [0u8; N_SECRET];
    labeled_expand(&suite, &prk, b"shared_secret", &kem_context, &mut shared);
    prk.zeroize();
    Some(shared)
}

/// The AEAD key and base nonce of a context (RFC 9180 5.1).
struct Context {
    key: Vec<u8>,
    nonce: [u8; 12],
}

impl Drop for Context {
    fn drop(&mut self) {
        self.key.zeroize();
        self.nonce.zeroize();
    }
}

fn key_schedule(aead: Aead, shared: &[u8; 32], info: &[u8], psk: Psk) -> Context {
    let suite = hpke_suite_id(aead);
    let (mode, psk, psk_id): (u8, &[u8], &[u8]) = match psk {
        Psk::None => (0, b"", b""),
        Psk::Key { psk, id } => (1, psk, id),
    };
    let psk_id_hash = labeled_extract(&suite, b"", b"psk_id_hash", psk_id);
    let info_hash = labeled_extract(&suite, b"", b"info_hash", info);
    let mut context = Vec::with_capacity(65);
    context.push(mode);
    context.extend_from_slice(&psk_id_hash);
    context.extend_from_slice(&info_hash);
    let mut secret = labeled_extract(&suite, shared, b"secret", psk);
    let mut key = vec![0u8; aead.key_len()];
    labeled_expand(&suite, &secret, b"key", &context, &mut key);
    let mut nonce = [0u8; 12];
    labeled_expand(&suite, &secret, b"base_nonce", &context, &mut nonce);
    secret.zeroize();
    Context { key, nonce }
}

fn aead_key(aead: Aead, key: &[u8]) -> aead::LessSafeKey {
    // Keys come from the key schedule with the algorithm's own length.
    aead::LessSafeKey::new(
        aead::UnboundKey::new(aead.algorithm(), key)
            .unwrap_or_else(|_| unreachable!("key length matches the AEAD")),
    )
}

/// The context of a Diffie-Hellman result between the encapsulated key `enc` and the
/// recipient `pk_r` (the same on both sides); None for a low-order point.
fn context(
    aead: Aead,
    dh: &x25519_dalek::SharedSecret,
    enc: &[u8; 32],
    pk_r: &[u8; 32],
    info: &[u8],
    psk: Psk,
) -> Option<Context> {
    let mut shared = extract_and_expand(dh, enc, pk_r)?;
    let ctx = key_schedule(aead, &shared, info, psk);
    shared.zeroize();
    Some(ctx)
}

/// Seal `plain` to `pk_r` with the ephemeral secret `sk_e`: returns the encapsulated key and
/// the ciphertext with its tag. None if `pk_r` is a low-order point.
pub fn seal_with(
    aead: Aead,
    sk_e: [u8; 32],
    pk_r: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plain: &[u8],
    psk: Psk,
) -> Option<([u8; 32], Vec<u8>)> {
    let secret = x25519_dalek::StaticSecret::from(sk_e);
    let enc = x25519_dalek::PublicKey::from(&secret).to_bytes();
    let dh = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*pk_r));
    let ctx = context(aead, &dh, &enc, pk_r, info, psk)?;
    let mut buf = plain.to_vec();
    aead_key(aead, &ctx.key)
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(ctx.nonce),
            aead::Aad::from(aad),
            &mut buf,
        )
        .ok()?;
    Some((enc, buf))
}

/// Seal with a fresh ephemeral key.
pub fn seal(
    aead: Aead,
    pk_r: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plain: &[u8],
    psk: Psk,
) -> Option<([u8; 32], Vec<u8>)> {
    seal_with(aead, rand::random(), pk_r, info, aad, plain, psk)
}

/// Open what [`seal`] produced with the recipient's secret `sk_r`; None if anything differs
/// (key, encapsulation, info, associated data, PSK, a single bit of the ciphertext).
pub fn open(
    aead: Aead,
    sk_r: &[u8; 32],
    enc: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    sealed: &[u8],
    psk: Psk,
) -> Option<Vec<u8>> {
    let secret = x25519_dalek::StaticSecret::from(*sk_r);
    let pk_r = x25519_dalek::PublicKey::from(&secret).to_bytes();
    let dh = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*enc));
    let ctx = context(aead, &dh, enc, &pk_r, info, psk)?;
    let mut buf = sealed.to_vec();
    let len = aead_key(aead, &ctx.key)
        .open_in_place(
            aead::Nonce::assume_unique_for_key(ctx.nonce),
            aead::Aad::from(aad),
            &mut buf,
        )
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }
    fn h32(s: &str) -> [u8; 32] {
        h(s).try_into().unwrap()
    }

    /// One vector of RFC 9180 Appendix A: the first encryption of the context, with the
    /// intermediate values the RFC publishes.
    struct Vector {
        aead: Aead,
        psk: Option<(&'static str, &'static str)>,
        sk_rm: &'static str,
        sk_em: &'static str,
        pk_rm: &'static str,
        enc: &'static str,
        shared: &'static str,
        key: &'static str,
        nonce: &'static str,
        ciphertext: &'static str,
    }

    const INFO: &str = "4f6465206f6e2061204772656369616e2055726e"; // "Ode on a Grecian Urn"
    const AAD: &str = "436f756e742d30"; // "Count-0"
    const PLAIN: &str = "4265617574792069732074727574682c20747275746820626561757479";
    const PSK: (&str, &str) = (
        "0247fd33b913760fa1fa51e1892d9f307fbe65eb171e8132c2af18555a738b82",
        "456e6e796e20447572696e206172616e204d6f726961",
    );

    const VECTORS: [Vector; 3] = [
        // A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode.
        Vector {
            aead: Aead::Aes128Gcm,
            psk: None,
            sk_rm: "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
            sk_em: "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
            pk_rm: "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
            enc: "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
            shared: "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
            key: "4531685d41d65f03dc48f6b8302c05b0",
            nonce: "56d890e5accaaf011cff4b7d",
            ciphertext: "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
        },
        // A.1.2: the same suite in PSK mode.
        Vector {
            aead: Aead::Aes128Gcm,
            psk: Some(PSK),
            sk_rm: "c5eb01eb457fe6c6f57577c5413b931550a162c71a03ac8d196babbd4e5ce0fd",
            sk_em: "463426a9ffb42bb17dbe6044b9abd1d4e4d95f9041cef0e99d7824eef2b6f588",
            pk_rm: "9fed7e8c17387560e92cc6462a68049657246a09bfa8ade7aefe589672016366",
            enc: "0ad0950d9fb9588e59690b74f1237ecdf1d775cd60be2eca57af5a4b0471c91b",
            shared: "727699f009ffe3c076315019c69648366b69171439bd7dd0807743bde76986cd",
            key: "15026dba546e3ae05836fc7de5a7bb26",
            nonce: "9518635eba129d5ce0914555",
            ciphertext: "e52c6fed7f758d0cf7145689f21bc1be6ec9ea097fef4e959440012f4feb73fb611b946199e681f4cfc34db8ea",
        },
        // A.2.2: ChaCha20-Poly1305 in PSK mode (a 32-byte AEAD key, like AES-256-GCM's).
        Vector {
            aead: Aead::ChaCha20Poly1305,
            psk: Some(PSK),
            sk_rm: "77d114e0212be51cb1d76fa99dd41cfd4d0166b08caa09074430a6c59ef17879",
            sk_em: "0c35fdf49df7aa01cd330049332c40411ebba36e0c718ebc3edf5845795f6321",
            pk_rm: "13640af826b722fc04feaa4de2f28fbd5ecc03623b317834e7ff4120dbe73062",
            enc: "2261299c3f40a9afc133b969a97f05e95be2c514e54f3de26cbe5644ac735b04",
            shared: "4be079c5e77779d0215b3f689595d59e3e9b0455d55662d1f3666ec606e50ea7",
            key: "600d2fdb0313a7e5c86a9ce9221cd95bed069862421744cfb4ab9d7203a9c019",
            nonce: "112e0465562045b7368653e7",
            ciphertext: "4a177f9c0d6f15cfdf533fb65bf84aecdc6ab16b8b85b4cf65a370e07fc1d78d28fb073214525276f4a89608ff",
        },
    ];

    #[test]
    fn hkdf_matches_rfc_5869() {
        // Test case 1.
        let prk = hkdf_extract(
            &hex::decode("000102030405060708090a0b0c").unwrap(),
            &[0x0b; 22],
        );
        assert_eq!(
            hex::encode(prk),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
        );
        let mut okm = [0u8; 42];
        hkdf_expand(
            &prk,
            &hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap(),
            &mut okm,
        );
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn rfc_9180_vectors_reproduce() {
        for v in &VECTORS {
            let (psk_bytes, id_bytes) = v.psk.map(|(p, i)| (h(p), h(i))).unwrap_or_default();
            let psk = match v.psk {
                None => Psk::None,
                Some(_) => Psk::Key {
                    psk: &psk_bytes,
                    id: &id_bytes,
                },
            };
            // Intermediate values: the KEM's shared secret, then the key schedule.
            let sk_e = x25519_dalek::StaticSecret::from(h32(v.sk_em));
            let enc = x25519_dalek::PublicKey::from(&sk_e).to_bytes();
            assert_eq!(hex::encode(enc), v.enc, "{:?} enc", v.aead);
            let pk_r = h32(v.pk_rm);
            let dh = sk_e.diffie_hellman(&x25519_dalek::PublicKey::from(pk_r));
            let shared = extract_and_expand(&dh, &enc, &pk_r).unwrap();
            assert_eq!(hex::encode(shared), v.shared, "{:?} shared secret", v.aead);
            let ctx = key_schedule(v.aead, &shared, &h(INFO), psk);
            assert_eq!(hex::encode(&ctx.key), v.key, "{:?} key", v.aead);
            assert_eq!(hex::encode(ctx.nonce), v.nonce, "{:?} nonce", v.aead);
            // The whole single-shot seal, and open by the recipient.
            let (enc2, ct) = seal_with(
                v.aead,
                h32(v.sk_em),
                &pk_r,
                &h(INFO),
                &h(AAD),
                &h(PLAIN),
                psk,
            )
            .unwrap();
            assert_eq!(hex::encode(enc2), v.enc);
            assert_eq!(hex::encode(&ct), v.ciphertext, "{:?} ciphertext", v.aead);
            let plain = open(v.aead, &h32(v.sk_rm), &enc2, &h(INFO), &h(AAD), &ct, psk);
            assert_eq!(plain, Some(h(PLAIN)));
        }
    }

    #[test]
    fn anything_different_fails_to_open() {
        let sk_r: [u8; 32] = rand::random();
        let pk_r =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(sk_r)).to_bytes();
        let psk = Psk::Key {
            psk: b"0123456789abcdef0123456789abcdef",
            id: b"lifeboat",
        };
        let (enc, ct) = seal(Aead::Aes256Gcm, &pk_r, b"info", b"aad", b"secret", psk).unwrap();
        let ok = |sk: &[u8; 32], enc: &[u8; 32], info: &[u8], aad: &[u8], ct: &[u8], psk| {
            open(Aead::Aes256Gcm, sk, enc, info, aad, ct, psk).is_some()
        };
        assert!(ok(&sk_r, &enc, b"info", b"aad", &ct, psk));
        let other_psk = Psk::Key {
            psk: b"1123456789abcdef0123456789abcdef",
            id: b"lifeboat",
        };
        assert!(!ok(&sk_r, &enc, b"info", b"aad", &ct, other_psk), "psk");
        assert!(
            !ok(&sk_r, &enc, b"info", b"aad", &ct, Psk::None),
            "base mode"
        );
        assert!(!ok(&sk_r, &enc, b"infO", b"aad", &ct, psk), "info");
        assert!(!ok(&sk_r, &enc, b"info", b"aaD", &ct, psk), "aad");
        assert!(!ok(&rand::random(), &enc, b"info", b"aad", &ct, psk), "key");
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(!ok(&sk_r, &enc, b"info", b"aad", &bad, psk), "byte {i}");
        }
        // A low-order point (all zero) is refused on both sides.
        assert!(seal(Aead::Aes256Gcm, &[0; 32], b"", b"", b"x", Psk::None).is_none());
        assert!(!ok(&sk_r, &[0; 32], b"info", b"aad", &ct, psk));
    }
}
