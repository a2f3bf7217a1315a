"""Settings come from the environment, including Airflow-style connections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.preference.config import ConfigError, load_settings, parse_airflow_connection

pytestmark = pytest.mark.unit


def test_connection_json_form_with_extra_endpoint():
    value = json.dumps(
        {
            "conn_type": "aws",
            "login": "AKID",
            "password": "s3cr3t",
            "extra": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
        }
    )
    connection = parse_airflow_connection(value)
    assert (connection.conn_type, connection.login, connection.password) == ("aws", "AKID", "s3cr3t")
    assert connection.extra["endpoint_url"] == "http://127.0.0.1:9000"


def test_connection_uri_form_decodes_quoted_secret_and_query_extra():
    connection = parse_airflow_connection(
        "aws://AKID:a%2Fb%2Bc@/?endpoint_url=http%3A%2F%2Fs3%3A8333&region_name=us-east-1"
    )
    assert connection.password == "a/b+c"
    assert connection.extra == {"endpoint_url": "http://s3:8333", "region_name": "us-east-1"}


def test_connection_that_is_neither_json_nor_uri_is_rejected_by_name():
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_AWS_DEFAULT"):
        parse_airflow_connection("not a connection", "AIRFLOW_CONN_AWS_DEFAULT")


def test_airflow_connection_wins_over_plain_aws_variables(tmp_path: Path):
    env = {
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {"conn_type": "aws", "login": "from-conn", "password": "p", "extra": {"endpoint_url": "http://h:1"}}
        ),
        "AWS_ACCESS_KEY_ID": "from-env",
        "AWS_SECRET_ACCESS_KEY": "q",
        "PREFERENCE_LOCAL_DIR": str(tmp_path),
        "PREFERENCE_CODE_VERSION": "abc123",
    }
    settings = load_settings(env)
    assert settings.s3.access_key_id == "from-conn"
    assert settings.s3.endpoint_url == "http://h:1"
    assert settings.s3.source == "AIRFLOW_CONN_AWS_DEFAULT"
    assert settings.code_version == "abc123"
    assert settings.scratch_dir == tmp_path / "scratch"


def test_plain_aws_variables_are_used_without_a_connection():
    settings = load_settings({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "S3_ENDPOINT_URL": "http://x:2"})
    assert (settings.s3.access_key_id, settings.s3.endpoint_url, settings.s3.bucket) == ("k", "http://x:2", "lake")


def test_missing_credentials_name_the_variables_to_set():
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        load_settings({})


def test_secret_never_appears_in_repr_or_description():
    settings = load_settings({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "very-secret"})
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in settings.s3.describe()


def test_mlflow_uri_from_connection_when_no_tracking_uri():
    env = {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "http", "host": "mlflow", "port": 5001}),
    }
    assert load_settings(env).mlflow_tracking_uri == "http://mlflow:5001"
    assert load_settings({**env, "MLFLOW_TRACKING_URI": "http://other:1"}).mlflow_tracking_uri == "http://other:1"


def test_segment_space_is_taste_unless_set_and_refuses_an_unknown_space():
    base = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "S3_ENDPOINT_URL": "http://x:2"}
    assert load_settings(base).segment_space == "taste"
    assert load_settings({**base, "PREFERENCE_SEGMENT_SPACE": "Profile"}).segment_space == "profile"
    with pytest.raises(ConfigError, match="PREFERENCE_SEGMENT_SPACE must be one of taste, profile"):
        load_settings({**base, "PREFERENCE_SEGMENT_SPACE": "embedding"})
