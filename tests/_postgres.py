"""A throwaway PostgreSQL server for tests: ``initdb`` and ``postgres`` in a fresh temporary folder, reached
through a unix socket in that folder only (``listen_addresses=''``: no TCP port to clash with), trust
authentication, no fsync. PostgreSQL refuses to run as root, so as root the server runs as an unprivileged
user. :func:`start_server` says why it cannot start (:class:`Unavailable`) where the binaries, the psycopg
driver or such a user are missing, so that a test can skip with that reason."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "pflnas"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20


class Unavailable(RuntimeError):
    """No server can run on this machine; the message says what is missing."""


@dataclass
class PostgresServer:
    root: Path  # data directory (root/data), socket and log live here
    process: subprocess.Popen

    @property
    def socket_dir(self) -> str:
        return str(self.root)

    def url(self, database: str, password: str = "") -> str:
        """A SQLAlchemy URL of ``database`` through the socket (``password`` goes into the user part)."""
        user = f"{SUPERUSER}:{password}" if password else SUPERUSER
        return f"postgresql://{user}@/{database}?host={self.socket_dir}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host=self.socket_dir, user=SUPERUSER, dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT: the data is thrown away), a kill if that hangs; remove the folder."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGQUIT)
                try:
                    self.process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def find_binaries() -> dict[str, str]:
    """``initdb`` and ``postgres`` on PATH, else in the newest /usr/lib/postgresql/<version>/bin."""
    found = {name: shutil.which(name) for name in ("initdb", "postgres")}
    if all(found.values()):
        return found  # type: ignore[return-value]
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    for bindir in versions:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return {name: str(bindir / name) for name in ("initdb", "postgres")}
    raise Unavailable("no PostgreSQL server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql")


def _version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name)) or (0,)


def _server_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None (this one) unless we are root, which PostgreSQL refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise Unavailable("running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


def start_server() -> PostgresServer:
    """A running server with superuser ``pflnas``; stop it with :meth:`PostgresServer.stop`."""
    if importlib.util.find_spec("psycopg") is None:
        raise Unavailable("the psycopg driver is not installed (pip install -e '.[postgres]')")
    binaries, user = find_binaries(), _server_user()
    # /tmp: a socket path has at most 107 bytes, and the server's user must reach the folder ($TMPDIR or
    # pytest's folders may be private to root)
    root = Path(tempfile.mkdtemp(prefix="pflnas-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    as_user: dict = {}
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C", "LANG": "C"}
    data = root / "data"
    try:
        init = [binaries["initdb"], "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--no-locale"]
        done = subprocess.run(
            [*init, "-E", "UTF8", "--no-sync"], capture_output=True, text=True, env=env, cwd=root,
            timeout=START_TIMEOUT_S, **as_user,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {(done.stdout + done.stderr)[-2000:]}")
        settings = ["listen_addresses=", "fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        command = [binaries["postgres"], "-D", str(data), "-k", str(root)]
        with open(root / "server.log", "wb") as log:
            process = subprocess.Popen(
                [*command, *(a for s in settings for a in ("-c", s))], stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=root, **as_user,
            )  # fmt: skip
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    server = PostgresServer(root, process)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}: {server.log()}")
        try:
            with psycopg.connect(
                host=server.socket_dir, user=SUPERUSER, dbname="postgres", connect_timeout=2
            ):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                why = f"postgres did not accept connections in {START_TIMEOUT_S} s ({exc})"
                raise RuntimeError(f"{why}: {server.log()}") from None
            time.sleep(0.1)
