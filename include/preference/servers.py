"""PostgreSQL and Redis of the production profile, run by the project itself.

Nothing assumes a server the machine happens to run: ``make up`` (production profile) and the test
fixtures start their own PostgreSQL and Redis from the binaries of Debian's packages (``make servers``
installs them when missing), on 127.0.0.1, with data under the runtime's home, stopped by PID like
every other service. Both ask for a password generated on first use (``generated.env``).

PostgreSQL refuses to run as root: when this process is root, the server runs as the system user
``postgres`` that Debian's package creates, and its data directory must be reachable by that user.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
POSTGRES_SUPERUSER = "postgres"
POSTGRES_SYSTEM_USER = "postgres"
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")
INSTALL_HINT = "run `make servers` (Debian's postgresql-15 and redis-server)"


class ServerSetupError(RuntimeError):
    """A database or broker server cannot be set up here; the message says why and what to do."""


@dataclass(frozen=True)
class RunAs:
    """The user a server process runs as (PostgreSQL refuses root)."""

    uid: int
    gid: int
    name: str


def postgres_bin_dir(env: dict[str, str] | None = None) -> Path:
    """PostgreSQL's server binaries: ``PREFERENCE_POSTGRES_BIN_DIR``, Debian's newest, or PATH."""
    env = dict(os.environ if env is None else env)
    configured = env.get("PREFERENCE_POSTGRES_BIN_DIR")
    if configured:
        if not (Path(configured) / "postgres").exists():
            raise ServerSetupError(f"PREFERENCE_POSTGRES_BIN_DIR={configured} has no postgres binary")
        return Path(configured)

    def version(path: Path) -> int:
        return int(path.parents[1].name) if path.parents[1].name.isdigit() else 0

    debian = sorted(DEBIAN_POSTGRES.glob("*/bin/postgres"), key=version, reverse=True)
    if debian:
        return debian[0].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise ServerSetupError(f"PostgreSQL's server binaries were not found: {INSTALL_HINT}")


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
    if not found:
        raise ServerSetupError(f"redis-server was not found: {INSTALL_HINT}")
    return found


def postgres_run_as() -> RunAs | None:
    """None when this process may run PostgreSQL itself; the ``postgres`` system user under root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError as error:
        raise ServerSetupError(
            f"PostgreSQL refuses to run as root and there is no '{POSTGRES_SYSTEM_USER}' user: {INSTALL_HINT}"
        ) from error
    return RunAs(entry.pw_uid, entry.pw_gid, POSTGRES_SYSTEM_USER)


def check_reachable(path: Path, user: RunAs) -> None:
    """Raise unless ``user`` can traverse every directory above ``path`` (it owns ``path`` itself)."""
    for parent in path.resolve().parents:
        info = parent.stat()
        if info.st_uid == user.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise ServerSetupError(
                f"PostgreSQL runs as user '{user.name}' (it refuses root), which cannot reach {path}: "
                f"{parent} is not searchable by others; put PREFERENCE_LOCAL_DIR somewhere it can reach"
            )


def _own(path: Path, user: RunAs | None) -> None:
    if user is not None:
        os.chown(path, user.uid, user.gid)


def init_postgres(data: Path, password: str, log_path: Path, env: dict[str, str] | None = None) -> bool:
    """``initdb`` a cluster in ``data`` (password auth for every connection) unless it exists.

    Returns True when it created one. A directory left by an interrupted ``initdb`` (no
    ``PG_VERSION``) held no data and is made anew.
    """
    if (data / "PG_VERSION").exists():
        return False
    user = postgres_run_as()
    if data.exists():
        shutil.rmtree(data)
    data.parent.mkdir(parents=True, exist_ok=True)
    _own(data.parent, user)
    if user is not None:
        check_reachable(data.parent, user)
    password_file = data.parent / ".initdb-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    _own(password_file, user)
    command = [
        str(postgres_bin_dir(env) / "initdb"),
        f"--pgdata={data}",
        f"--username={POSTGRES_SUPERUSER}",
        f"--pwfile={password_file}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
        "--no-instructions",
    ]
    try:
        with log_path.open("ab") as log:
            done = subprocess.run(  # noqa: S603 - fixed command
                command,
                cwd=data.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
                timeout=300,
                **run_as_arguments(user),
            )
    finally:
        password_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ServerSetupError(f"initdb failed with code {done.returncode}; see {log_path}")
    return True


def run_as_arguments(user: RunAs | None) -> dict:
    """``subprocess`` arguments that run a child as ``user`` (none when it runs as this process)."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


def postgres_command(data: Path, port: int, durable: bool, env: dict[str, str] | None = None) -> list[str]:
    """The server on 127.0.0.1 only (no Unix socket); a throwaway one also skips fsync."""
    settings = {
        "listen_addresses": HOST,
        "port": str(port),
        "unix_socket_directories": "",
        # Airflow's components, Celery workers and MLflow each keep a pool of connections.
        "max_connections": "200",
        "synchronous_commit": "off",
    }
    if not durable:
        settings |= {"fsync": "off", "full_page_writes": "off"}
    command = [str(postgres_bin_dir(env) / "postgres"), "-D", str(data)]
    for name, value in settings.items():
        command += ["-c", f"{name}={value}"]
    return command


def postgres_healthy(port: int, password: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host=HOST, port=port, user=POSTGRES_SUPERUSER, password=password, dbname="postgres", connect_timeout=3
        ) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def write_redis_config(path: Path, port: int, password: str, data: Path) -> Path:
    """Redis on 127.0.0.1 with a password, no persistence (the broker's messages are transient:
    Airflow re-queues what a lost message held), in a file only this user reads."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", password):
        raise ServerSetupError("the Redis password may hold only letters, digits, '_' and '-'")
    data.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            [
                f"bind {HOST}",
                f"port {port}",
                "protected-mode yes",
                "daemonize no",
                f"dir {data}",
                'save ""',
                "appendonly no",
                f"requirepass {password}",
                "",
            ]
        )
    )
    path.chmod(0o600)
    return path


def redis_healthy(port: int, password: str) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=HOST, port=port, password=password, socket_timeout=3).ping())
    except redis.exceptions.RedisError:
        return False
