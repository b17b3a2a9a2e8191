"""general-glo-ciphering (tag ``DB``) and its AES-128-GCM protection.

``DB | 08 | system title (8) | length (BER) | SC (1) | frame counter (4) | ciphertext [| tag (12)]``

* IV = system title ‖ frame counter (12 bytes).
* Encryption only (SC bit 5, no tag): AES-CTR from the counter block IV ‖ 00000002
  (the GCM keystream without its tag). Nothing proves the key, so the caller
  checks the plaintext (``decrypt_failed`` otherwise).
* Authenticated and encrypted (SC bits 4+5, e.g. 0x30): GCM with AAD = SC ‖ AK,
  tag = first 12 bytes of the GCM tag; mismatch -> ``auth_failed``.
* Authenticated only (SC bit 4 without bit 5): GMAC over SC ‖ AK ‖ APDU, APDU in clear.

Other APDU tags -> ``unsupported_apdu``; compression, broadcast keys and suites
other than 0/1 (AES-128) likewise. A ciphered APDU shorter than its length
field says -> ``incomplete_frame``; longer or malformed -> ``unsupported_apdu``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pipeline.dlms.axdr import Reader, encode_length
from pipeline.dlms.errors import DlmsError
from pipeline.envelope import Reason

GLO_CIPHERING = 0xDB
TAG_LEN = 12
SC_AUTHENTICATED, SC_ENCRYPTED, SC_BROADCAST, SC_COMPRESSED = 0x10, 0x20, 0x40, 0x80


@dataclass(frozen=True, slots=True)
class CipheredApdu:
    system_title: bytes
    security_control: int
    frame_counter: int
    ciphertext: bytes
    tag: bytes | None

    @property
    def system_title_hex(self) -> str:
        return self.system_title.hex().upper()

    @property
    def manufacturer(self) -> str:
        return self.system_title[:3].decode("latin-1")

    @property
    def authenticated(self) -> bool:
        return bool(self.security_control & SC_AUTHENTICATED)

    @property
    def encrypted(self) -> bool:
        return bool(self.security_control & SC_ENCRYPTED)

    @property
    def iv(self) -> bytes:
        return self.system_title + self.frame_counter.to_bytes(4, "big")


def parse_ciphered(apdu: bytes) -> CipheredApdu:
    r = Reader(apdu, Reason.INCOMPLETE_FRAME)
    tag = r.byte()
    if tag != GLO_CIPHERING:
        raise DlmsError(Reason.UNSUPPORTED_APDU, f"APDU tag 0x{tag:02X} is not general-glo-ciphering (DB)")
    if (title_len := r.byte()) != 8:
        raise DlmsError(Reason.UNSUPPORTED_APDU, f"system title length {title_len}, expected 8")
    system_title = r.take(8)
    if r.remaining and r.buf[r.pos] >= 0x80 and r.buf[r.pos] not in (0x81, 0x82):
        raise DlmsError(Reason.UNSUPPORTED_APDU, f"unsupported length form 0x{r.buf[r.pos]:02X}")
    length = r.length()
    if length > r.remaining:
        raise DlmsError(Reason.INCOMPLETE_FRAME, f"ciphered APDU declares {length} bytes, has {r.remaining}")
    if length < r.remaining:
        raise DlmsError(Reason.UNSUPPORTED_APDU, f"{r.remaining - length} bytes after the ciphered APDU")
    if length < 5:
        raise DlmsError(Reason.UNSUPPORTED_APDU, f"ciphered APDU of {length} bytes has no security header")
    sc = r.byte()
    if sc & (SC_BROADCAST | SC_COMPRESSED) or sc & 0x0F > 1 or not sc & (SC_AUTHENTICATED | SC_ENCRYPTED):
        raise DlmsError(Reason.UNSUPPORTED_APDU, f"security control 0x{sc:02X} not supported")
    frame_counter = int.from_bytes(r.take(4), "big")
    body = r.take(r.remaining)
    tag_bytes = None
    if sc & SC_AUTHENTICATED:
        if len(body) < TAG_LEN:
            raise DlmsError(Reason.UNSUPPORTED_APDU, "authenticated APDU shorter than its tag")
        body, tag_bytes = body[:-TAG_LEN], body[-TAG_LEN:]
    return CipheredApdu(system_title, sc, frame_counter, body, tag_bytes)


def decrypt(apdu: CipheredApdu, key: bytes, auth_key: bytes | None = None) -> bytes:
    """Return the plaintext APDU. Raises ``auth_failed`` on a tag mismatch, ``unknown_key`` without AK."""
    if apdu.authenticated:
        if auth_key is None:
            raise DlmsError(Reason.UNKNOWN_KEY, f"no authentication key for system title {apdu.system_title_hex}")
        assert apdu.tag is not None
        header = bytes([apdu.security_control]) + auth_key
        if apdu.encrypted:
            dec = Cipher(algorithms.AES(key), modes.GCM(apdu.iv, apdu.tag, min_tag_length=TAG_LEN)).decryptor()
            dec.authenticate_additional_data(header)
            plain = dec.update(apdu.ciphertext)
            try:
                return plain + dec.finalize()
            except InvalidTag:
                raise DlmsError(Reason.AUTH_FAILED, "authentication tag mismatch") from None
        if not hmac.compare_digest(_gmac(key, apdu.iv, header + apdu.ciphertext), apdu.tag):
            raise DlmsError(Reason.AUTH_FAILED, "authentication tag mismatch")
        return apdu.ciphertext
    dec = Cipher(algorithms.AES(key), modes.CTR(apdu.iv + b"\x00\x00\x00\x02")).decryptor()
    return dec.update(apdu.ciphertext) + dec.finalize()


def _gmac(key: bytes, iv: bytes, aad: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    enc.authenticate_additional_data(aad)
    enc.finalize()
    return enc.tag[:TAG_LEN]


def encrypt(
    plaintext: bytes,
    *,
    system_title: bytes,
    frame_counter: int,
    key: bytes,
    auth_key: bytes | None = None,
    security_control: int | None = None,
) -> bytes:
    """Build the ``DB`` APDU (inverse of :func:`parse_ciphered` + :func:`decrypt`)."""
    sc = security_control if security_control is not None else (0x30 if auth_key else 0x20)
    if bool(sc & SC_AUTHENTICATED) != (auth_key is not None) or len(system_title) != 8:
        raise ValueError("security control, authentication key and system title do not fit together")
    iv = system_title + frame_counter.to_bytes(4, "big")
    if sc & SC_AUTHENTICATED and auth_key is not None:
        header = bytes([sc]) + auth_key
        if sc & SC_ENCRYPTED:
            enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
            enc.authenticate_additional_data(header)
            body = enc.update(plaintext) + enc.finalize() + enc.tag[:TAG_LEN]
        else:
            body = plaintext + _gmac(key, iv, header + plaintext)
    else:
        enc = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
        body = enc.update(plaintext) + enc.finalize()
    inner = bytes([sc]) + frame_counter.to_bytes(4, "big") + body
    return bytes([GLO_CIPHERING, 8]) + system_title + encode_length(len(inner)) + inner
