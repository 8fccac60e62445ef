"""Synthetic data at scale: catalog, one day's query log and judgments as Spark column expressions.

Pure functions over `spark.range(...)`: no Python loop over rows, nothing collected. Every random choice is a
hash of (seed, a salt, ids) mapped to [0, 1), so the rows depend on the seed and the sizes only, never on the
partitioning. The entry points are `catalog`, `query_log` and `judgments`; `ScaleShape` holds their sizes.

How the data is made:
- product `p` has type TYPES[p % len(TYPES)] (types come in departments of TYPES_PER_DEPARTMENT), and a hashed
  brand, color, material, size and title words;
- query `q` asks for a hashed type (its name or a synonym), a color, maybe a brand, and its own number (so no two
  queries normalize to the same text); its candidates are ceil(C/2) products of its type and the rest of one
  other type (a sibling in its department half of the time), each half stepped through with a prime stride,
  so the C products are distinct;
- the truth grade: same type and color 3, same type 2, same department 1, else 0;
- searches per query are Pareto-tailed (P(searches >= k) = k^-1.8: about 1.9 per query, 70% with one); each
  search shows the query's candidates in a hashed order at positions 1..C, clicks fall with position and rise
  with the grade, and some clicks lead to add_to_cart and then purchase.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

# (name, synonym, category path); consecutive groups of TYPES_PER_DEPARTMENT types form a department.
TYPES: tuple[tuple[str, str, str], ...] = (
    ("blender", "smoothie maker", "Home > Kitchen > Blenders"),
    ("toaster", "bread toaster", "Home > Kitchen > Toasters"),
    ("kettle", "tea kettle", "Home > Kitchen > Kettles"),
    ("coffee maker", "espresso machine", "Home > Kitchen > Coffee Makers"),
    ("air fryer", "convection fryer", "Home > Kitchen > Air Fryers"),
    ("sofa", "couch", "Furniture > Living Room > Sofas"),
    ("armchair", "accent chair", "Furniture > Living Room > Armchairs"),
    ("bookshelf", "book case", "Furniture > Living Room > Bookshelves"),
    ("desk", "work table", "Furniture > Office > Desks"),
    ("bed frame", "platform bed", "Furniture > Bedroom > Bed Frames"),
    ("pillow", "bed cushion", "Home > Bedding > Pillows"),
    ("duvet", "comforter", "Home > Bedding > Duvets"),
    ("mattress topper", "mattress pad", "Home > Bedding > Mattress Toppers"),
    ("blanket", "throw", "Home > Bedding > Blankets"),
    ("sheet set", "bed sheets", "Home > Bedding > Sheet Sets"),
    ("headphones", "earphones", "Electronics > Audio > Headphones"),
    ("speaker", "soundbar", "Electronics > Audio > Speakers"),
    ("monitor", "computer screen", "Electronics > Computers > Monitors"),
    ("keyboard", "typing keypad", "Electronics > Computers > Keyboards"),
    ("webcam", "video camera", "Electronics > Computers > Webcams"),
    ("tent", "camping shelter", "Outdoors > Camping > Tents"),
    ("sleeping bag", "camping quilt", "Outdoors > Camping > Sleeping Bags"),
    ("backpack", "rucksack", "Outdoors > Hiking > Backpacks"),
    ("camping stove", "portable burner", "Outdoors > Camping > Stoves"),
    ("hiking boots", "trail shoes", "Outdoors > Hiking > Boots"),
    ("jacket", "coat", "Clothing > Outerwear > Jackets"),
    ("hoodie", "sweatshirt", "Clothing > Tops > Hoodies"),
    ("sneakers", "trainers", "Clothing > Shoes > Sneakers"),
    ("t-shirt", "tee", "Clothing > Tops > T-Shirts"),
    ("jeans", "denim pants", "Clothing > Bottoms > Jeans"),
    ("towel", "bath sheet", "Home > Bath > Towels"),
    ("bath mat", "shower rug", "Home > Bath > Bath Mats"),
    ("shower curtain", "bath curtain", "Home > Bath > Shower Curtains"),
    ("soap dispenser", "lotion pump", "Home > Bath > Soap Dispensers"),
    ("bathrobe", "dressing gown", "Home > Bath > Bathrobes"),
    ("drill", "power driver", "Tools > Power Tools > Drills"),
    ("screwdriver set", "bit set", "Tools > Hand Tools > Screwdrivers"),
    ("tool box", "tool chest", "Tools > Storage > Tool Boxes"),
    ("ladder", "step stool", "Tools > Equipment > Ladders"),
    ("work light", "flood lamp", "Tools > Equipment > Work Lights"),
)
TYPES_PER_DEPARTMENT = 5
BRANDS = ("Nordhaven", "Oakline", "Casa Verde", "Hearthwood", "Loftique", "Birchway", "Dwellmore", "Brightpeak",
          "Kestrel", "Ironbark", "Solvia", "Marlow", "Quillon", "Tundra", "Vexa", "Pinecrest", "Arcadia", "Zephyr",
          "Halcyon", "Ridgeback", "Lumora", "Fjordlund", "Copperleaf", "Stonebridge", "Wavecrest", "Emberly",
          "Northwind", "Silverline", "Redwood & Co", "Bluegate")
COLORS = ("black", "white", "gray", "navy", "red", "green", "beige", "silver", "blue", "brown")
MATERIALS = ("steel", "aluminum", "oak", "bamboo", "cotton", "linen", "leather", "wool", "plastic", "glass")
SIZES = ("small", "medium", "large", "compact", "family size", "travel size")
SERIES = ("Pro", "Max", "Lite", "Classic", "Essential", "Plus", "Elite", "Studio", "Urban", "Select")
ADJECTIVES = ("durable", "lightweight", "premium", "modern", "ergonomic", "quiet", "foldable", "rustic",
              "sleek", "heavy-duty", "eco-friendly", "minimalist")
FEATURES = ("Easy to clean and built to last.", "Backed by a two-year warranty.", "Ships ready to use.",
            "Designed for everyday use.", "Tested for safety and comfort.", "A favorite for small spaces.",
            "Made with responsibly sourced materials.", "Includes a storage pouch.",
            "Fits most standard setups.", "Comes in gift-ready packaging.")

SEARCH_TAIL_EXPONENT = 1.8       # P(searches of a query >= k) = k^-1.8: about 1.9 searches per query
MAX_SEARCHES_PER_QUERY = 5000
CLICK_BASE = 0.3                 # click probability at position 1 of a grade-3 product
CLICK_POSITION_DECAY = 0.7       # ... times position^-0.7
CLICK_BY_GRADE = (0.1, 0.35, 0.8, 1.0)
CART_RATE = 0.2                  # of clicks
PURCHASE_RATE = 0.35             # of add_to_carts
SEARCH_WINDOW_S = 86_400 - 600   # searches start in the ds, 10 minutes before its end at the latest


@dataclass(frozen=True)
class ScaleShape:
    """The sizes every table derives from: n_queries x candidates_per_query distinct (query, product) pairs."""

    seed: int
    n_products: int
    n_queries: int
    candidates_per_query: int

    def __post_init__(self) -> None:
        if self.n_queries < 1 or self.candidates_per_query < 1:
            raise ValueError(f"need at least one query and one candidate per query, got {self.n_queries} queries "
                             f"of {self.candidates_per_query} candidates")
        fewest = self.n_products // len(TYPES)
        if fewest < self.same_type_slots:
            raise ValueError(f"{self.n_products} products give {fewest} of each of the {len(TYPES)} types, fewer than "
                             f"the {self.same_type_slots} candidates a query takes from one type: use at least "
                             f"{len(TYPES) * self.same_type_slots} products or fewer candidates per query")

    @property
    def same_type_slots(self) -> int:
        """Candidates from the query's own type (the rest come from one other type)."""
        return (self.candidates_per_query + 1) // 2


