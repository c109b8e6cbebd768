# An independent implementation of Lifeboat's format-2 envelopes, written from docs/FORMAT.md
# with pyca/cryptography and the blake3 package (pip install cryptography blake3): it prints the
# test vectors FORMAT.md publishes, which src/repo/crypto.rs checks too.
import blake3, hmac, hashlib
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives import serialization

id_key, root_key, data_key = b"\x11"*32, b"\x22"*32, b"\x33"*32
nonce = b"\x44"*24
def derive(ctx, material): return blake3.blake3(material, derive_key_context=ctx).digest()
header_key = derive("lifeboat 2026-12 header mask v2", id_key)
psk = derive("lifeboat 2026-12 write-only psk v2", root_key)
fp = derive("lifeboat 2026-12 key fingerprint v2", root_key + id_key)[:16].hex()
print("header key:", header_key.hex()); print("write-only psk:", psk.hex()); print("key fingerprint:", fp)
def mask(n): return blake3.blake3(b"lifeboat header mask v2" + nonce, key=header_key).digest(length=n)
name, plain = b"01abc", b'{"hello":1}'
# symmetric
header = bytes([3, 4]) + (0).to_bytes(4, "little")
aad = b"lifeboat v2" + nonce + header + name
mk = blake3.blake3(b"lifeboat aes-256-gcm message key v1" + nonce, key=data_key).digest()
ct = AESGCM(mk).encrypt(b"\0"*12, plain, aad)
sym = nonce + bytes(a ^ b for a, b in zip(header, mask(6))) + ct
print("symmetric envelope:", sym.hex())
# write-only: HPKE RFC 9180 mode_psk, DHKEM(X25519,HKDF-SHA256), HKDF-SHA256, AES-256-GCM
ident = X25519PrivateKey.from_private_bytes(b"\x55"*32)
pkR = ident.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
print("recipient:", pkR.hex())
eph = X25519PrivateKey.from_private_bytes(b"\x66"*32)
enc = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
dh = eph.exchange(X25519PublicKey.from_public_bytes(pkR))
def ext(salt, ikm): return hmac.new(salt, ikm, hashlib.sha256).digest()
def exp(prk, info, L):
    out, t, i = b"", b"", 1
    while len(out) < L:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest(); out += t; i += 1
    return out[:L]
kem = b"KEM" + (0x20).to_bytes(2, "big")
suite = b"HPKE" + (0x20).to_bytes(2,"big") + (1).to_bytes(2,"big") + (2).to_bytes(2,"big")
def lext(sid, salt, label, ikm): return ext(salt, b"HPKE-v1" + sid + label + ikm)
def lexp(sid, prk, label, info, L): return exp(prk, L.to_bytes(2,"big") + b"HPKE-v1" + sid + label + info, L)
shared = lexp(kem, lext(kem, b"", b"eae_prk", dh), b"shared_secret", enc + pkR, 32)
info = b"lifeboat v2 sealed object" + bytes([4])
ctx = bytes([1]) + lext(suite, b"", b"psk_id_hash", b"lifeboat write-only v2") + lext(suite, b"", b"info_hash", info)
secret = lext(suite, shared, b"secret", psk)
key, base_nonce = lexp(suite, secret, b"key", ctx, 32), lexp(suite, secret, b"base_nonce", ctx, 12)
header = bytes([4, 4]) + enc
aad = b"lifeboat v2" + nonce + header + name
ct = AESGCM(key).encrypt(base_nonce, plain, aad)
wo = nonce + bytes(a ^ b for a, b in zip(header, mask(34))) + ct
print("write-only envelope:", wo.hex())
