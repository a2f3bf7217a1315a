"""The plugin's FastAPI app: a JSON API and two HTML pages over the published outputs.

Mounted by ``plugins/customer_preference.py`` in Airflow's API server under ``/preference``:

* ``api/customers/{customer_id}``: value tier, segment, top-K recommendations with propensities,
  model version and data dates, and the customer profile (reconstruction error, the 5 nearest
  customers by profile with their distances) (404 for an unknown customer, 422 for a malformed id
  or date);
* ``api/segments/{entity}``: cluster sizes and shares per day and the latest migration;
* ``api/value-tiers``, ``api/model`` (the champion's holdout metrics against the baselines),
  ``api/runs/{date}`` (links to the day's validation Data Docs and MLflow training run);
* ``plots/{kind}/{entity}.png`` and ``data-docs/{date}/{path}``: published files, served only
  when a partition manifest lists them; Data Docs pages load their scripts and styles from
  ``assets/`` (pinned copies, see :mod:`include.preference.webassets`), never from a CDN;
* ``docs``: Swagger UI over ``openapi.json``, from ``assets/`` too (it works without internet);
* ``ui/`` (dashboard) and ``ui/customers/{customer_id}`` (customer page), HTML with every string
  from the data escaped.

Airflow does not authenticate plugin apps: every route here depends on Airflow's own ``get_user``
(the UI's ``_token`` cookie or an ``Authorization: Bearer`` token from ``/auth/token``), so an
anonymous call gets 401.
"""

from __future__ import annotations

import datetime as dt
import logging
import mimetypes
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from include.preference import webassets
from include.preference.webapp.outputs import CUSTOMER_ID, DASHBOARD_TABLES, PLOTS, File, Outputs

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
Entity = Literal["customers", "products"]
CustomerId = Annotated[
    str,
    PathParam(
        pattern=CUSTOMER_ID.pattern,
        max_length=64,
        description="customer id: 1-64 letters, digits, '_', '.', ':' or '-'",
        examples=["C00042"],
    ),
]
AsOf = Annotated[dt.date | None, Query(alias="date", description="as of this date (default: latest published)")]


async def airflow_user(request: Request) -> Any:
    """The caller as Airflow's API server authenticates it (401 when anonymous or invalid)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, oauth2_scheme

    token = await oauth2_scheme(request)
    bearer = await bearer_scheme(request)
    return await get_user(request, token, bearer)


def default_outputs() -> Outputs:
    """Outputs of the lake configured in the environment (the same settings the tasks read)."""
    from include.preference.config import load_settings
    from include.preference.tasks import open_store

    settings = load_settings()
    return Outputs(open_store(settings), settings.mlflow_tracking_uri)


@lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    environment = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    )
    environment.globals["reasons"] = REASONS
    return environment


def render(template: str, **context: Any) -> str:
    """A page from ``templates/`` with autoescaping on: data strings cannot inject markup."""
    return _environment().get_template(template).render(**context)


def _base(request: Request) -> str:
    """The app's own path prefix (where Airflow mounted it), for links between its pages."""
    return str(request.scope.get("root_path", "")).rstrip("/")


ID_EXAMPLE = "17850"
# Why a product is among a customer's candidates (retrieval's source), in words.
REASONS = {
    "buy_again": "bought it before",
    "embedding_neighbours": "similar to what they bought",
    "category_popular": "popular in a category they buy from",
    "popular": "popular with everyone",
}


def _malformed_id_page(request: Request, given: str) -> HTMLResponse:
    """400 as a page: the id given, what an id looks like, an example, and the way back."""
    page = render("customer.html", customer_id=given[:80], malformed=True, example=ID_EXAMPLE, base=_base(request))
    return HTMLResponse(page, status_code=400)


def _file_response(found: File | None, what: str) -> Response:
    if found is None:
        raise HTTPException(status_code=404, detail=f"{what} is not published")
    return Response(content=found.content, media_type=found.media_type)


def lake(request: Request) -> Outputs:
    """The app's lake reader, built on first use."""
    state = request.app.state
    if state.outputs is None:
        state.outputs = state.outputs_factory()
    return state.outputs


Lake = Annotated[Outputs, Depends(lake)]