def _unit(seed: int, salt: str, *cols: Column) -> Column:
    """A uniform number in [0, 1) from a hash of the seed, a salt and the columns."""
    return F.shiftrightunsigned(F.xxhash64(F.lit(seed), F.lit(salt), *cols), 11).cast("double") / float(1 << 53)


def _pick(seed: int, salt: str, n: int, *cols: Column) -> Column:
    """A hashed integer in [0, n)."""
    return F.floor(_unit(seed, salt, *cols) * n).cast("long")


def _choice(words: tuple[str, ...], index: Column) -> Column:
    return F.array(*[F.lit(w) for w in words])[index]


def _day_start_ms(ds: str) -> int:
    return int(dt.datetime.fromisoformat(ds).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def _prime_strides(n: int, count: int) -> list[int]:
    """`count` primes spread over (n, 2n]: strides coprime to any modulus <= n, with varied remainders."""
    def next_prime(m: int) -> int:
        while m < 2 or any(m % d == 0 for d in range(2, math.isqrt(m) + 1)):
            m += 1
        return m

    return [next_prime(n + 1 + i * (n // count + 1)) for i in range(count)]


# Product attributes: functions of the product number alone, shared by the catalog and the truth.
def product_type(pid: Column) -> Column:
    return (pid % len(TYPES)).cast("int")


def product_color(seed: int, pid: Column) -> Column:
    return _pick(seed, "color", len(COLORS), pid)


def _department(type_index: Column) -> Column:
    return F.floor(type_index / TYPES_PER_DEPARTMENT)


def product_id(pid: Column) -> Column:
    return F.format_string("SP%08d", pid)


def catalog(spark: SparkSession, seed: int, n_products: int, updated_before: str, partitions: int) -> DataFrame:
    """`catalog` rows: n_products products with worded titles, a category path and 2-3 attributes, updated in
    the 90 days before `updated_before` (a date)."""
    pid = F.col("id")
    kind = product_type(pid)
    brand = _choice(BRANDS, _pick(seed, "brand", len(BRANDS), pid))
    color = _choice(COLORS, product_color(seed, pid))
    material = _choice(MATERIALS, _pick(seed, "material", len(MATERIALS), pid))
    size = _choice(SIZES, _pick(seed, "size", len(SIZES), pid))
    name = _choice(tuple(t[0] for t in TYPES), kind)
    adjective = _choice(ADJECTIVES, _pick(seed, "adjective", len(ADJECTIVES), pid))
    series = F.when(_unit(seed, "has_series", pid) < 0.6, _choice(SERIES, _pick(seed, "series", len(SERIES), pid)))
    title = F.concat_ws(" ", brand, series, F.initcap(F.concat_ws(" ", adjective, color, material, name)),
                        F.when(_unit(seed, "size_in_title", pid) < 0.3, F.concat(F.lit("- "), size)))
    description = F.format_string("A %s %s from %s, made of %s, in %s. %s", adjective, name, brand, material, color,
                                  _choice(FEATURES, _pick(seed, "feature", len(FEATURES), pid)))
    attributes = F.when(_unit(seed, "has_size", pid) < 0.5,
                        F.create_map(F.lit("color"), color, F.lit("material"), material, F.lit("size"), size)) \
        .otherwise(F.create_map(F.lit("color"), color, F.lit("material"), material))
    age_ms = 1000 * (3600 + _pick(seed, "updated", 90 * 86_400, pid))
    return spark.range(n_products, numPartitions=partitions).select(
        product_id(pid).alias("product_id"),
        title.alias("title"),
        description.alias("description"),
        brand.alias("brand"),
        _choice(tuple(t[2] for t in TYPES), kind).alias("category"),
        attributes.alias("attributes"),
        F.timestamp_millis(F.lit(_day_start_ms(updated_before)) - age_ms).alias("updated_at"),
    )


def _queries(spark: SparkSession, shape: ScaleShape, n: int, partitions: int) -> DataFrame:
    """The first `n` queries: qid, their type, color, other type, candidate walk and canonical text."""
    seed, qid, n_types = shape.seed, F.col("id"), len(TYPES)
    kind = _pick(seed, "qtype", n_types, qid).cast("int")
    sibling = _department(kind) * TYPES_PER_DEPARTMENT + (
        kind % TYPES_PER_DEPARTMENT + 1 + _pick(seed, "sibling", TYPES_PER_DEPARTMENT - 1, qid)) % TYPES_PER_DEPARTMENT
    elsewhere = (kind + 1 + _pick(seed, "elsewhere", n_types - 1, qid)) % n_types
    strides = _prime_strides(shape.n_products, 16)
    coprimes = [a for a in range(1, shape.candidates_per_query + 1) if math.gcd(a, shape.candidates_per_query) == 1]
    word = F.when(_unit(seed, "synonym", qid) < 0.25, _choice(tuple(t[1] for t in TYPES), kind)) \
        .otherwise(_choice(tuple(t[0] for t in TYPES), kind))
    brand = F.when(_unit(seed, "qbrand", qid) < 0.3, F.lower(_choice(BRANDS, _pick(seed, "qbrand_pick", len(BRANDS), qid))))
    color = _pick(seed, "qcolor", len(COLORS), qid)
    return spark.range(n, numPartitions=partitions).select(
        qid.alias("qid"),
        kind.alias("qtype"),
        color.alias("qcolor"),
        F.when(_unit(seed, "near", qid) < 0.5, sibling).otherwise(elsewhere).cast("int").alias("other_type"),
        F.array(*[F.lit(p) for p in strides])[_pick(seed, "stride", len(strides), qid)].alias("stride"),
        _pick(seed, "start", 1 << 30, qid).alias("start"),
        F.array(*[F.lit(a) for a in coprimes])[_pick(seed, "order", len(coprimes), qid)].alias("order_step"),
        _pick(seed, "order_shift", shape.candidates_per_query, qid).alias("order_shift"),
        F.concat_ws(" ", brand, _choice(COLORS, color), word, qid.cast("string")).alias("query_text"),
    )


def _candidates(queries: DataFrame, shape: ScaleShape) -> DataFrame:
    """One row per (query, candidate slot): the product number, its position in every search and its true grade.

    Slots below `same_type_slots` walk the query's type, the rest the other type: product = type + n_types * k,
    with k = (start + j * stride) mod (products of that type), distinct for j below that count (prime stride)."""
    n_types, c = len(TYPES), shape.candidates_per_query
    slot = F.col("slot")
    own = slot < shape.same_type_slots
    kind = F.when(own, F.col("qtype")).otherwise(F.col("other_type"))
    step = F.when(own, slot).otherwise(slot - shape.same_type_slots)
    of_kind = F.floor((F.lit(shape.n_products) - kind + n_types - 1) / n_types)
    pid = kind + n_types * F.pmod(F.col("start") + step * F.col("stride"), of_kind)
    color_match = product_color(shape.seed, F.col("pid")) == F.col("qcolor")
    grade = (F.when(F.col("ptype") == F.col("qtype"), F.when(color_match, 3).otherwise(2))
             .when(_department(F.col("ptype")) == _department(F.col("qtype")), 1).otherwise(0))
    return (queries.withColumn("slot", F.explode(F.sequence(F.lit(0), F.lit(c - 1))))
            .withColumn("pid", pid.cast("long"))
            .withColumn("ptype", product_type(F.col("pid")))
            .withColumn("position", (F.pmod(slot * F.col("order_step") + F.col("order_shift"), F.lit(c)) + 1).cast("long"))
            .withColumn("grade", grade))


def query_log(spark: SparkSession, shape: ScaleShape, ds: str, partitions: int) -> DataFrame:
    """`query_log` rows of `ds`: every search of every query, an impression per candidate, and the clicks,
    add_to_carts and purchases that follow (timestamps apart per event, so no two events are equal)."""
    seed = shape.seed
    qid, k = F.col("qid"), F.col("search")
    tail = F.pow(1.0 - _unit(seed, "searches", qid), -1.0 / SEARCH_TAIL_EXPONENT)  # 1 - u lies in (0, 1]
    searches = F.least(F.floor(tail), F.lit(MAX_SEARCHES_PER_QUERY)).cast("int")
    started = F.lit(_day_start_ms(ds)) + _pick(seed, "start_ms", SEARCH_WINDOW_S * 1000, qid, k)
    client = F.format_string("u%08d", _pick(seed, "client", shape.n_queries, qid, k))
    raw = F.col("query_text")
    case = _unit(seed, "case", qid, k)
    per_search = (_queries(spark, shape, shape.n_queries, partitions)
                  .withColumn("search", F.explode(F.sequence(F.lit(0), searches - 1)))
                  .select("*",
                          F.format_string("q%d-s%d", qid, k).alias("query_id"),
                          client.alias("client_id"),
                          started.alias("started_ms"),
                          F.when(case < 0.2, F.initcap(raw)).when(case < 0.25, F.upper(raw)).otherwise(raw).alias("user_query"))
                  .withColumn("session_id", F.format_string("%s-%016x", F.col("client_id"), F.xxhash64(
                      F.lit(seed), F.col("client_id"), F.floor(F.col("started_ms") / 1_800_000)))))

    slot, position = F.col("slot"), F.col("position")
    click_p = (F.lit(CLICK_BASE) * F.pow(position.cast("double"), -CLICK_POSITION_DECAY)
               * F.array(*[F.lit(p) for p in CLICK_BY_GRADE])[F.col("grade")])
    clicked = _unit(seed, "click", qid, k, slot) < click_p
    carted = clicked & (_unit(seed, "cart", qid, k, slot) < CART_RATE)
    bought = carted & (_unit(seed, "purchase", qid, k, slot) < PURCHASE_RATE)
    click_ms = 1500 + _pick(seed, "click_ms", 20_000, qid, k, slot)
    cart_ms = click_ms + 15_000 + _pick(seed, "cart_ms", 60_000, qid, k, slot)
    buy_ms = cart_ms + 30_000 + _pick(seed, "buy_ms", 120_000, qid, k, slot)

    def action(name: str, offset_ms: Column | int) -> Column:
        return F.struct(F.lit(name).alias("name"), (F.col("started_ms") + offset_ms + position).alias("at_ms"))

    actions = F.filter(F.array(action("impression", 0), F.when(clicked, action("click", click_ms)),
                               F.when(carted, action("add_to_cart", cart_ms)), F.when(bought, action("purchase", buy_ms))),
                       lambda a: a.isNotNull())
    events = _candidates(per_search, shape).withColumn("event", F.explode(actions))
    return events.select(
        "query_id", "client_id", "session_id", "user_query",
        F.timestamp_millis(F.col("event.at_ms")).alias("timestamp"),
        F.col("event.name").alias("action_name"),
        product_id(F.col("pid")).alias("object_id"),
        "position",
        F.lit(ds).alias("ds"),
    )


def judgments(spark: SparkSession, shape: ScaleShape, judged_queries: int, labels: dict[int, str],
              source: str) -> DataFrame:
    """`judgments` rows: the true grade of every candidate of the first `judged_queries` queries (all in the log),
    capped at the highest grade of `labels` (grade -> label) and labelled with it."""
    top = max(labels)
    grade = F.least(F.col("grade"), F.lit(top)).cast("long")
    label = F.create_map(*[c for g, name in sorted(labels.items()) for c in (F.lit(g).cast("long"), F.lit(name))])[grade]
    queries = _queries(spark, shape, min(judged_queries, shape.n_queries), 1)
    return _candidates(queries, shape).select(
        F.col("query_text").alias("query"),
        product_id(F.col("pid")).alias("product_id"),
        grade.alias("grade"),
        label.alias("label"),
        F.lit(source).alias("source"),
    )
