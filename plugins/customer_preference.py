"""Airflow plugin: the customer lookup, segment dashboard and JSON API inside Airflow.

The FastAPI app (``include/preference/webapp``) is mounted by Airflow's API server under
``/preference``; a navigation entry opens its dashboard in the Airflow UI. Every route checks the
caller with Airflow's own authentication.
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

from include.preference.webapp.app import create_app

URL_PREFIX = "/preference"


def mlflow_views() -> list[dict[str, str]]:
    """MLflow's UI under Airflow's navigation, as an external link (a new tab: MLflow's own UI
    does not work inside a frame), when the tracking server is a web address."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return []
    return [{"name": "MLflow", "href": uri.rstrip("/") + "/", "destination": "nav"}]


class CustomerPreferencePlugin(AirflowPlugin):
    name = "customer_preference"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Customer preference"}]
    external_views = [
        {
            "name": "Customer preference",
            "href": f"{URL_PREFIX.lstrip('/')}/ui",
            "destination": "nav",
            "url_route": "customer-preference",
        },
        *mlflow_views(),
    ]