def create_app(outputs: Callable[[], Outputs] = default_outputs) -> FastAPI:
    """The app; ``outputs`` gives the lake reader (built once, on first use)."""
    app = FastAPI(
        title="Customer preference",
        version="1",
        description="Customers, segments, value tiers and the champion model, from the published outputs.",
        dependencies=[Depends(airflow_user)],
        # Swagger UI from this app's own assets (FastAPI's default loads it from a CDN); no ReDoc.
        docs_url=None,
        redoc_url=None,
    )
    app.state.outputs_factory = outputs
    app.state.outputs = None

    @app.get("/api/customers/{customer_id}", tags=["customers"], summary="A customer's tier, segment, top-K, profile")
    def customer(customer_id: CustomerId, store: Lake, day: AsOf = None) -> dict[str, Any]:
        found = store.customer(customer_id, day)
        if found is None:
            raise HTTPException(status_code=404, detail=f"customer {customer_id} is in no published output")
        return found

    @app.get("/api/segments/{entity}", tags=["segments"], summary="Cluster sizes per day and the latest migration")
    def segments(entity: Entity, store: Lake) -> dict[str, Any]:
        return {"entity": entity, "history": store.segment_history(entity), "migration": store.migration(entity)}

    @app.get(
        "/api/segments/customers/profiles",
        tags=["segments"],
        summary="What sets each customer segment apart: size, spend, orders, tiers, categories, products",
    )
    def segment_profiles(store: Lake, day: AsOf = None) -> dict[str, Any]:
        found = store.segment_profiles(day)
        if found is None:
            raise HTTPException(status_code=404, detail="no customer segment profiles are published")
        return found

    @app.get("/api/value-tiers", tags=["segments"], summary="RFM value tier sizes")
    def value_tiers(store: Lake, day: AsOf = None) -> dict[str, Any]:
        found = store.value_tiers(day)
        if found is None:
            raise HTTPException(status_code=404, detail="no value tiers are published")
        return found

    @app.get("/api/model", tags=["model"], summary="The champion's holdout metrics against the baselines")
    def model(store: Lake) -> dict[str, Any]:
        found = store.champion()
        if found is None:
            raise HTTPException(status_code=404, detail="no training report is published")
        return found

    @app.get("/api/runs/{day}", tags=["runs"], summary="Links to a day's validation Data Docs and MLflow run")
    def run_links(day: dt.date, store: Lake) -> dict[str, Any]:
        return store.run_links(day)

    @app.get("/plots/{kind}/{entity}.png", tags=["files"], summary="A published plot", response_class=Response)
    def plot(
        kind: Literal["tsne", "sizes", "migration", "rfm"], entity: Entity, store: Lake, day: AsOf = None
    ) -> Response:
        return _file_response(store.plot(kind, entity, day), f"plot {kind} of {entity}")

    @app.get("/data-docs/{day}/{path:path}", tags=["files"], summary="The day's validation Data Docs")
    def data_docs(request: Request, day: dt.date, path: str, store: Lake) -> Response:
        found = store.data_docs(day, path)
        if found is not None and found.media_type == "text/html":
            # The page's CDN scripts and styles come from this app: Data Docs work without internet.
            page = webassets.offline_html(found.content.decode("utf-8"), _base(request))
            return HTMLResponse(page)
        return _file_response(found, f"Data Docs file {path!r} of {day}")

    @app.get("/assets/{path:path}", include_in_schema=False)
    def asset(path: str) -> Response:
        found = webassets.asset_file(path)
        if found is None:
            raise HTTPException(status_code=404, detail=f"asset {path!r} is not served (make install fetches them)")
        media_type = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
        # Versioned paths: a file never changes under its name.
        return Response(found.read_bytes(), media_type=media_type, headers={"Cache-Control": "max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        base = _base(request)
        files = {name: f"{base}/assets/{path}" for name, path in webassets.SWAGGER_FILES.items()}
        return get_swagger_ui_html(
            openapi_url=f"{base}/openapi.json",
            title="Customer preference API",
            swagger_js_url=files["swagger-ui-bundle.js"],
            swagger_css_url=files["swagger-ui.css"],
            swagger_favicon_url=files["favicon-32x32.png"],
        )

    @app.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request, store: Lake) -> str:
        store.list_all(DASHBOARD_TABLES)
        # The table shows the latest 7 days: only those summaries are read (the API has them all).
        published_days = {entity: store.dates("segments", entity) for entity in ("customers", "products")}
        history = {entity: store.segment_history(entity, days[-7:]) for entity, days in published_days.items()}
        # Every recent day something was published for: validated (Data Docs), trained, scored, segmented.
        days = sorted(
            set(store.dates("reports", "validation"))
            | set(store.dates("reports", "training"))
            | set(published_days["customers"])
            | set(store.dates("scores", "recommendations"))
        )
        tiers = store.value_tiers()
        same_day = [h for h in history["customers"] if tiers and h["date"] == tiers["date"]]
        segmented = sum(c["count"] for c in same_day[0]["clusters"]) if same_day else None
        return render(
            "dashboard.html",
            champion=store.champion(),
            history=history,
            published_days={entity: len(days) for entity, days in published_days.items()},
            migration={entity: store.migration(entity) for entity in history},
            tiers=tiers,
            segmented=segmented,
            profiles=store.segment_profiles(),
            runs=[store.run_links(d) for d in reversed(days[-14:])],
            plots=PLOTS,
            base=_base(request),
        )

    @app.get("/ui/customers", include_in_schema=False)
    def find_customer(request: Request, customer_id: str = "") -> Response:
        wanted = customer_id.strip()
        if not CUSTOMER_ID.fullmatch(wanted):
            return _malformed_id_page(request, customer_id)
        return RedirectResponse(url=f"{_base(request)}/ui/customers/{wanted}", status_code=303)

    @app.get("/ui/customers/{customer_id}", response_class=HTMLResponse, include_in_schema=False)
    def customer_page(request: Request, customer_id: str, store: Lake, day: AsOf = None) -> HTMLResponse:
        # The pages answer people: a malformed id gets a page that says what an id looks like.
        wanted = customer_id.strip()
        if not CUSTOMER_ID.fullmatch(wanted):
            return _malformed_id_page(request, customer_id)
        found = store.customer(wanted, day)
        page = render("customer.html", customer_id=wanted, customer=found, base=_base(request), day=day)
        return HTMLResponse(page, status_code=200 if found is not None else 404)

    return app
