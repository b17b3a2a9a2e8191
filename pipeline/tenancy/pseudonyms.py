"""Keyed pseudonyms for SIM identifiers (ICCID, IMSI, MSISDN, IMEI).

pseudonym = HMAC-SHA256(tenant_key, identifier), where
tenant_key = HMAC-SHA256(secret, "tenant:" + tenant_id). One tenant's pseudonyms
cannot be joined with another's, and without the secret they cannot be reversed
or recomputed from a guessed identifier.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr


class Pseudonymizer:
    def __init__(self, secret: SecretStr, *, length: int = 32) -> None:
        self._secret = secret.get_secret_value().encode()
        self._length = length
        self._tenant_keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return "Pseudonymizer(secret=***)"

    def _tenant_key(self, tenant_id: str) -> bytes:
        key = self._tenant_keys.get(tenant_id)
        if key is None:
            key = hmac.new(self._secret, b"tenant:" + tenant_id.encode(), hashlib.sha256).digest()
            self._tenant_keys[tenant_id] = key
        return key

    def __call__(self, tenant_id: str, identifier: str | None) -> str:
        """Pseudonym of ``identifier`` for ``tenant_id``; '' for a missing identifier."""
        if not identifier:
            return ""
        digest = hmac.new(self._tenant_key(tenant_id), identifier.encode(), hashlib.sha256).hexdigest()
        return digest[: self._length]
