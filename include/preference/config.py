"""Settings from the environment (12-factor).

Nothing here runs at import time: call :func:`load_settings` inside a task, a CLI command or a test.
Airflow connections are read the way Airflow itself reads them from the environment
(``AIRFLOW_CONN_<ID>`` as JSON or URI), so one variable serves the Airflow UI/hooks and this package.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from include.preference.errors import ConfigError

__all__ = ["ConfigError", "ConnectionInfo", "S3Settings", "Settings", "load_settings", "parse_airflow_connection"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUCKET = "lake"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class ConnectionInfo:
    """The parts of an Airflow connection this package uses."""

    conn_type: str = ""
    host: str = ""
    port: int | None = None
    login: str = ""
    password: str = ""
    schema: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def parse_airflow_connection(value: str, variable: str = "AIRFLOW_CONN_*") -> ConnectionInfo:
    """Parse an ``AIRFLOW_CONN_*`` value in Airflow's JSON or URI form.

    Args:
        value: the variable's text.
        variable: the variable's name, for error messages.

    Raises:
        ConfigError: the value is neither valid JSON nor a URI with a scheme.
    """
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{variable} is not valid JSON: {error}") from error
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra.strip() else {}
        port = data.get("port")
        return ConnectionInfo(
            conn_type=str(data.get("conn_type", "")),
            host=str(data.get("host") or ""),
            port=int(port) if port not in (None, "") else None,
            login=str(data.get("login") or ""),
            password=str(data.get("password") or ""),
            schema=str(data.get("schema") or ""),
            extra=dict(extra),
        )
    parts = urlsplit(text)
    if not parts.scheme:
        raise ConfigError(f"{variable} must be JSON or a URI like aws://KEY:SECRET@/?endpoint_url=...")
    extra = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "__extra__" in extra:
        extra = json.loads(extra["__extra__"])
    return ConnectionInfo(
        conn_type=parts.scheme.replace("-", "_"),
        host=unquote(parts.hostname or ""),
        port=parts.port,
        login=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        schema=unquote(parts.path.lstrip("/")),
        extra=extra,
    )


def _connection_from_env(env: Mapping[str, str], conn_id: str) -> ConnectionInfo | None:
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    value = env.get(variable)
    return parse_airflow_connection(value, variable) if value else None


@dataclass(frozen=True)
class S3Settings:
    """Where the lake lives and how to sign requests to it."""

    endpoint_url: str | None
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = DEFAULT_REGION
    bucket: str = DEFAULT_BUCKET
    source: str = "environment"

    def describe(self) -> str:
        """One line for logs and errors, without the secret."""
        endpoint = self.endpoint_url or "AWS default endpoint"
        return f"s3://{self.bucket} at {endpoint} (key id {self.access_key_id or '<none>'}, from {self.source})"


@dataclass(frozen=True)
class Settings:
    """Everything a task needs to know about its environment."""

    s3: S3Settings
    mlflow_tracking_uri: str
    local_dir: Path
    code_version: str
    horizon_days: int = 7
    negatives_per_positive: int = 4
    sampling_seed: int = 17
    # train_model: workers (1 = this process), epochs, global batch, anchors used, K of the gate.
    training_workers: int = 1
    training_epochs: int = 8
    training_batch_size: int = 512
    training_anchors: int = 14
    # The holdout's candidate lists are short (each purchase comes with ``negatives_per_positive``
    # sampled negatives), so the daily gate ranks at a small K; the file protocol uses K = 10.
    ranking_k: int = 3
    # Scoring and segments: list length, "active" window, t-SNE sample rows per stratum.
    recommendations_k: int = 10
    active_days: int = 90
    segment_sample_per_stratum: int = 400
    # What customers are segmented on: "taste" (the taste part of the champion's customer
    # embedding) or "profile" (the customer profile autoencoder's champion).
    segment_space: str = "taste"
    # Validation's implausible_value rule: hard bounds, and the multiple of the trailing days'
    # 99.9th percentile below them.
    max_quantity: float = 1_000_000.0
    max_price: float = 10_000_000.0
    plausibility_factor: float = 20.0
    # The promotion lock's database (PostgreSQL, every host's); None: a file lock (one machine).
    lock_database_url: str | None = field(default=None, repr=False)

    @property
    def scratch_dir(self) -> Path:
        """Local scratch space of a task's own process (plots, Data Docs, a downloaded model); never Spark's."""
        return self.local_dir / "scratch"


def _s3_settings(env: Mapping[str, str]) -> S3Settings:
    conn_id = env.get("PREFERENCE_S3_CONN_ID", "aws_default")
    bucket = env.get("PREFERENCE_BUCKET", DEFAULT_BUCKET)
    connection = _connection_from_env(env, conn_id)
    if connection is not None:
        extra = connection.extra
        endpoint = extra.get("endpoint_url") or extra.get("host") or None
        return S3Settings(
            endpoint_url=str(endpoint) if endpoint else None,
            access_key_id=connection.login or str(extra.get("aws_access_key_id", "")),
            secret_access_key=connection.password or str(extra.get("aws_secret_access_key", "")),
            region=str(extra.get("region_name") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION),
            bucket=bucket,
            source=f"AIRFLOW_CONN_{conn_id.upper()}",
        )
    access_key = env.get("AWS_ACCESS_KEY_ID", "")
    secret_key = env.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key:
        raise ConfigError(
            f"No S3 credentials: set AIRFLOW_CONN_{conn_id.upper()} (an Airflow aws connection) "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; see .env.example"
        )
    return S3Settings(
        endpoint_url=env.get("S3_ENDPOINT_URL") or None,
        access_key_id=access_key,
        secret_access_key=secret_key,
        region=env.get("AWS_DEFAULT_REGION", DEFAULT_REGION),
        bucket=bucket,
        source="AWS_* environment variables",
    )


def _mlflow_uri(env: Mapping[str, str]) -> str:
    if env.get("MLFLOW_TRACKING_URI"):
        return env["MLFLOW_TRACKING_URI"]
    connection = _connection_from_env(env, env.get("PREFERENCE_MLFLOW_CONN_ID", "mlflow_default"))
    if connection is not None and connection.host:
        scheme = connection.schema or ("https" if connection.conn_type == "https" else "http")
        port = f":{connection.port}" if connection.port else ""
        return f"{scheme}://{connection.host}{port}"
    return "http://127.0.0.1:5000"


def code_version(env: Mapping[str, str] | None = None) -> str:
    """The code version recorded in manifests and MLflow runs.

    ``PREFERENCE_CODE_VERSION`` wins (set by CI or the image build); otherwise the git commit of
    the checkout, marked ``-dirty`` when the tree has uncommitted changes; otherwise ``unknown``.
    """
    env = os.environ if env is None else env
    if env.get("PREFERENCE_CODE_VERSION"):
        return env["PREFERENCE_CODE_VERSION"]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from the environment (``os.environ`` by default).

    Raises:
        ConfigError: a required setting is missing or malformed.
    """
    env = os.environ if env is None else env
    local_dir = Path(env.get("PREFERENCE_LOCAL_DIR") or PROJECT_ROOT / ".local")
    return Settings(
        s3=_s3_settings(env),
        mlflow_tracking_uri=_mlflow_uri(env),
        local_dir=local_dir,
        code_version=code_version(env),
        horizon_days=_positive_int(env, "PREFERENCE_HORIZON_DAYS", 7),
        negatives_per_positive=_positive_int(env, "PREFERENCE_NEGATIVES_PER_POSITIVE", 4),
        sampling_seed=_positive_int(env, "PREFERENCE_SAMPLING_SEED", 17, minimum=0),
        training_workers=_positive_int(env, "PREFERENCE_TRAINING_WORKERS", 1),
        training_epochs=_positive_int(env, "PREFERENCE_TRAINING_EPOCHS", 8),
        training_batch_size=_positive_int(env, "PREFERENCE_TRAINING_BATCH_SIZE", 512),
        training_anchors=_positive_int(env, "PREFERENCE_TRAINING_ANCHORS", 14),
        ranking_k=_positive_int(env, "PREFERENCE_RANKING_K", 3),
        recommendations_k=_positive_int(env, "PREFERENCE_RECOMMENDATIONS_K", 10),
        active_days=_positive_int(env, "PREFERENCE_ACTIVE_DAYS", 90),
        segment_sample_per_stratum=_positive_int(env, "PREFERENCE_SEGMENT_SAMPLE_PER_STRATUM", 400, minimum=10),
        segment_space=_choice(env, "PREFERENCE_SEGMENT_SPACE", SEGMENT_SPACES),
        lock_database_url=env.get("PREFERENCE_LOCK_DATABASE_URL") or None,
        max_quantity=_positive_float(env, "PREFERENCE_MAX_QUANTITY", 1_000_000.0),
        max_price=_positive_float(env, "PREFERENCE_MAX_PRICE", 10_000_000.0),
        plausibility_factor=_positive_float(env, "PREFERENCE_PLAUSIBILITY_FACTOR", 20.0),
    )


SEGMENT_SPACES = ("taste", "profile")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when unset)."""
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name) or ""
    if not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value
