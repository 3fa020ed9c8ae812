"""Password hashing with argon2id (RFC 9106), verified in constant time by argon2-cffi.

The cost is the OWASP minimum for argon2id (19 MiB, 2 passes): it is real work on every sign-up and
log-in, and benchmarks report it as local work in the physical floor rather than hide it.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

# Verified against when the user does not exist, so that an unknown username costs the same time
# as a wrong password and does not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash("movr-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
