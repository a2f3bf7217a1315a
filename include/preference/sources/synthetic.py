"""A synthetic marketplace: deterministic by seed and date, any day regenerable on its own.

The world (catalogue, customers and their hidden traits) depends only on the configuration; a day's
behaviour depends only on the configuration and the date. Planted structure, which later stages
should recover and the tests check against :func:`ground_truth`:

* latent preference groups: each customer belongs to one group, and each group concentrates its
  interest on a few categories; carts, purchases and review ratings follow that affinity;
* price sensitivity: sensitive customers cart expensive items less;
* repeat buying: every customer has a few staple products bought again and again;
* browse -> cart -> purchase funnels inside sessions, searches with category words;
* reviews whose text and rating reflect the customer's affinity for the category;
* new customers and products arriving over time; weekly seasonality (busier weekends).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from include.preference.schema import TABLES

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# top level -> sub-category -> product nouns. Words double as search terms and review vocabulary.
TAXONOMY: dict[str, dict[str, tuple[str, ...]]] = {
    "electronics": {
        "audio": ("headphones", "speaker", "earbuds"),
        "computers": ("laptop stand", "keyboard", "mouse"),
        "phones": ("phone case", "charger", "power bank"),
    },
    "home": {
        "kitchen": ("frying pan", "chef knife", "coffee grinder"),
        "decor": ("vase", "picture frame", "candle"),
        "bedding": ("duvet", "pillow", "blanket"),
    },
    "fashion": {
        "shoes": ("sneakers", "boots", "sandals"),
        "outerwear": ("rain jacket", "parka", "fleece"),
        "accessories": ("wallet", "scarf", "sunglasses"),
    },
    "sports": {
        "running": ("running shorts", "water bottle", "headlamp"),
        "cycling": ("bike light", "helmet", "saddle bag"),
        "fitness": ("yoga mat", "kettlebell", "resistance band"),
    },
    "kids": {
        "toys": ("building blocks", "puzzle", "plush bear"),
        "baby": ("baby bottle", "bib", "teether"),
        "school": ("backpack", "pencil case", "lunch box"),
    },
    "garden": {
        "tools": ("pruning shears", "trowel", "watering can"),
        "plants": ("seed kit", "planter", "fertiliser"),
        "outdoor": ("garden chair", "lantern", "parasol"),
    },
}
CATEGORIES: tuple[str, ...] = tuple(f"{top}/{sub}" for top, subs in TAXONOMY.items() for sub in subs)
BRANDS = ("Northwind", "Acme", "Lumen", "Bramble", "Kestrel", "Orbit", "Tamarack", "Vela", "Quill", "Fjord")
ADJECTIVES = ("classic", "compact", "premium", "everyday", "eco", "pro", "lightweight", "deluxe")
COUNTRIES = ("United Kingdom", "Germany", "France", "Netherlands", "Spain", "Ireland", "Poland", "Sweden")
COUNTRY_WEIGHTS = (0.42, 0.16, 0.13, 0.08, 0.07, 0.06, 0.05, 0.03)
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
# Monday .. Sunday: more sessions at the weekend.
WEEKDAY_FACTOR = (0.95, 0.92, 0.94, 1.0, 1.08, 1.22, 1.18)
POSITIVE = ("love", "great quality", "exactly what I wanted", "works perfectly", "would buy again")
NEUTRAL = ("okay", "does the job", "as described", "fine for the price")
NEGATIVE = ("disappointed", "not for me", "poor quality", "returned it", "would not recommend")


@dataclass(frozen=True)
class SyntheticConfig:
    """Scale knobs and the seed. Equal configs build equal worlds."""

    seed: int = 7
    customers: int = 2_000
    products: int = 400
    sessions_per_day: int = 1_500
    groups: int = 5
    epoch: dt.date = dt.date(2025, 1, 1)
    growth_days: int = 1095
    initial_share: float = 0.6

    def __post_init__(self) -> None:
        if self.customers < 1 or self.products < len(CATEGORIES) or self.sessions_per_day < 1:
            raise ValueError(
                f"need customers >= 1, products >= {len(CATEGORIES)} (one per category), sessions_per_day >= 1"
            )
        if not 1 <= self.groups <= len(CATEGORIES):
            raise ValueError(f"groups must be between 1 and {len(CATEGORIES)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "SyntheticConfig":
        """Read ``PREFERENCE_SYNTH_<FIELD>`` variables (e.g. ``PREFERENCE_SYNTH_CUSTOMERS``); overrides win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(f"PREFERENCE_SYNTH_{spec.name.upper()}")
            if raw:
                values[spec.name] = (
                    dt.date.fromisoformat(raw) if spec.name == "epoch" else type(getattr(cls(), spec.name))(raw)
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("epoch"), str):
            values["epoch"] = dt.date.fromisoformat(values["epoch"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form, recorded in manifests."""
        return {
            spec.name: str(getattr(self, spec.name)) if spec.name == "epoch" else getattr(self, spec.name)
            for spec in fields(self)
        }


@dataclass(frozen=True)
class World:
    """The static marketplace behind every day. Arrays are indexed by customer or product number."""

    config: SyntheticConfig
    group_preference: np.ndarray  # groups x categories, rows sum to 1
    product_category: np.ndarray
    product_brand: np.ndarray
    product_adjective: np.ndarray
    product_noun: np.ndarray
    product_price: np.ndarray
    product_popularity: np.ndarray
    product_first_seen: np.ndarray  # days since epoch
    customer_group: np.ndarray
    customer_price_sensitivity: np.ndarray
    customer_activity: np.ndarray
    customer_country: np.ndarray
    customer_age_band: np.ndarray
    customer_first_seen: np.ndarray  # days since epoch
    customer_staples: np.ndarray  # customers x 3 product numbers
    customer_rebuy_rate: np.ndarray

    @property
    def affinity(self) -> np.ndarray:
        """customers x categories: how much each customer likes each category (0..1)."""
        preference = self.group_preference[self.customer_group]
        return preference / preference.max(axis=1, keepdims=True)


def _arrival_days(rng: np.random.Generator, count: int, config: SyntheticConfig) -> np.ndarray:
    initial = rng.random(count) < config.initial_share
    later = rng.integers(1, max(config.growth_days, 1) + 1, size=count)
    return np.where(initial, 0, later).astype(np.int32)


@lru_cache(maxsize=8)
def build_world(config: SyntheticConfig) -> World:
    """Build the static world for a configuration (cached: it is reused for every day)."""
    rng = np.random.default_rng([config.seed, 0])
    n_categories = len(CATEGORIES)

    # Each group loves three categories and browses the rest now and then.
    preference = np.full((config.groups, n_categories), 0.06)
    for group_number in range(config.groups):
        favourites = rng.choice(n_categories, size=3, replace=False)
        preference[group_number, favourites] = rng.dirichlet([4.0, 3.0, 2.0]) * 3.0
    preference /= preference.sum(axis=1, keepdims=True)

    # Every category gets at least one product; the rest spread uniformly.
    category = np.concatenate([np.arange(n_categories), rng.integers(0, n_categories, config.products - n_categories)])
    rng.shuffle(category)
    category_price_level = rng.uniform(2.5, 4.5, n_categories)  # log of a typical price
    price = np.round(np.exp(category_price_level[category] + rng.normal(0, 0.45, config.products)), 2)
    popularity = rng.pareto(1.3, config.products) + 0.05

    group = rng.choice(config.groups, size=config.customers, p=rng.dirichlet(np.full(config.groups, 8.0)))
    customer_first_seen = _arrival_days(rng, config.customers, config)
    product_first_seen = _arrival_days(rng, config.products, config)

    # Staples: three products from the customer's favourite categories, favouring popular ones.
    staples = np.empty((config.customers, 3), dtype=np.int64)
    by_category = [np.flatnonzero(category == c) for c in range(n_categories)]
    staple_categories = (
        rng.random((config.customers, 3))[..., None] > np.cumsum(preference[group], axis=1)[:, None, :]
    ).sum(axis=2)
    for c in range(n_categories):
        members = by_category[c]
        weights = popularity[members] / popularity[members].sum()
        mask = staple_categories == c
        staples[mask] = rng.choice(members, size=int(mask.sum()), p=weights)

    return World(
        config=config,
        group_preference=preference,
        product_category=category,
        product_brand=rng.integers(0, len(BRANDS), config.products),
        product_adjective=rng.integers(0, len(ADJECTIVES), config.products),
        product_noun=rng.integers(0, 3, config.products),
        product_price=price,
        product_popularity=popularity,
        product_first_seen=product_first_seen,
        customer_group=group,
        customer_price_sensitivity=rng.beta(2.0, 2.0, config.customers),
        customer_activity=rng.lognormal(0.0, 0.8, config.customers),
        customer_country=rng.choice(len(COUNTRIES), size=config.customers, p=COUNTRY_WEIGHTS),
        customer_age_band=rng.integers(0, len(AGE_BANDS), config.customers),
        customer_first_seen=customer_first_seen,
        customer_staples=staples,
        customer_rebuy_rate=rng.beta(2.0, 6.0, config.customers),
    )


def customer_id(number: np.ndarray | int) -> np.ndarray:
    """Customer numbers to ids (``C0000042``)."""
    return np.char.mod("C%07d", np.asarray(number, dtype=np.int64)).astype(object)


def product_id(number: np.ndarray | int) -> np.ndarray:
    """Product numbers to ids (``P000042``)."""
    return np.char.mod("P%06d", np.asarray(number, dtype=np.int64)).astype(object)


def _numbered(prefix: str, count: int, width: int) -> np.ndarray:
    return np.char.mod(f"{prefix}%0{width}d", np.arange(count)).astype(object)


def _noun(world: World, products: np.ndarray) -> list[str]:
    leaves = [TAXONOMY[c.split("/")[0]][c.split("/")[1]] for c in CATEGORIES]
    return [leaves[c][n] for c, n in zip(world.product_category[products], world.product_noun[products], strict=True)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sample_in_categories(
    rng: np.random.Generator, categories: np.ndarray, weights: np.ndarray, product_category: np.ndarray
) -> np.ndarray:
    """For each requested category, draw one product of that category with probability ~ weights."""
    chosen = np.empty(len(categories), dtype=np.int64)
    for c in np.unique(categories):
        members = np.flatnonzero((product_category == c) & (weights > 0))
        want = np.flatnonzero(categories == c)
        if len(members) == 0:
            # Nothing of that category exists yet: the shopper browses the most popular items instead.
            members = np.flatnonzero(weights > 0)
        cumulative = np.cumsum(weights[members])
        picks = np.searchsorted(cumulative, rng.random(len(want)) * cumulative[-1], side="right")
        chosen[want] = members[np.minimum(picks, len(members) - 1)]
    return chosen


def generate_day(config: SyntheticConfig, date: dt.date) -> dict[str, "pa.Table"]:
    """The raw tables of one day: events, orders, products, customers, reviews.

    Deterministic: the same config and date give the same tables, whatever else was generated.
    """
    import pyarrow as pa

    frames = generate_day_frames(config, date)
    tables = {}
    for name, frame in frames.items():
        schema = TABLES[name].arrow_schema()
        tables[name] = (
            pa.Table.from_pandas(frame, schema=schema, preserve_index=False) if len(frame) else schema.empty_table()
        )
    return tables


def generate_day_frames(config: SyntheticConfig, date: dt.date) -> dict[str, "pd.DataFrame"]:
    """Like :func:`generate_day`, as pandas frames."""
    import pandas as pd

    world = build_world(config)
    day = (date - config.epoch).days
    rng = np.random.default_rng([config.seed, 1, date.toordinal()])
    midnight = pd.Timestamp(date, tz="UTC")

    active_customers = np.flatnonzero(world.customer_first_seen <= day)
    product_weight = np.where(world.product_first_seen <= day, world.product_popularity, 0.0)
    # Today's prices: small promotions and mark-ups around the list price.
    todays_price = np.round(world.product_price * rng.uniform(0.9, 1.05, config.products), 2)

    customers = pd.DataFrame(
        {
            "customer_id": customer_id(active_customers),
            "first_seen": [
                config.epoch + dt.timedelta(days=int(d)) for d in world.customer_first_seen[active_customers]
            ],
            "country": np.asarray(COUNTRIES)[world.customer_country[active_customers]],
            "age_band": np.asarray(AGE_BANDS)[world.customer_age_band[active_customers]],
        }
    )
    listed = np.flatnonzero(product_weight > 0)
    products = pd.DataFrame(
        {
            "product_id": product_id(listed),
            "title": [
                f"{BRANDS[b]} {ADJECTIVES[a]} {n}"
                for b, a, n in zip(
                    world.product_brand[listed], world.product_adjective[listed], _noun(world, listed), strict=True
                )
            ],
            "category_path": np.asarray(CATEGORIES)[world.product_category[listed]],
            "brand": np.asarray(BRANDS)[world.product_brand[listed]],
            "price": world.product_price[listed],
            "first_seen": [config.epoch + dt.timedelta(days=int(d)) for d in world.product_first_seen[listed]],
        }
    )
    empty = {name: pd.DataFrame({c: [] for c in TABLES[name].column_names}) for name in ("events", "orders", "reviews")}
    if len(active_customers) == 0 or day < 0:
        return {
            "events": empty["events"],
            "orders": empty["orders"],
            "products": products,
            "customers": customers,
            "reviews": empty["reviews"],
        }

    # --- sessions -------------------------------------------------------------------------
    growth = len(active_customers) / config.customers
    n_sessions = int(rng.poisson(config.sessions_per_day * WEEKDAY_FACTOR[date.weekday()] * growth))
    activity = world.customer_activity[active_customers]
    session_customer = active_customers[
        np.searchsorted(np.cumsum(activity), rng.random(n_sessions) * activity.sum(), side="right").clip(
            0, len(active_customers) - 1
        )
    ]
    # Start times: busier in the evening; sessions end before midnight.
    hour = np.clip(rng.normal(np.where(rng.random(n_sessions) < 0.6, 20.0, 12.5), 3.0), 0.0, 22.5)
    session_start = hour * 3600.0 + rng.uniform(0, 60, n_sessions)
    group = world.customer_group[session_customer]
    staple_visit = rng.random(n_sessions) < world.customer_rebuy_rate[session_customer]
    staple = world.customer_staples[session_customer, rng.integers(0, 3, n_sessions)]
    staple_visit &= product_weight[staple] > 0
    preference_cdf = np.cumsum(world.group_preference[group], axis=1)
    session_category = (rng.random(n_sessions)[:, None] > preference_cdf).sum(axis=1)
    session_category = np.where(staple_visit, world.product_category[staple], session_category)
    has_search = (~staple_visit) & (rng.random(n_sessions) < 0.35)

    # --- views ----------------------------------------------------------------------------
    n_views = 1 + rng.poisson(np.where(staple_visit, 0.6, 2.6))
    view_session = np.repeat(np.arange(n_sessions), n_views)
    first_view = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    view_product = _sample_in_categories(rng, session_category[view_session], product_weight, world.product_category)
    staple_first = first_view[staple_visit]
    view_product[staple_first] = staple[staple_visit]
    view_customer = session_customer[view_session]
    is_staple = (world.customer_staples[view_customer] == view_product[:, None]).any(axis=1)

    affinity = world.affinity[view_customer, world.product_category[view_product]]
    relative_price = np.log(todays_price[view_product] / np.median(world.product_price))
    price_penalty = world.customer_price_sensitivity[view_customer] * np.maximum(relative_price, 0.0)
    # A product viewed twice in a session is carted and bought at most once.
    first_look = np.zeros(len(view_product), dtype=bool)
    first_look[np.unique(view_session * config.products + view_product, return_index=True)[1]] = True
    cart_odds = -3.6 + 3.4 * affinity - 1.4 * price_penalty + 3.0 * is_staple
    cart = first_look & (rng.random(len(view_product)) < _sigmoid(cart_odds))
    bought = cart & (rng.random(len(view_product)) < _sigmoid(-0.3 + 1.5 * affinity + 1.5 * is_staple))
    quantity = (1 + rng.poisson(np.where(is_staple, 0.8, 0.2))).astype(np.int32)

    # --- event times: search, then views (with carts right after), checkout at the end -----
    gaps = rng.exponential(35.0, len(view_product)) + 3.0
    elapsed = np.cumsum(gaps)
    view_offset = elapsed - np.repeat(elapsed[first_view] - gaps[first_view], n_views)
    view_time = session_start[view_session] + np.where(has_search[view_session], 20.0, 0.0) + view_offset
    session_end = np.maximum.reduceat(view_time, first_view) + 30.0
    day_end = 86_399.0
    view_time = np.minimum(view_time, day_end - 2)
    cart_time = np.minimum(view_time + rng.uniform(4, 25, len(view_product)), day_end - 1)
    purchase_time = np.minimum(session_end[view_session] + rng.uniform(0, 5, len(view_product)), day_end)

    stamp = date.strftime("%Y%m%d")
    session_ids = _numbered(f"S{stamp}-", n_sessions, 6)
    categories = np.asarray(CATEGORIES)
    leaf_words = [TAXONOMY[c.split("/")[0]][c.split("/")[1]] for c in CATEGORIES]
    searches = np.flatnonzero(has_search)
    queries = [
        f"{leaf_words[c][rng.integers(0, 3)]}"
        + (f" {BRANDS[rng.integers(0, len(BRANDS))].lower()}" if rng.random() < 0.3 else "")
        for c in session_category[searches]
    ]
    parts = [
        pd.DataFrame(
            {
                "t": session_start[searches],
                "session": searches,
                "event_type": "search",
                "product": -1,
                "quantity": 0,
                "query": queries,
            }
        ),
        pd.DataFrame(
            {
                "t": view_time,
                "session": view_session,
                "event_type": "view",
                "product": view_product,
                "quantity": 0,
                "query": None,
            }
        ),
        pd.DataFrame(
            {
                "t": cart_time[cart],
                "session": view_session[cart],
                "event_type": "add_to_cart",
                "product": view_product[cart],
                "quantity": quantity[cart],
                "query": None,
            }
        ),
        pd.DataFrame(
            {
                "t": purchase_time[bought],
                "session": view_session[bought],
                "event_type": "purchase",
                "product": view_product[bought],
                "quantity": quantity[bought],
                "query": None,
            }
        ),
    ]
    events = pd.concat(parts, ignore_index=True).sort_values(["t", "session", "event_type"], kind="stable")
    events = events.reset_index(drop=True)
    has_product = events["product"].to_numpy() >= 0
    product_numbers = events["product"].to_numpy()
    events_out = pd.DataFrame(
        {
            "event_id": _numbered(f"E{stamp}-", len(events), 8),
            "event_time": midnight + pd.to_timedelta(np.round(events["t"].to_numpy(), 3), unit="s"),
            "customer_id": customer_id(session_customer[events["session"].to_numpy()]),
            "session_id": session_ids[events["session"].to_numpy()],
            "event_type": events["event_type"].to_numpy(),
            "product_id": np.where(
                has_product, product_id(np.maximum(product_numbers, 0)), np.array(None, dtype=object)
            ),
            "quantity": pd.array(np.where(events["quantity"].to_numpy() > 0, events["quantity"], None), dtype="Int32"),
            "price": np.where(has_product, todays_price[np.maximum(product_numbers, 0)], np.nan),
            "query": events["query"].to_numpy(),
        }
    )

    # --- orders: one per session with purchases; a few lines cancelled later the same day ---
    purchased = np.flatnonzero(bought)
    order_session = view_session[purchased]
    order_sessions = np.unique(order_session)
    order_number = np.searchsorted(order_sessions, order_session)
    line_number = (np.arange(len(purchased)) - np.searchsorted(order_session, order_session)).astype(np.int32) + 1
    order_ids = np.char.mod(f"O{stamp}-%06d", order_number).astype(object)
    orders = pd.DataFrame(
        {
            "order_id": order_ids,
            "line_number": line_number,
            "order_time": midnight + pd.to_timedelta(np.round(purchase_time[purchased], 3), unit="s"),
            "customer_id": customer_id(view_customer[purchased]),
            "product_id": product_id(view_product[purchased]),
            "quantity": quantity[purchased],
            "unit_price": todays_price[view_product[purchased]],
            "is_cancellation": False,
        }
    )
    cancelled = orders[(rng.random(len(orders)) < 0.03) & (purchase_time[purchased] < day_end - 120)].copy()
    cancelled["order_id"] = cancelled["order_id"] + "-C"
    cancelled["order_time"] = cancelled["order_time"] + pd.to_timedelta(
        rng.uniform(60, 120, len(cancelled)).round(3), unit="s"
    )
    cancelled["quantity"] = -cancelled["quantity"]
    cancelled["is_cancellation"] = True
    orders = pd.concat([orders, cancelled], ignore_index=True)

    # --- reviews: some purchases get a review whose tone follows the customer's affinity -----
    reviewed = purchased[rng.random(len(purchased)) < 0.08]
    review_affinity = affinity[reviewed]
    rating = np.clip(np.round(1.6 + 3.2 * review_affinity + rng.normal(0, 0.6, len(reviewed))), 1, 5).astype(np.int32)
    nouns = _noun(world, view_product[reviewed])
    texts = [
        f"{(POSITIVE if r >= 4 else NEUTRAL if r == 3 else NEGATIVE)[rng.integers(0, 5 if r != 3 else 4)]}, "
        f"{'my favourite' if r >= 4 else 'an average' if r == 3 else 'a bad'} {noun} from {categories[c].split('/')[1]}"
        for r, noun, c in zip(rating, nouns, world.product_category[view_product[reviewed]], strict=True)
    ]
    reviews = pd.DataFrame(
        {
            "review_id": _numbered(f"R{stamp}-", len(reviewed), 6),
            "review_time": midnight
            + pd.to_timedelta(
                np.round(np.minimum(purchase_time[reviewed] + rng.uniform(60, 600, len(reviewed)), day_end), 3),
                unit="s",
            ),
            "customer_id": customer_id(view_customer[reviewed]),
            "product_id": product_id(view_product[reviewed]),
            "rating": rating,
            "text": texts,
        }
    )
    return {"events": events_out, "orders": orders, "products": products, "customers": customers, "reviews": reviews}


def ground_truth(config: SyntheticConfig) -> dict[str, "pd.DataFrame"]:
    """The planted structure, for tests and evaluation only (never landed in the lake).

    Returns:
        ``customers`` (customer_id, group, price_sensitivity, staples),
        ``products`` (product_id, category_path) and ``group_preference`` (group x category).
    """
    import pandas as pd

    world = build_world(config)
    customers = pd.DataFrame(
        {
            "customer_id": customer_id(np.arange(config.customers)),
            "group": world.customer_group,
            "price_sensitivity": world.customer_price_sensitivity,
            "staples": [list(product_id(s)) for s in world.customer_staples],
        }
    )
    products = pd.DataFrame(
        {
            "product_id": product_id(np.arange(config.products)),
            "category_path": np.asarray(CATEGORIES)[world.product_category],
        }
    )
    preference = pd.DataFrame(world.group_preference, columns=list(CATEGORIES))
    return {"customers": customers, "products": products, "group_preference": preference}
