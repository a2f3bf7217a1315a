"""Airflow plugin: the customer lookup, segment dashboard and JSON API inside Airflow.

The FastAPI app (``include/preference/webapp``) is mounted by Airflow's API server under
``/preference``; a navigation entry opens its dashboard in the Airflow UI. Every route checks the
caller with Airflow's own authentication.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.preference.webapp.app import create_app

URL_PREFIX = "/preference"


class CustomerPreferencePlugin(AirflowPlugin):
    name = "customer_preference"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Customer preference"}]
    external_views = [
        {
            "name": "Customer preference",
            "href": f"{URL_PREFIX.lstrip('/')}/ui",
            "destination": "nav",
            "url_route": "customer-preference",
        }
    ]
