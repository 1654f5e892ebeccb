"""Simulated card transactions in the TETA shape, with fraud episodes (``fraudstream generate``).

Follows the generation facts of ``data-spec.md`` and the shape of the public (Sparkov) data:
card holders with a home, gender, job, city and a profile (age band x gender x rural/urban) that
sets their spending rate, AM/PM split, category weights, typical amounts and travel share;
day-of-week and seasonal weights. Shapes taken from the public data:

* the hour of a transaction is uniform within the morning (00-11) or the afternoon/evening
  (12-23), so a fifth of legitimate spending falls at night (22:00-03:59) too;
* amounts are gamma-distributed with the category's mean and sd (positive, skewed), and an
  amount under $1 becomes a small one between $1 and $10: the long-tailed categories (shopping,
  misc_net, travel) have a median under $10 and a few very large amounts;
* merchants: 50 per category (700 in all), a transaction goes to any of its category's, so most
  transactions, legitimate or not, are at a merchant new to the holder;
* a tenth of the holders do not use their card (a rate of 0 a day): it shows up only through
  its fraud episode, so such a card always gets one.

A compromised card gets a *fraud episode*: about a day with 2-16 fraudulent transactions per day,
with high amounts in a few categories or tiny "card testing" amounts in others, mostly at night
(00:00-03:59 or 22:00-23:59, as the holder's AM/PM split goes), never far from home. As in the
public data, the holder's own spending pauses on the days of the episode (it goes on before and
after). Everything is drawn from one seeded generator and vectorised per column, so a seed gives
the same file and a million rows take seconds.
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import date
from typing import TYPE_CHECKING

from fraudstream import schema
from fraudstream.schema import CATEGORIES, TIME_FORMAT

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

TETA_COLUMNS: tuple[str, ...] = (*schema.TETA_COLUMNS, "target")  # output columns

# normal spending per category: (mean, sd) of the amount in USD
AMOUNTS: dict[str, tuple[float, float]] = {
    "entertainment": (65, 70),
    "food_dining": (60, 40),
    "gas_transport": (70, 15),
    "grocery_net": (60, 20),
    "grocery_pos": (110, 50),
    "health_fitness": (55, 45),
    "home": (60, 50),
    "kids_pets": (60, 50),
    "misc_net": (100, 150),
    "misc_pos": (65, 100),
    "personal_care": (50, 45),
    "shopping_net": (90, 200),
    "shopping_pos": (100, 225),
    "travel": (60, 600),
}
# fraud: high amounts (mean, sd) and small "card testing" categories
FRAUD_HIGH: dict[str, tuple[float, float]] = {
    "shopping_net": (1000, 100),
    "misc_net": (800, 80),
    "shopping_pos": (800, 80),
    "entertainment": (500, 50),
    "grocery_pos": (350, 20),
    "home": (250, 25),
    "food_dining": (120, 12),
}
FRAUD_HIGH_WEIGHTS = (0.22, 0.14, 0.18, 0.08, 0.22, 0.08, 0.08)
FRAUD_TINY: tuple[str, ...] = (
    "gas_transport",
    "grocery_net",
    "misc_pos",
    "health_fitness",
    "kids_pets",
    "personal_care",
    "travel",
)
FRAUD_TINY_SHARE = 0.3
FRAUD_TINY_AMOUNT = (5.0, 25.0)  # uniform range of a card-testing amount ("~8-20")
FRAUD_NIGHT_SHARE = 0.75
MERCHANTS_PER_CATEGORY = 50  # 14 x 50 = 700 merchants, as in the public data
# share of card holders who do not use their card themselves (a rate of 0 transactions a day):
# such a card shows up in the data only through its fraud episode, so it always gets one
DORMANT_SHARE = 0.1

# day-of-week weights (Mon..Sun)
DOW_WEIGHTS = (80, 100, 100, 100, 150, 175, 175)
NIGHT_AM_HOURS = 4  # night-time fraud: 00:00-03:59 in the morning ...
NIGHT_PM_HOUR = 22  # ... or 22:00-23:59 in the evening


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(sep))


FIRST_F = _words(
    "Mary Jennifer Linda Susan Karen Lisa Nancy Betty Sandra Donna Carol Ruth Sharon Michelle "
    "Laura Sarah Kimberly Deborah Jessica Shirley Cynthia Angela Melissa Brenda Amy Anna Rebecca "
    "Kathleen Amanda Stephanie Carolyn Christine Marie Janet Catherine Frances Ann Joyce Diane "
    "Alice Julie Heather Teresa Doris Gloria Evelyn Jean Cheryl Mildred Katherine Joan Ashley"
)
FIRST_M = _words(
    "James John Robert Michael William David Richard Charles Joseph Thomas Christopher Daniel "
    "Paul Mark Donald George Kenneth Steven Edward Brian Ronald Anthony Kevin Jason Matthew Gary "
    "Timothy Jose Larry Jeffrey Frank Scott Eric Stephen Andrew Raymond Gregory Joshua Jerry "
    "Dennis Walter Patrick Peter Harold Douglas Henry Carl Arthur Ryan Roger Joe Juan Jack Albert"
)
LAST = _words(
    "Smith Johnson Williams Brown Jones Miller Davis Garcia Rodriguez Wilson Martinez Anderson "
    "Taylor Thomas Hernandez Moore Martin Jackson Thompson White Lopez Lee Gonzalez Harris Clark "
    "Lewis Robinson Walker Perez Hall Young Allen Sanchez Wright King Scott Green Baker Adams "
    "Nelson Hill Ramirez Campbell Mitchell Roberts Carter Phillips Evans Turner Torres Parker "
    "Collins Edwards Stewart Flores Morris Nguyen Murphy Rivera Cook Rogers Morgan Peterson "
    "Cooper Reed Bailey Bell Gomez Kelly Howard Ward Cox Diaz Richardson Wood Watson Brooks "
    "Bennett Gray James Reyes Cruz Hughes Price Myers Long Foster Sanders Ross Morales Powell "
    "Sullivan Russell Ortiz Jenkins Gutierrez Perry Butler Barnes Fisher Henderson Coleman"
)
STREETS = _words(
    "Oak Pine Maple Cedar Elm Washington Lake Hill Park Walnut Sunset Lincoln Jackson Church "
    "River Willow Meadow Forest Highland Spring Ridge Valley Mill Cherry Chestnut Adams Madison "
    "Franklin Jefferson Monroe Center Prospect Union Lee Wood Dogwood Hickory Birch Aspen Laurel"
)
STREET_KINDS = _words("St Ave Rd Dr Ln Way Ct Pl Blvd Trail Green Crossing Spur Pass Loop")
JOBS = _words(
    "Teacher|Nurse|Accountant|Civil engineer|Electrician|Pharmacist|Chef|Police officer|"
    "Software developer|Lawyer|Farmer|Librarian|Architect|Dentist|Mechanic|Journalist|"
    "Graphic designer|Social worker|Plumber|Surveyor|Physiotherapist|Sales executive|"
    "Retail manager|Film editor|Musician|Research scientist|Paramedic|Pilot|Firefighter|"
    "Translator|Hotel manager|Economist|Geologist|Counsellor|Barista|Carpenter|Radiographer",
    "|",
)
SYLLABLES = "ash bel bro car dal el fair glen green har hol kings lake mar mill new port ross "
SYLLABLES += "spring ston sum val west wood"
CITY_ENDS = ("ville", "ton", " City", "burg", "field", " Falls", "dale", "wood", "port", "view")
STATES = _words(
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
    "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY"
)
MERCHANT_ENDS = ("LLC", "Inc", "and Sons", "Group", "Ltd", "PLC", "& Co", "Corp", "Brothers")


def _names(rng: np.random.Generator, size: int) -> list[str]:
    syl = _words(SYLLABLES)
    first = rng.choice(syl, size)
    second = rng.choice(syl, size)
    end = rng.choice(CITY_ENDS, size)
    return [f"{a.capitalize()}{b}{c}" for a, b, c in zip(first, second, end, strict=True)]


def _amounts(rng: np.random.Generator, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Positive, skewed amounts with the given mean and sd (gamma); an amount under $1 becomes
    a small one between $1 and $10, so categories with a long tail have many small amounts."""
    import numpy as np

    amount = rng.gamma((mean / sd) ** 2, sd**2 / mean)
    return np.where(amount < 1.0, rng.uniform(1.0, 10.0, len(amount)), amount)


def simulate(
    customers: int,
    start: date,
    end: date,
    seed: int = 0,
    episodes_per_year: float = 0.8,
) -> pd.DataFrame:
    """Transactions of ``customers`` card holders from ``start`` to ``end`` (both days included)."""
    import numpy as np
    import pandas as pd

    if customers < 1:
        raise ValueError("customers must be at least 1")
    if end < start:
        raise ValueError("end is before start")
    rng = np.random.default_rng(seed)
    n_cat = len(CATEGORIES)

    # --- places and merchants
    n_cities = max(10, customers // 4)
    city_name = np.array(_names(rng, n_cities), dtype=object)
    city_state = rng.choice(STATES, n_cities)
    city_lat = rng.uniform(26.0, 48.0, n_cities)
    city_lon = rng.uniform(-122.0, -70.0, n_cities)
    city_pop = np.clip(rng.lognormal(np.log(8000), 2.0, n_cities), 100, 2_900_000).astype(int)
    city_zip = rng.integers(1000, 99900, n_cities)
    merch_names = []
    for _ in CATEGORIES:
        seen: set[str] = set()
        while len(seen) < MERCHANTS_PER_CATEGORY:
            a, b = rng.choice(LAST, 2)
            style = int(rng.integers(3))
            name = (
                f"fraud_{a}-{b}"
                if style == 0
                else f"fraud_{a} {rng.choice(MERCHANT_ENDS)}"
                if style == 1
                else f"fraud_{a}, {b} and {rng.choice(LAST)}"
            )
            seen.add(name)
        merch_names.append(sorted(seen))
    merch_table = np.array(merch_names, dtype=object)  # (category, merchant)

    # --- card holders
    gender = np.where(rng.random(customers) < 0.5, "F", "M")
    first = np.where(
        gender == "F", rng.choice(FIRST_F, customers), rng.choice(FIRST_M, customers)
    ).astype(object)
    last = rng.choice(LAST, customers).astype(object)
    house = rng.integers(1, 99999, customers)
    street = np.array(
        [
            f"{h} {s} {k}"
            for h, s, k in zip(
                house,
                rng.choice(STREETS, customers),
                rng.choice(STREET_KINDS, customers),
                strict=True,
            )
        ],
        dtype=object,
    )
    keys: set[tuple[str, str, str]] = set()
    for i in range(customers):  # the card-holder key must be unique
        while (first[i], last[i], street[i]) in keys:
            street[i] = f"{int(rng.integers(1, 99999))} {street[i].split(' ', 1)[1]}"
        keys.add((first[i], last[i], street[i]))
    city = rng.integers(0, n_cities, customers)
    home_lat = city_lat[city] + rng.uniform(-0.1, 0.1, customers)
    home_lon = city_lon[city] + rng.uniform(-0.1, 0.1, customers)
    job = rng.choice(JOBS, customers).astype(object)
    age = rng.integers(18, 90, customers)
    band = np.digitize(age, [25, 50])  # 0: <25, 1: 25-50, 2: >50
    rural = city_pop[city] < 2500
    # profile: spending rate per day, AM share, category weights, amount scale, travel share
    base_rate = np.array([3.0, 2.6, 1.6])[band] * np.where(rural, 0.6, 1.0)
    base_rate *= np.where(gender == "F", 1.1, 1.0)
    rate = np.clip(base_rate * rng.lognormal(0.0, 0.35, customers), 0.2, 6.0)
    dormant = rng.random(customers) < DORMANT_SHARE
    rate[dormant] = 0.0
    am_share = rng.uniform(0.2, 0.5, customers)
    band_cat = np.ones((3, n_cat))
    band_cat[0, [CATEGORIES.index(c) for c in ("entertainment", "shopping_net", "food_dining")]] = 2
    band_cat[2, [CATEGORIES.index(c) for c in ("health_fitness", "grocery_pos", "home")]] = 2
    band_cat[:, CATEGORIES.index("travel")] = 0.5
    cat_weights = rng.dirichlet(np.ones(n_cat) * 3, customers) * band_cat[band]
    cat_cum = np.cumsum(cat_weights / cat_weights.sum(1, keepdims=True), axis=1)
    amount_scale = rng.lognormal(0.0, 0.25, customers)
    travel_share = rng.uniform(0.1, 0.3, customers)

    # --- legitimate spending: Poisson counts per (holder, day)
    days = pd.date_range(start, end, freq="D")
    dow = np.array(DOW_WEIGHTS, dtype=float)[days.day_of_week]
    dow /= np.mean(DOW_WEIGHTS)
    month, day = days.month.to_numpy(), days.day.to_numpy()
    season = np.ones(len(days))
    season[(month <= 2)] = 0.75
    season[(month >= 6) & (month <= 8)] = 1.25
    season[(month == 12) | ((month == 11) & (day == 30))] = 2.0
    counts = rng.poisson(rate[:, None] * (dow * season)[None, :])
    holder = np.repeat(np.repeat(np.arange(customers), len(days)), counts.ravel())
    day_idx = np.repeat(np.tile(np.arange(len(days)), customers), counts.ravel())
    n = len(holder)
    # the hour is uniform within the morning (00-11) or the afternoon/evening (12-23)
    am = rng.random(n) < am_share[holder]
    hour = rng.integers(0, 12, n) + np.where(am, 0, 12)
    day0 = days.values.astype("datetime64[s]").astype(np.int64)
    seconds = day0[day_idx] + hour * 3600 + rng.integers(0, 3600, n)
    cat = (rng.random(n)[:, None] > cat_cum[holder]).sum(1)
    cat = np.minimum(cat, n_cat - 1)
    cat_mean = np.array([AMOUNTS[c][0] for c in CATEGORIES])
    cat_sd = np.array([AMOUNTS[c][1] for c in CATEGORIES])
    amount = _amounts(rng, cat_mean[cat] * amount_scale[holder], cat_sd[cat] * amount_scale[holder])
    # any of the category's merchants: most transactions are at a merchant new to the holder
    merch_idx = rng.integers(0, MERCHANTS_PER_CATEGORY, n)
    travel = rng.random(n) < travel_share[holder]
    km = rng.uniform(100, 1000, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    d_lat = np.where(travel, km / 111.0 * np.sin(angle), rng.uniform(-1, 1, n))
    coslat = np.cos(np.radians(home_lat[holder]))
    d_lon = np.where(travel, km / (111.0 * coslat) * np.cos(angle), rng.uniform(-1, 1, n))
    target = np.zeros(n, dtype=np.int8)

    # --- fraud episodes
    span = (day0[-1] + 86_400) - day0[0]
    years = span / (365.25 * 86_400)
    n_ep = rng.poisson(episodes_per_year * years, customers)
    n_ep[dormant] = np.maximum(n_ep[dormant], 1)
    ep_holder = np.repeat(np.arange(customers), n_ep)
    n_eps = len(ep_holder)
    ep_start = day0[0] + rng.integers(0, max(span - 86_400, 1), n_eps)
    ep_len = rng.uniform(0.5, 1.5, n_eps) * 86_400
    ep_count = np.maximum(2, np.round(rng.uniform(2, 16, n_eps) * ep_len / 86_400)).astype(int)
    f_ep = np.repeat(np.arange(n_eps), ep_count)
    f_holder = ep_holder[f_ep]
    m = len(f_ep)
    f_sec = ep_start[f_ep] + (rng.random(m) * ep_len[f_ep]).astype(np.int64)
    # at night: early in the morning or late in the evening, as the holder's AM/PM split goes
    night = rng.random(m) < FRAUD_NIGHT_SHARE
    night_hour = np.where(
        rng.random(m) < am_share[f_holder],
        rng.integers(0, NIGHT_AM_HOURS, m),
        rng.integers(NIGHT_PM_HOUR, 24, m),
    )
    f_day = f_sec - f_sec % 86_400
    night_sec = f_day + night_hour * 3600 + rng.integers(0, 3600, m)
    f_sec = np.where(night, np.clip(night_sec, day0[0], day0[-1] + 86_399), f_sec)
    tiny = rng.random(m) < FRAUD_TINY_SHARE
    high_names = list(FRAUD_HIGH)
    high_pick = rng.choice(len(high_names), m, p=np.array(FRAUD_HIGH_WEIGHTS))
    tiny_pick = rng.integers(0, len(FRAUD_TINY), m)
    high_cat = np.array([CATEGORIES.index(c) for c in high_names])[high_pick]
    tiny_cat = np.array([CATEGORIES.index(c) for c in FRAUD_TINY])[tiny_pick]
    f_cat = np.where(tiny, tiny_cat, high_cat)
    high_mean = np.array([FRAUD_HIGH[c][0] for c in high_names])[high_pick]
    high_sd = np.array([FRAUD_HIGH[c][1] for c in high_names])[high_pick]
    f_amount = np.where(tiny, rng.uniform(*FRAUD_TINY_AMOUNT, m), _amounts(rng, high_mean, high_sd))
    f_merch = rng.integers(0, MERCHANTS_PER_CATEGORY, m)
    # as in the public data, the holder's own spending pauses on the days of the episode
    n_days = len(days)
    f_day_idx = np.clip((f_sec - day0[0]) // 86_400, 0, n_days - 1)
    keep = ~np.isin(holder * n_days + day_idx, f_holder * n_days + f_day_idx)
    holder, seconds, cat, amount = holder[keep], seconds[keep], cat[keep], amount[keep]
    merch_idx, d_lat, d_lon, target = merch_idx[keep], d_lat[keep], d_lon[keep], target[keep]

    # --- assemble
    holder = np.concatenate([holder, f_holder])
    seconds = np.concatenate([seconds, f_sec])
    cat = np.concatenate([cat, f_cat])
    amount = np.round(np.maximum(np.concatenate([amount, f_amount]), 1.0), 2)
    merch_idx = np.concatenate([merch_idx, f_merch])
    d_lat = np.concatenate([d_lat, rng.uniform(-1, 1, m)])
    d_lon = np.concatenate([d_lon, rng.uniform(-1, 1, m)])
    target = np.concatenate([target, np.ones(m, dtype=np.int8)])
    order = np.lexsort((holder, seconds))
    holder, seconds, cat = holder[order], seconds[order], cat[order]
    c_city = city[holder]
    frame = pd.DataFrame(
        {
            "transaction_time": seconds.astype("datetime64[s]"),
            "merch": merch_table[cat, merch_idx[order]],
            "cat_id": np.array(CATEGORIES, dtype=object)[cat],
            "amount": amount[order],
            "name_1": first[holder],
            "name_2": last[holder],
            "gender": gender[holder],
            "street": street[holder],
            "one_city": city_name[c_city],
            "us_state": city_state[c_city],
            "post_code": city_zip[c_city],
            "lat": np.round(home_lat[holder], 4),
            "lon": np.round(home_lon[holder], 4),
            "population_city": city_pop[c_city],
            "jobs": job[holder],
            "merchant_lat": np.round(np.clip(home_lat[holder] + d_lat[order], -89.9, 89.9), 6),
            "merchant_lon": np.round(((home_lon[holder] + d_lon[order] + 180) % 360) - 180, 6),
            "target": target[order],
        },
        columns=list(TETA_COLUMNS),
    )
    log.info(
        "simulated %d transactions (%d fraudulent in %d episodes) of %d holders",
        len(frame),
        m,
        n_eps,
        customers,
    )
    return frame


def write_csv(frame: pd.DataFrame, path: str) -> None:
    frame.to_csv(path, index=False, date_format=TIME_FORMAT)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=1000, help="card holders (default 1000)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2019, 1, 1))
    parser.add_argument("--end", type=date.fromisoformat, default=date(2019, 12, 31))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--episodes-per-year",
        type=float,
        default=0.8,
        help="fraud episodes per card holder and year (default 0.8)",
    )
    parser.add_argument("-o", "--output", required=True, help="CSV file to write")


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    try:
        frame = simulate(args.customers, args.start, args.end, args.seed, args.episodes_per_year)
    except ValueError as err:
        print(f"error: {err}")
        return 2
    write_csv(frame, args.output)
    print(
        f"wrote {len(frame):,} transactions ({int(frame['target'].sum()):,} fraudulent) "
        f"to {args.output} in {time.perf_counter() - began:.1f} s"
    )
    return 0
