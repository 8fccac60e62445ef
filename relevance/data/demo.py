"""Deterministic synthetic e-commerce data: catalog, UBI query log, judgments, ground truth.

Pure functions (numpy + pandas, no Spark, no I/O). The entry point is `generate_demo`.

How the data is made:
- a taxonomy of top categories -> product types (canonical name + synonyms, attributes, brands);
- products with templated titles/descriptions, a few near-duplicates and sparse products, and
  accessories ("sofa cover for couch", "tv stand", "laptop bag") that share a type's words and
  attribute values but are Irrelevant to its queries: the trap of lexical and embedding matchers;
- query intents = product type (maybe via a synonym) + attribute/brand constraints, brand-only
  queries, negations, misspellings; Zipf popularity; raw text varies in case/spacing/punctuation;
- the true grade compares the intent with the product (type, constraints, related types);
- a lexical production engine with noise ranks products, clicks are position-biased and
  relevance-dependent, add_to_cart and purchase follow clicks;
- judgments pool plausible candidates per judged query (the most-shown products first, then the
  same type with and without the asked attributes, accessories, related types, same category),
  with label noise.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from relevance.settings import GenerateSettings
from udfs.text import normalize_text

# purity: no pyspark torch transformers

# --------------------------------------------------------------------------------------------
# Taxonomy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductType:
    """A product type: canonical name, synonyms, category path and attribute value lists.

    `accessory_for` names the type an accessory goes with ("sofa cover" -> "sofa"): its text
    shares that type's words and attribute values, yet it is Irrelevant to that type's queries
    (and the other way round), the trap every lexical matcher and embedding falls into.
    """

    name: str
    synonyms: tuple[str, ...]
    category: str
    attributes: dict[str, tuple[str, ...]]
    accessory_for: str = ""


@dataclass(frozen=True)
class TopCategory:
    """A top-level category with its brands, a usage phrase and its product types."""

    name: str
    brands: tuple[str, ...]
    usage: str
    types: tuple[ProductType, ...]


_HOME_COLORS = ("gray", "beige", "white", "black", "brown", "navy", "green", "blue")
_WEAR_COLORS = ("black", "white", "gray", "navy", "red", "blue", "green", "pink", "beige")
_TECH_COLORS = ("black", "silver", "white", "gray", "blue")
_KITCHEN_COLORS = ("black", "red", "white", "silver", "blue", "green")
_DECOR_STYLES = ("modern", "mid-century", "farmhouse", "scandinavian", "industrial")
_WEAR_SIZES = ("xs", "s", "m", "l", "xl")

TAXONOMY: tuple[TopCategory, ...] = (
    TopCategory(
        "Furniture",
        ("Nordhaven", "Oakline", "Casa Verde", "Hearthwood", "Loftique", "Birchway", "Dwellmore"),
        "any living space",
        (
            ProductType("sofa", ("couch", "settee"), "Furniture > Living Room > Sofas",
                        {"color": _HOME_COLORS, "material": ("linen", "velvet", "leather", "microfiber"),
                         "size": ("2-seat", "3-seat", "sectional"), "style": _DECOR_STYLES}),
            ProductType("armchair", ("accent chair", "lounge chair"), "Furniture > Living Room > Armchairs",
                        {"color": _HOME_COLORS, "material": ("linen", "velvet", "leather", "boucle"),
                         "style": _DECOR_STYLES}),
            ProductType("coffee table", ("cocktail table", "center table"), "Furniture > Living Room > Coffee Tables",
                        {"color": ("white", "black", "brown", "natural"),
                         "material": ("oak", "walnut", "glass", "marble", "metal"),
                         "shape": ("round", "rectangular", "oval"), "style": _DECOR_STYLES}),
            ProductType("bed", ("bed frame", "bedstead"), "Furniture > Bedroom > Beds",
                        {"color": _HOME_COLORS, "material": ("wood", "metal", "upholstered"),
                         "size": ("twin", "full", "queen", "king"), "style": _DECOR_STYLES}),
            ProductType("desk", ("writing desk", "workstation"), "Furniture > Office > Desks",
                        {"color": ("white", "black", "brown", "natural"),
                         "material": ("oak", "walnut", "metal", "glass"),
                         "size": ("compact", "standard", "large"), "style": _DECOR_STYLES}),
            ProductType("dining chair", ("kitchen chair", "side chair"), "Furniture > Dining Room > Dining Chairs",
                        {"color": _HOME_COLORS, "material": ("wood", "metal", "plastic", "velvet"),
                         "pack": ("set of 2", "set of 4"), "style": _DECOR_STYLES}),
            ProductType("sofa cover", ("couch cover", "sofa slipcover"), "Furniture > Living Room > Sofa Covers",
                        {"color": _HOME_COLORS, "material": ("stretch", "velvet", "microfiber", "linen"),
                         "size": ("2-seat", "3-seat", "sectional")}, accessory_for="sofa"),
            ProductType("bed sheets", ("sheet set", "bed linen"), "Furniture > Bedroom > Bed Sheets",
                        {"color": _HOME_COLORS, "material": ("cotton", "linen", "microfiber", "bamboo"),
                         "size": ("twin", "full", "queen", "king")}, accessory_for="bed"),
            ProductType("desk organizer", ("desk tidy", "desk caddy"), "Furniture > Office > Desk Organizers",
                        {"color": ("white", "black", "natural"), "material": ("wood", "metal", "plastic")},
                        accessory_for="desk"),
            ProductType("dining chair cushion", ("chair pad", "seat cushion"),
                        "Furniture > Dining Room > Chair Cushions",
                        {"color": _HOME_COLORS, "material": ("cotton", "velvet", "memory foam"),
                         "pack": ("set of 2", "set of 4")}, accessory_for="dining chair"),
            ProductType("armchair cover", ("chair slipcover", "accent chair cover"), "Furniture > Living Room > Chair Covers",
                        {"color": _HOME_COLORS, "material": ("stretch", "velvet", "linen")}, accessory_for="armchair"),
            ProductType("desk mat", ("desk pad", "desk blotter"), "Furniture > Office > Desk Mats",
                        {"color": ("black", "gray", "brown"), "material": ("leather", "felt", "cork"),
                         "size": ("compact", "standard", "large")}, accessory_for="desk"),
        ),
    ),
    TopCategory(
        "Clothing",
        ("Northpeak", "Urban Thread", "Bluefield", "Cotton Lane", "Stridewell", "Vantera", "Harbor & Pine"),
        "everyday wear",
        (
            ProductType("t-shirt", ("tee", "tshirt"), "Clothing > Tops > T-Shirts",
                        {"color": _WEAR_COLORS, "material": ("cotton", "organic cotton", "polyester", "linen"),
                         "fit": ("slim", "regular", "oversized"), "sleeve": ("short sleeve", "long sleeve"),
                         "size": _WEAR_SIZES}),
            ProductType("hoodie", ("hooded sweatshirt", "hoody"), "Clothing > Tops > Hoodies",
                        {"color": _WEAR_COLORS, "material": ("cotton", "fleece", "polyester"),
                         "fit": ("slim", "regular", "oversized"), "size": _WEAR_SIZES}),
            ProductType("jeans", ("denims", "denim pants"), "Clothing > Bottoms > Jeans",
                        {"color": ("blue", "black", "light blue", "gray"),
                         "fit": ("skinny", "slim", "straight", "relaxed", "bootcut"),
                         "size": ("28", "30", "32", "34", "36")}),
            ProductType("sneakers", ("trainers", "kicks", "tennis shoes"), "Clothing > Shoes > Sneakers",
                        {"color": _WEAR_COLORS, "material": ("leather", "mesh", "canvas", "suede"),
                         "style": ("low-top", "high-top", "slip-on"), "size": ("7", "8", "9", "10", "11")}),
            ProductType("dress", ("frock", "gown"), "Clothing > Women > Dresses",
                        {"color": _WEAR_COLORS, "material": ("cotton", "silk", "linen", "chiffon"),
                         "length": ("mini", "midi", "maxi"), "size": _WEAR_SIZES}),
            ProductType("jacket", ("coat", "windbreaker"), "Clothing > Outerwear > Jackets",
                        {"color": _WEAR_COLORS, "material": ("denim", "leather", "nylon", "wool"),
                         "style": ("bomber", "puffer", "rain"), "size": _WEAR_SIZES}),
            ProductType("sneaker laces", ("shoelaces", "shoe laces"), "Clothing > Shoes > Laces",
                        {"color": _WEAR_COLORS, "style": ("flat", "round", "elastic")}, accessory_for="sneakers"),
            ProductType("jeans hanger", ("trouser hanger", "pants hanger"), "Clothing > Storage > Hangers",
                        {"color": ("black", "white", "natural"), "material": ("wood", "metal", "velvet"),
                         "pack": ("set of 5", "set of 10")}, accessory_for="jeans"),
            ProductType("sneaker cleaner", ("shoe cleaner", "sneaker cleaning kit"), "Clothing > Shoes > Shoe Care",
                        {"kind": ("foam", "spray", "wipes")}, accessory_for="sneakers"),
            ProductType("t-shirt folding board", ("shirt folder", "tee folding board"), "Clothing > Storage > Folding Boards",
                        {"color": ("white", "black", "blue"), "material": ("plastic", "cardboard")}, accessory_for="t-shirt"),
            ProductType("dress form", ("mannequin", "dress dummy"), "Clothing > Sewing > Dress Forms",
                        {"color": ("black", "white", "beige"), "size": _WEAR_SIZES}, accessory_for="dress"),
        ),
    ),
    TopCategory(
        "Electronics",
        ("Voltix", "Zentro", "Auralis", "Pixelon", "Quorra", "Nexbyte"),
        "work and play",
        (
            ProductType("laptop", ("notebook", "ultrabook"), "Electronics > Computers > Laptops",
                        {"color": ("black", "silver", "gray"), "screen": ("13 inch", "14 inch", "15.6 inch", "17 inch"),
                         "memory": ("8gb ram", "16gb ram", "32gb ram"), "storage": ("256gb", "512gb", "1tb")}),
            ProductType("tablet", ("slate", "tablet pc"), "Electronics > Computers > Tablets",
                        {"color": _TECH_COLORS, "screen": ("8 inch", "10 inch", "11 inch", "12.9 inch"),
                         "storage": ("64gb", "128gb", "256gb")}),
            ProductType("tv", ("television", "smart tv", "flat screen"), "Electronics > TV & Video > Televisions",
                        {"screen": ("43 inch", "55 inch", "65 inch", "75 inch"),
                         "resolution": ("1080p", "4k", "8k"), "panel": ("led", "oled", "qled")}),
            ProductType("headphones", ("earphones", "headset", "cans"), "Electronics > Audio > Headphones",
                        {"color": _TECH_COLORS, "style": ("over-ear", "on-ear", "in-ear"),
                         "connectivity": ("wireless", "wired")}),
            ProductType("smartphone", ("cell phone", "mobile phone", "cellphone"), "Electronics > Phones > Smartphones",
                        {"color": _TECH_COLORS, "storage": ("64gb", "128gb", "256gb", "512gb"),
                         "screen": ("6.1 inch", "6.7 inch")}),
            ProductType("speaker", ("loudspeaker", "boombox"), "Electronics > Audio > Speakers",
                        {"color": _TECH_COLORS, "connectivity": ("wireless", "wired"),
                         "size": ("portable", "bookshelf", "floorstanding")}),
            ProductType("laptop bag", ("laptop sleeve", "laptop case", "notebook bag"),
                        "Electronics > Accessories > Laptop Bags",
                        {"color": _TECH_COLORS, "material": ("nylon", "leather", "neoprene"),
                         "screen": ("13 inch", "14 inch", "15.6 inch", "17 inch")}, accessory_for="laptop"),
            ProductType("tablet case", ("tablet cover", "folio case"), "Electronics > Accessories > Tablet Cases",
                        {"color": _TECH_COLORS, "material": ("silicone", "leather", "plastic"),
                         "screen": ("8 inch", "10 inch", "11 inch", "12.9 inch")}, accessory_for="tablet"),
            ProductType("tv stand", ("tv mount", "tv console", "tv wall mount"), "Electronics > TV & Video > TV Stands",
                        {"color": ("black", "white", "brown"), "material": ("wood", "metal", "glass"),
                         "screen": ("43 inch", "55 inch", "65 inch", "75 inch")}, accessory_for="tv"),
            ProductType("phone case", ("smartphone case", "cell phone case", "phone cover"),
                        "Electronics > Accessories > Phone Cases",
                        {"color": _TECH_COLORS, "material": ("silicone", "leather", "clear plastic"),
                         "screen": ("6.1 inch", "6.7 inch")}, accessory_for="smartphone"),
            ProductType("headphone stand", ("headphone hanger", "headset stand"), "Electronics > Audio > Headphone Stands",
                        {"color": _TECH_COLORS, "material": ("aluminum", "wood", "acrylic")},
                        accessory_for="headphones"),
            ProductType("laptop stand", ("laptop riser", "notebook stand"), "Electronics > Accessories > Laptop Stands",
                        {"color": _TECH_COLORS, "material": ("aluminum", "wood", "plastic")}, accessory_for="laptop"),
            ProductType("tv remote", ("remote control", "tv remote control"), "Electronics > TV & Video > Remotes",
                        {"color": ("black", "white"), "connectivity": ("wireless", "infrared")}, accessory_for="tv"),
            ProductType("phone charger", ("charging cable", "usb charger", "phone charging cable"),
                        "Electronics > Accessories > Chargers",
                        {"color": _TECH_COLORS, "connectivity": ("wired", "wireless")}, accessory_for="smartphone"),
            ProductType("speaker stand", ("speaker mount", "speaker stands"), "Electronics > Audio > Speaker Stands",
                        {"color": _TECH_COLORS, "size": ("bookshelf", "floorstanding")}, accessory_for="speaker"),
        ),
    ),
    TopCategory(
        "Kitchen",
        ("Copperpot", "Chefline", "Brewhaus", "Panterra", "Kitchenly", "Ember & Oak", "Saltmill"),
        "your kitchen",
        (
            ProductType("frying pan", ("skillet", "fry pan", "frypan"), "Kitchen > Cookware > Frying Pans",
                        {"color": _KITCHEN_COLORS,
                         "material": ("cast iron", "stainless steel", "nonstick", "copper", "carbon steel"),
                         "size": ("8 inch", "10 inch", "12 inch")}),
            ProductType("coffee maker", ("coffee machine", "brewer"), "Kitchen > Appliances > Coffee Makers",
                        {"color": _KITCHEN_COLORS, "kind": ("drip", "espresso", "single-serve", "pour-over"),
                         "capacity": ("4 cup", "8 cup", "12 cup")}),
            ProductType("blender", ("smoothie maker", "liquidizer"), "Kitchen > Appliances > Blenders",
                        {"color": _KITCHEN_COLORS, "power": ("500w", "1000w", "1500w"),
                         "kind": ("countertop", "personal", "immersion")}),
            ProductType("mug", ("coffee cup", "cup"), "Kitchen > Dinnerware > Mugs",
                        {"color": _KITCHEN_COLORS, "material": ("ceramic", "stoneware", "glass", "stainless steel"),
                         "capacity": ("12 oz", "16 oz", "20 oz"), "pack": ("single", "set of 2", "set of 4")}),
            ProductType("kitchen knife", ("chef knife", "cleaver", "cooks knife"), "Kitchen > Cutlery > Knives",
                        {"material": ("stainless steel", "carbon steel", "ceramic", "damascus steel"),
                         "size": ("6 inch", "8 inch", "10 inch")}),
            ProductType("frying pan lid", ("skillet lid", "pan lid", "splatter guard"), "Kitchen > Cookware > Lids",
                        {"material": ("glass", "stainless steel", "silicone"), "size": ("8 inch", "10 inch", "12 inch")},
                        accessory_for="frying pan"),
            ProductType("coffee maker filters", ("coffee filters", "paper filters"), "Kitchen > Coffee > Filters",
                        {"kind": ("basket", "cone", "reusable"), "pack": ("100 count", "200 count")},
                        accessory_for="coffee maker"),
            ProductType("blender bottle", ("shaker bottle", "protein shaker"), "Kitchen > Drinkware > Shaker Bottles",
                        {"color": _KITCHEN_COLORS, "capacity": ("20 oz", "28 oz")}, accessory_for="blender"),
            ProductType("mug rack", ("mug tree", "mug holder", "cup holder"), "Kitchen > Storage > Mug Racks",
                        {"color": ("black", "white", "natural"), "material": ("wood", "metal")}, accessory_for="mug"),
            ProductType("kitchen knife sharpener", ("knife sharpener", "whetstone", "honing rod"),
                        "Kitchen > Cutlery > Sharpeners",
                        {"kind": ("manual", "electric", "stone")}, accessory_for="kitchen knife"),
            ProductType("coffee maker descaler", ("descaling solution", "coffee machine cleaner"),
                        "Kitchen > Coffee > Descalers", {"kind": ("liquid", "tablets", "powder")},
                        accessory_for="coffee maker"),
            ProductType("mug warmer", ("cup warmer", "coffee mug warmer"), "Kitchen > Appliances > Mug Warmers",
                        {"color": _KITCHEN_COLORS, "power": ("20w", "36w")}, accessory_for="mug"),
            ProductType("blender blade", ("blender replacement blade", "blender blade assembly"),
                        "Kitchen > Appliances > Blender Parts", {"material": ("stainless steel", "titanium")},
                        accessory_for="blender"),
        ),
    ),
    TopCategory(
        "Home Decor",
        ("Lumenhaus", "Weaveworks", "Hollis Home", "Amberlight", "Driftwood Co", "Maison Rue"),
        "a cozy home",
        (
            ProductType("lamp", ("light", "luminaire"), "Home Decor > Lighting > Lamps",
                        {"color": _HOME_COLORS, "material": ("brass", "ceramic", "glass", "metal", "wood"),
                         "kind": ("table", "floor", "desk")}),
            ProductType("rug", ("carpet", "floor covering"), "Home Decor > Rugs > Area Rugs",
                        {"color": _HOME_COLORS, "material": ("wool", "jute", "cotton", "polypropylene"),
                         "size": ("2x3", "5x7", "8x10"), "pattern": ("solid", "striped", "geometric", "floral")}),
            ProductType("curtains", ("drapes", "drapery", "window panels"), "Home Decor > Window > Curtains",
                        {"color": _HOME_COLORS, "material": ("linen", "velvet", "cotton", "polyester"),
                         "length": ("63 inch", "84 inch", "96 inch"), "opacity": ("blackout", "sheer")}),
            ProductType("throw pillow", ("cushion", "accent pillow", "decorative pillow"),
                        "Home Decor > Pillows > Throw Pillows",
                        {"color": _HOME_COLORS, "material": ("velvet", "linen", "cotton", "faux fur"),
                         "size": ("18x18", "20x20", "12x20")}),
            ProductType("mirror", ("looking glass", "wall mirror"), "Home Decor > Wall Decor > Mirrors",
                        {"shape": ("round", "rectangular", "oval", "arched"),
                         "frame": ("gold", "black metal", "wood", "frameless"), "size": ("small", "medium", "large")}),
            ProductType("lamp shade", ("lampshade", "light shade"), "Home Decor > Lighting > Lamp Shades",
                        {"color": _HOME_COLORS, "material": ("linen", "fabric", "paper", "glass"),
                         "size": ("small", "medium", "large")}, accessory_for="lamp"),
            ProductType("rug pad", ("rug gripper", "carpet underlay", "rug underlay"), "Home Decor > Rugs > Rug Pads",
                        {"material": ("felt", "rubber"), "size": ("2x3", "5x7", "8x10")}, accessory_for="rug"),
            ProductType("curtain rod", ("curtain rail", "drapery rod"), "Home Decor > Window > Curtain Rods",
                        {"color": ("black", "brass", "silver", "white"), "length": ("48 inch", "72 inch", "120 inch")},
                        accessory_for="curtains"),
            ProductType("throw pillow cover", ("cushion cover", "pillowcase", "pillow cover"),
                        "Home Decor > Pillows > Pillow Covers",
                        {"color": _HOME_COLORS, "material": ("velvet", "linen", "cotton"),
                         "size": ("18x18", "20x20", "12x20")}, accessory_for="throw pillow"),
            ProductType("throw pillow insert", ("pillow insert", "pillow form", "cushion insert"),
                        "Home Decor > Pillows > Pillow Inserts",
                        {"material": ("polyester fill", "down", "feather"), "size": ("18x18", "20x20", "12x20")},
                        accessory_for="throw pillow"),
            ProductType("curtain tiebacks", ("curtain holdbacks", "drapery tiebacks"), "Home Decor > Window > Tiebacks",
                        {"color": _HOME_COLORS, "material": ("rope", "metal", "velvet")}, accessory_for="curtains"),
            ProductType("lamp bulb", ("light bulb", "led bulb"), "Home Decor > Lighting > Bulbs",
                        {"kind": ("warm white", "daylight"), "pack": ("single", "set of 4")}, accessory_for="lamp"),
        ),
    ),
    TopCategory(
        "Sports & Outdoors",
        ("Trailcrest", "Summitgear", "Flexcore", "Ridgeline", "Peakform", "Wildpath", "Tempo Athletics"),
        "the outdoors and the gym",
        (
            ProductType("tent", ("shelter", "camping shelter"), "Sports & Outdoors > Camping > Tents",
                        {"color": ("green", "orange", "blue", "gray"),
                         "capacity": ("1-person", "2-person", "4-person", "6-person"),
                         "season": ("3-season", "4-season")}),
            ProductType("yoga mat", ("exercise mat", "fitness mat", "pilates mat"),
                        "Sports & Outdoors > Fitness > Yoga Mats",
                        {"color": ("purple", "black", "blue", "pink", "green"),
                         "material": ("tpe", "pvc", "natural rubber", "cork"), "thickness": ("4mm", "6mm", "8mm")}),
            ProductType("bicycle", ("bike", "cycle"), "Sports & Outdoors > Cycling > Bikes",
                        {"color": ("black", "red", "blue", "white", "green"),
                         "kind": ("road", "mountain", "hybrid", "electric"), "size": ("small", "medium", "large")}),
            ProductType("backpack", ("rucksack", "daypack", "knapsack"), "Sports & Outdoors > Hiking > Backpacks",
                        {"color": ("black", "gray", "green", "blue", "orange"),
                         "capacity": ("20l", "30l", "45l", "65l"), "material": ("nylon", "polyester", "canvas")}),
            ProductType("dumbbells", ("hand weights", "free weights"), "Sports & Outdoors > Fitness > Dumbbells",
                        {"weight": ("5 lb", "10 lb", "15 lb", "20 lb", "25 lb"),
                         "material": ("cast iron", "neoprene", "rubber", "chrome"), "pack": ("pair", "single")}),
            ProductType("tent stakes", ("tent pegs", "ground stakes"), "Sports & Outdoors > Camping > Tent Stakes",
                        {"material": ("aluminum", "steel", "titanium"), "pack": ("set of 8", "set of 12")},
                        accessory_for="tent"),
            ProductType("yoga mat bag", ("yoga mat strap", "mat carrier"), "Sports & Outdoors > Fitness > Mat Bags",
                        {"color": ("purple", "black", "blue", "pink", "green"), "material": ("canvas", "nylon")},
                        accessory_for="yoga mat"),
            ProductType("bike helmet", ("bicycle helmet", "cycling helmet"), "Sports & Outdoors > Cycling > Helmets",
                        {"color": ("black", "red", "blue", "white", "green"), "size": ("small", "medium", "large")},
                        accessory_for="bicycle"),
            ProductType("bike lock", ("bicycle lock", "u-lock", "cable lock"), "Sports & Outdoors > Cycling > Locks",
                        {"color": ("black", "red", "blue"), "kind": ("u-lock", "cable", "chain")}, accessory_for="bicycle"),
            ProductType("tent footprint", ("ground sheet", "tent tarp"), "Sports & Outdoors > Camping > Footprints",
                        {"color": ("green", "gray"), "capacity": ("1-person", "2-person", "4-person", "6-person")},
                        accessory_for="tent"),
            ProductType("backpack rain cover", ("pack cover", "rucksack cover"), "Sports & Outdoors > Hiking > Pack Covers",
                        {"color": ("black", "orange", "green"), "capacity": ("20l", "30l", "45l", "65l")},
                        accessory_for="backpack"),
            ProductType("dumbbell rack", ("weight rack", "dumbbell stand"), "Sports & Outdoors > Fitness > Weight Racks",
                        {"material": ("steel", "wood"), "capacity": ("5 pairs", "10 pairs")}, accessory_for="dumbbells"),
        ),
    ),
)

# Types that are "Partial" for each other's queries (a related, substitutable type).
RELATED_TYPES: tuple[tuple[str, str], ...] = (
    ("sofa", "armchair"), ("armchair", "dining chair"), ("coffee table", "desk"),
    ("t-shirt", "hoodie"), ("hoodie", "jacket"), ("laptop", "tablet"), ("tablet", "smartphone"),
    ("headphones", "speaker"), ("coffee maker", "blender"), ("tent", "backpack"), ("yoga mat", "dumbbells"),
)

# How users sometimes spell attribute values differently from the catalog.
QUERY_VALUE_VARIANTS: dict[str, tuple[str, ...]] = {
    "gray": ("grey",), "navy": ("navy blue",), "nonstick": ("non-stick",), "4k": ("uhd", "4k uhd"),
    "wireless": ("bluetooth", "cordless"), "stainless steel": ("steel",), "microfiber": ("microfibre",),
}

_MODEL_NAMES = ("Oslo", "Aria", "Nova", "Milan", "Vega", "Atlas", "Luna", "Sierra", "Orion", "Kyoto",
                "Bergen", "Cleo", "Dune", "Ember", "Fjord", "Haven", "Iris", "Juno", "Kai", "Lyra")
_STOPWORDS = frozenset({"in", "by", "with", "without", "no", "not", "non", "the", "and", "for", "a", "of", "size"})
_MAX_CONSTRAINTS = 4
_VARIANT_PROBS = np.array([0.70, 0.15, 0.10, 0.05])
_P_CLICK = np.array([0.06, 0.25, 0.55])  # by true grade 0/1/2, given the result was examined
_P_CART = np.array([0.02, 0.10, 0.30])  # given a click
_P_BUY = np.array([0.10, 0.30, 0.55])  # given add_to_cart
_SHOWN_SHARE = 0.6  # of a judged pool: the products shown most often for the query
_LABELS = np.array(["Irrelevant", "Partial", "Exact"], dtype=object)
_US_PER_S = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_S

# --------------------------------------------------------------------------------------------
# Vocabulary: flat, integer-coded views of the taxonomy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vocab:
    types: tuple[ProductType, ...]
    type_top: np.ndarray  # type -> top category index
    brands: tuple[str, ...]
    brand_top: np.ndarray  # brand -> top category index
    attr_keys: tuple[str, ...]
    value_codes: dict[str, int]  # attribute value -> code (codes are global across keys)
    related: np.ndarray  # (n_types, n_types) bool
    accessory: np.ndarray  # (n_types, n_types) bool: one is an accessory of the other


def _build_vocab() -> _Vocab:
    """Flatten the taxonomy into integer codes used by the vectorized grading."""
    types = tuple(t for top in TAXONOMY for t in top.types)
    type_top = np.array([i for i, top in enumerate(TAXONOMY) for _ in top.types], dtype=np.int64)
    brands = tuple(b for top in TAXONOMY for b in top.brands)
    brand_top = np.array([i for i, top in enumerate(TAXONOMY) for _ in top.brands], dtype=np.int64)
    attr_keys = tuple(sorted({k for t in types for k in t.attributes}))
    values = sorted({v for t in types for vals in t.attributes.values() for v in vals})
    index = {t.name: i for i, t in enumerate(types)}
    related = np.zeros((len(types), len(types)), dtype=bool)
    for a, b in RELATED_TYPES:
        related[index[a], index[b]] = related[index[b], index[a]] = True
    accessory = np.zeros_like(related)
    for i, t in enumerate(types):
        if t.accessory_for:
            accessory[i, index[t.accessory_for]] = accessory[index[t.accessory_for], i] = True
    return _Vocab(types, type_top, brands, brand_top, attr_keys, {v: i for i, v in enumerate(values)}, related,
                  accessory)


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    """Engine tokenizer: lowercase alphanumeric runs with a naive plural stemmer."""
    out = []
    for tok in re.findall(r"[a-z0-9]+", text.lower()):
        if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
            tok = tok[:-1]
        out.append(tok)
    return out


def _cap(text: str) -> str:
    """Capitalize the first letter of every lowercase alphabetic word (keeps '8gb', 'tpe' readable)."""
    return " ".join(w[:1].upper() + w[1:] if w[:1].isalpha() else w for w in text.split(" "))


def _render_value(key: str, value: str) -> str:
    """How an attribute value reads in a title or query ('m' -> 'size m')."""
    if key == "size" and (len(value) <= 2 or value.isdigit()):
        return f"size {value}"
    if key == "kind" and value in ("table", "floor", "desk"):
        return f"{value}-standing" if value == "floor" else value
    return value


def _misspell(rng: np.random.Generator, text: str) -> str:
    """Corrupt the longest word of `text` with one edit (drop, swap, double or replace a letter)."""
    words = text.split(" ")
    i = max(range(len(words)), key=lambda j: (len(words[j]), -j))
    word = words[i]
    if len(word) < 4:
        return text
    pos = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(0, 4))
    if op == 0:
        new = word[:pos] + word[pos + 1:]
    elif op == 1:
        new = word[:pos] + word[pos + 1] + word[pos] + word[pos + 2:]
    elif op == 2:
        new = word[:pos] + word[pos] + word[pos:]
    else:
        new = word[:pos] + "aeiou"[int(rng.integers(0, 5))] + word[pos + 1:]
    if new == word:
        new = word[:pos] + word[pos + 1:]
    words[i] = new
    return " ".join(words)


def _raw_variant(rng: np.random.Generator, text: str) -> str:
    """A raw spelling of the same query: case, doubled spaces, trailing punctuation."""
    out = text
    for _ in range(int(rng.integers(1, 3))):
        op = int(rng.integers(0, 5))
        if op == 0:
            out = out.title()
        elif op == 1:
            out = out[:1].upper() + out[1:]
        elif op == 2 and " " in out:
            out = out.replace(" ", "  ", 1)
        elif op == 3:
            out = out.rstrip("!?.") + str(rng.choice(["!", "?", ".", "!!"]))
        else:
            out = out.upper() if len(out) < 12 else out + " "
    return out if out != text else text + "!"


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Products:
    type: np.ndarray  # (n,) type index
    brand: np.ndarray  # (n,) brand index, -1 when unknown
    attr: np.ndarray  # (n_keys, n) value code, -1 when absent
    titles: list[str]


_ACCESSORY_WEIGHT = 0.7  # popularity of accessories relative to other types


def _type_weights(rng: np.random.Generator, vocab: _Vocab) -> np.ndarray:
    """Uneven popularity of product types (shared by the catalog and the queries)."""
    w = rng.dirichlet(np.full(len(vocab.types), 3.0))
    w *= np.where([bool(t.accessory_for) for t in vocab.types], _ACCESSORY_WEIGHT, 1.0)
    return w / w.sum()


def _title(rng: np.random.Generator, brand: str, type_word: str, adjs: list[str]) -> str:
    """Compose a product title from one of several templates."""
    model = str(rng.choice(_MODEL_NAMES))
    adj = " ".join(adjs)
    templates = (
        f"{brand} {adj} {type_word}",
        f"{type_word} in {adj} by {brand}",
        f"{brand} {model} {type_word} - {adj}",
        f"{adj} {type_word}, {model} Collection",
        f"{model} {adj} {type_word} | {brand}",
        f"{brand} {type_word} {model}, {adj}",
    )
    return _cap(" ".join(str(rng.choice(templates)).split()))


def _description(rng: np.random.Generator, top: TopCategory, ptype: ProductType, brand: str,
                 attrs: dict[str, str]) -> str:
    """Two or three sentences mentioning the type (maybe a synonym) and the attributes."""
    word = str(rng.choice((ptype.name,) + ptype.synonyms))
    feats = ", ".join(f"{k} {v}" for k, v in attrs.items())
    sentences = [
        f"This {attrs.get('style', attrs.get('color', ''))} {word} is made for {top.usage}.",
        f"Details: {feats}.",
        f"{brand} designs it to last." if brand else "Simple and practical.",
        f"A great pick if you are looking for a {word}.",
        f"Pairs well with the rest of our {ptype.category.split(' > ')[-1].lower()} range.",
    ]
    picks = rng.choice(len(sentences), size=int(rng.integers(2, 4)), replace=False)
    return " ".join(" ".join(sentences[i].split()) for i in sorted(picks))


def _generate_catalog(rng: np.random.Generator, vocab: _Vocab, n_products: int, end_us: int,
                      type_w: np.ndarray) -> tuple[_Products, pd.DataFrame]:
    """Products with templated text, ~3% near-duplicates and ~3% sparse products."""
    type_idx = rng.choice(len(vocab.types), size=n_products, p=type_w)
    kind = rng.random(n_products)  # < .03 near-duplicate, < .06 sparse, else regular
    rows: list[dict] = []
    brand_idx = np.full(n_products, -1, dtype=np.int64)
    for i in range(n_products):
        if i > 0 and kind[i] < 0.03:
            src = int(rng.integers(0, i))
            rows.append(dict(rows[src]))
            type_idx[i], brand_idx[i] = type_idx[src], brand_idx[src]
            continue
        t = int(type_idx[i])
        ptype, top = vocab.types[t], TAXONOMY[int(vocab.type_top[t])]
        attrs = {k: str(rng.choice(vals)) for k, vals in ptype.attributes.items()}
        type_word = ptype.name if rng.random() < 0.7 else str(rng.choice(ptype.synonyms))
        if ptype.accessory_for and rng.random() < 0.6:  # "Stretch Sofa Cover for Couch", like real listings
            parent = next(p for p in vocab.types if p.name == ptype.accessory_for)
            type_word = f"{type_word} for {rng.choice((parent.name,) + parent.synonyms)}"
        if kind[i] < 0.06:
            keep = list(attrs)[: int(rng.integers(1, 3))]
            attrs = {k: attrs[k] for k in keep}
            adj = _render_value(keep[0], attrs[keep[0]])
            title = _cap(f"{adj} {type_word}" if rng.random() < 0.5 else type_word)
            rows.append({"title": title, "description": "", "brand": "", "category": ptype.category,
                         "attributes": attrs})
            continue
        b = int(rng.choice(np.flatnonzero(vocab.brand_top == vocab.type_top[t])))
        brand_idx[i] = b
        brand = vocab.brands[b]
        shown = rng.choice(list(attrs), size=int(rng.integers(1, min(3, len(attrs)) + 1)), replace=False)
        adjs = [_render_value(k, attrs[k]) for k in attrs if k in set(shown)]
        rows.append({"title": _title(rng, brand, type_word, adjs),
                     "description": _description(rng, top, ptype, brand, attrs),
                     "brand": brand, "category": ptype.category, "attributes": attrs})
    attr = np.full((len(vocab.attr_keys), n_products), -1, dtype=np.int64)
    key_pos = {k: j for j, k in enumerate(vocab.attr_keys)}
    for i, row in enumerate(rows):
        for k, v in row["attributes"].items():
            attr[key_pos[k], i] = vocab.value_codes[v]
    updated = end_us - rng.integers(_US_PER_DAY, 365 * _US_PER_DAY, size=n_products)
    frame = pd.DataFrame({
        "product_id": [f"P{i:06d}" for i in range(n_products)],
        "title": [r["title"] for r in rows],
        "description": [r["description"] for r in rows],
        "brand": [r["brand"] for r in rows],
        "category": [r["category"] for r in rows],
        "attributes": pd.Series([dict(r["attributes"]) for r in rows], dtype=object),
        "updated_at": _to_utc(updated),
    })
    products = _Products(type_idx.astype(np.int64), brand_idx, attr, [r["title"] for r in rows])
    return products, frame


# --------------------------------------------------------------------------------------------
# Query intents
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Intents:
    type: np.ndarray  # (q,) type index, -1 for brand-only
    brand: np.ndarray  # (q,) brand index, -1 when none
    ck: np.ndarray  # (q, C) constraint attribute key index, -1 padding
    cv: np.ndarray  # (q, C) constraint value code
    cneg: np.ndarray  # (q, C) negated constraint
    texts: list[str]  # canonical (lowercase) query text
    variants: np.ndarray  # (q, V) raw spellings; column 0 is the canonical text
    popularity: np.ndarray  # (q,) Zipf probabilities


_INTENT_KINDS = ("type", "one_attr", "two_attr", "brand_type", "brand", "long_tail", "negation")
_INTENT_KIND_P = np.array([0.22, 0.26, 0.14, 0.10, 0.06, 0.14, 0.08])


def _intent_text(rng: np.random.Generator, ptype: ProductType, brand: str | None,
                 constraints: list[tuple[str, str, bool]]) -> str:
    """Render an intent as a query a user would type."""
    word = ptype.name if rng.random() < 0.55 else str(rng.choice(ptype.synonyms))
    adjs = []
    for key, value, neg in constraints:
        if not neg:
            if value in QUERY_VALUE_VARIANTS and rng.random() < 0.4:
                value = str(rng.choice(QUERY_VALUE_VARIANTS[value]))
            adjs.append(_render_value(key, value))
    text = " ".join(adjs + [word]) if rng.random() < 0.75 else " ".join([word] + adjs)
    if brand:
        text = f"{brand} {text}" if rng.random() < 0.75 else f"{text} by {brand}"
    for _, value, neg in constraints:
        if neg:
            form = int(rng.integers(0, 4))
            text = (f"{text} without {value}", f"{text} no {value}", f"non {value} {text}",
                    f"{text} not {value}")[form]
    return text.lower()


def _draw_intent(rng: np.random.Generator, vocab: _Vocab, type_w: np.ndarray
                 ) -> tuple[int, int, list[tuple[str, str, bool]], str, bool]:
    """One random intent: (type, brand, constraints, canonical text, misspelled)."""
    kind = _INTENT_KINDS[int(rng.choice(len(_INTENT_KINDS), p=_INTENT_KIND_P))]
    t = int(rng.choice(len(vocab.types), p=type_w))
    ptype = vocab.types[t]
    brands_of_type = np.flatnonzero(vocab.brand_top == vocab.type_top[t])
    if kind == "brand":
        b = int(rng.integers(0, len(vocab.brands)))
        return -1, b, [], vocab.brands[b].lower(), False
    keys = list(ptype.attributes)
    n_attr = {"type": 0, "one_attr": 1, "two_attr": 2, "brand_type": 0, "long_tail": 3, "negation": 0}[kind]
    n_attr = min(n_attr, len(keys))
    chosen: np.ndarray | list[str] = rng.choice(keys, size=n_attr, replace=False) if n_attr else []
    constraints = [(str(k), str(rng.choice(ptype.attributes[str(k)])), False) for k in chosen]
    b = -1
    if kind == "brand_type" or (kind == "long_tail" and rng.random() < 0.3):
        b = int(rng.choice(brands_of_type))
    if kind == "negation":
        neg_key = "material" if "material" in ptype.attributes else keys[0]
        constraints.append((neg_key, str(rng.choice(ptype.attributes[neg_key])), True))
        other = [k for k in keys if k != neg_key]
        if other and rng.random() < 0.4:
            k = str(rng.choice(other))
            constraints.insert(0, (k, str(rng.choice(ptype.attributes[k])), False))
    text = _intent_text(rng, ptype, vocab.brands[b] if b >= 0 else None, constraints)
    misspelled = bool(rng.random() < 0.05)
    if misspelled:
        text = _misspell(rng, text)
    return t, b, constraints, text, misspelled


def _generate_intents(rng: np.random.Generator, vocab: _Vocab, n_queries: int, type_w: np.ndarray,
                      n_variants: int = len(_VARIANT_PROBS)) -> _Intents:
    """Distinct intents (by normalized text) with Zipf popularity favouring short queries."""
    seen: set[str] = set()
    drawn: list[tuple[int, int, list[tuple[str, str, bool]], str, bool]] = []
    for _ in range(max(50, n_queries * 50)):
        if len(drawn) >= n_queries:
            break
        intent = _draw_intent(rng, vocab, type_w)
        norm = normalize_text(intent[3])
        if norm and norm not in seen:
            seen.add(norm)
            drawn.append(intent)
    q = len(drawn)
    ck = np.full((q, _MAX_CONSTRAINTS), -1, dtype=np.int64)
    cv = np.full((q, _MAX_CONSTRAINTS), -1, dtype=np.int64)
    cneg = np.zeros((q, _MAX_CONSTRAINTS), dtype=bool)
    key_pos = {k: j for j, k in enumerate(vocab.attr_keys)}
    for i, (_, _, constraints, _, _) in enumerate(drawn):
        for c, (k, v, neg) in enumerate(constraints[:_MAX_CONSTRAINTS]):
            ck[i, c], cv[i, c], cneg[i, c] = key_pos[k], vocab.value_codes[v], neg
    texts = [d[3] for d in drawn]
    variants = np.empty((q, n_variants), dtype=object)
    for i, text in enumerate(texts):
        variants[i, 0] = text
        for col in range(1, n_variants):
            variants[i, col] = _raw_variant(rng, text)
    complexity = ((ck >= 0).sum(axis=1) + np.array([d[1] >= 0 for d in drawn]) + 2.0 * np.array([d[4] for d in drawn])
                  + rng.uniform(0, 3.0, q))
    rank = np.empty(q, dtype=np.int64)
    rank[np.argsort(complexity, kind="stable")] = np.arange(q)
    pop = 1.0 / (rank + 1.0) ** 1.07
    return _Intents(np.array([d[0] for d in drawn], dtype=np.int64), np.array([d[1] for d in drawn], dtype=np.int64),
                    ck, cv, cneg, texts, variants, pop / pop.sum())


# --------------------------------------------------------------------------------------------
# True relevance
# --------------------------------------------------------------------------------------------


def _grade(vocab: _Vocab, products: _Products, intents: _Intents, qi: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """Noise-free grade (2 Exact, 1 Partial, 0 Irrelevant) of each (intent, product) pair."""
    qi, pi = np.asarray(qi, dtype=np.int64), np.asarray(pi, dtype=np.int64)
    qt, pt = intents.type[qi], products.type[pi]
    qb, pb = intents.brand[qi], products.brand[pi]
    mismatch = (qb >= 0) & (pb != qb)
    for c in range(_MAX_CONSTRAINTS):
        key, val, neg = intents.ck[qi, c], intents.cv[qi, c], intents.cneg[qi, c]
        pv = products.attr[np.maximum(key, 0), pi]
        mismatch |= (key >= 0) & np.where(neg, pv == val, pv != val)
    related = (qt >= 0) & vocab.related[np.maximum(qt, 0), pt]
    typed = np.where(qt == pt, np.where(mismatch, 1, 2), np.where(related, 1, 0))
    brand_only = np.where(pb == qb, 2, 0)
    return np.where(qt < 0, brand_only, typed).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Production engine and user behaviour
# --------------------------------------------------------------------------------------------


def _engine_candidates(rng: np.random.Generator, vocab: _Vocab, products: _Products, intents: _Intents,
                       k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Top-k products per intent by noisy idf-weighted token overlap with the title.

    The engine knows the synonyms of only every other product type, and does not understand
    negation ("without leather" matches leather products).
    """
    title_toks = [set(_tokens(t)) for t in products.titles]
    cat_toks = [set(_tokens(vocab.types[t].category.split(" > ")[-1])) for t in products.type]
    vocab_tok: dict[str, int] = {}
    for tok_set in title_toks + cat_toks:
        for tok in sorted(tok_set):
            vocab_tok.setdefault(tok, len(vocab_tok))
    n_p, n_v = len(title_toks), len(vocab_tok)
    doc = np.zeros((n_p, n_v), dtype=np.float32)
    for i, (tt, ct) in enumerate(zip(title_toks, cat_toks)):
        doc[i, [vocab_tok[x] for x in ct]] = 0.5
        doc[i, [vocab_tok[x] for x in tt]] = 1.0
    df = (doc > 0).sum(axis=0)
    idf = np.log((n_p + 1) / (df + 1)) + 1.0
    expansions = {" ".join(_tokens(s)): t.name for j, t in enumerate(vocab.types) if j % 2 == 0 for s in t.synonyms}
    qmat = np.zeros((len(intents.texts), n_v), dtype=np.float32)
    for i, text in enumerate(intents.texts):
        toks = _tokens(text)
        joined = " ".join(toks)
        for syn, canon in expansions.items():
            if re.search(rf"\b{re.escape(syn)}\b", joined):
                toks += _tokens(canon)
        for tok in toks:
            if tok not in _STOPWORDS and tok in vocab_tok:
                qmat[i, vocab_tok[tok]] = idf[vocab_tok[tok]]
        qmat[i] /= max(float(sum(idf[vocab_tok[t]] if t in vocab_tok else 2.0
                                 for t in sorted(set(toks)) if t not in _STOPWORDS)), 1e-6)
    prior = rng.normal(0.0, 0.05, n_p).astype(np.float32)
    k = min(k, n_p)
    cand = np.empty((len(intents.texts), k), dtype=np.int64)
    score = np.empty((len(intents.texts), k), dtype=np.float32)
    for start in range(0, len(intents.texts), block):
        s = qmat[start:start + block] @ doc.T + prior
        s += rng.normal(0.0, 0.12, s.shape).astype(np.float32)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        cand[start:start + block] = top
        score[start:start + block] = np.take_along_axis(s, top, axis=1)
    return cand, score


@dataclass(frozen=True)
class _Searches:
    intent: np.ndarray  # (S,)
    text: np.ndarray  # (S,) raw user_query
    time_us: np.ndarray  # (S,)
    day_end_us: np.ndarray  # (S,) last microsecond of the search's day
    client: np.ndarray  # (S,) client index
    session: np.ndarray  # (S,) global session index


def _draw_searches(rng: np.random.Generator, intents: _Intents, n_days: int, searches_per_day: int,
                   end_us: int) -> _Searches:
    """Searches grouped in sessions of up to 30 minutes, sorted by time."""
    n = n_days * searches_per_day
    day = np.repeat(np.arange(n_days), searches_per_day)
    day_start = end_us - (n_days - 1 - day) * _US_PER_DAY
    n_sessions = max(1, searches_per_day * 2 // 5)
    n_clients = max(1, n // 6)
    session_local = rng.integers(0, n_sessions, n)
    session = day * n_sessions + session_local
    session_start = rng.integers(0, _US_PER_DAY - 1800 * _US_PER_S, n_days * n_sessions)
    session_client = rng.integers(0, n_clients, n_days * n_sessions)
    time_us = day_start + session_start[session] + rng.integers(0, 1800 * _US_PER_S, n)
    intent = rng.choice(len(intents.texts), size=n, p=intents.popularity)
    variant = rng.choice(len(_VARIANT_PROBS), size=n, p=_VARIANT_PROBS)
    order = np.argsort(time_us, kind="stable")
    return _Searches(intent[order], intents.variants[intent, variant][order], time_us[order],
                     (day_start + _US_PER_DAY - 1)[order], session_client[session][order], session[order])


def _simulate_log(rng: np.random.Generator, vocab: _Vocab, products: _Products, intents: _Intents,
                  searches: _Searches, cand: np.ndarray, cand_score: np.ndarray, page_size: int,
                  seed: int, end_date: str) -> tuple[pd.DataFrame, np.ndarray]:
    """UBI events for every search; also returns the (S, page_size) shown product indices."""
    n = len(searches.intent)
    page_size = min(page_size, cand.shape[1])
    jitter = cand_score[searches.intent] + rng.normal(0.0, 0.05, (n, cand.shape[1])).astype(np.float32)
    order = np.argsort(-jitter, axis=1, kind="stable")[:, :page_size]
    shown = np.take_along_axis(cand[searches.intent], order, axis=1)
    grade = _grade(vocab, products, intents, np.repeat(searches.intent, page_size), shown.ravel())
    grade = grade.reshape(n, page_size)
    pos = np.broadcast_to(np.arange(1, page_size + 1), (n, page_size))
    examined = rng.random((n, page_size)) < 1.0 / pos ** 0.8
    click = examined & (rng.random((n, page_size)) < _P_CLICK[grade])
    cart = click & (rng.random((n, page_size)) < _P_CART[grade])
    buy = cart & (rng.random((n, page_size)) < _P_BUY[grade])
    t0 = np.broadcast_to(searches.time_us[:, None], (n, page_size))
    t_click = t0 + ((2 + rng.exponential(25, (n, page_size))) * _US_PER_S).astype(np.int64)
    t_cart = t_click + ((10 + rng.exponential(90, (n, page_size))) * _US_PER_S).astype(np.int64)
    t_buy = t_cart + ((30 + rng.exponential(300, (n, page_size))) * _US_PER_S).astype(np.int64)
    parts = [(np.ones((n, page_size), dtype=bool), t0, 0), (click, t_click, 1), (cart, t_cart, 2), (buy, t_buy, 3)]
    s_idx = np.broadcast_to(np.arange(n)[:, None], (n, page_size))
    cols: dict[str, list[np.ndarray]] = {"s": [], "pos": [], "prod": [], "t": [], "a": []}
    for mask, t, action in parts:
        cols["s"].append(s_idx[mask])
        cols["pos"].append(pos[mask])
        cols["prod"].append(shown[mask])
        cols["t"].append(t[mask])
        cols["a"].append(np.full(int(mask.sum()), action))
    s, p, prod, t, a = (np.concatenate(cols[c]) for c in ("s", "pos", "prod", "t", "a"))
    t = np.minimum(t, searches.day_end_us[s])
    ev_order = np.lexsort((p, a, t, a > 0, s))
    s, p, prod, t, a = s[ev_order], p[ev_order], prod[ev_order], t[ev_order], a[ev_order]
    query_ids = np.array([_uid(f"{seed}|{end_date}|q|{i}") for i in range(n)], dtype=object)
    client_ids = np.array([f"client-{c:06d}" for c in searches.client], dtype=object)
    session_ids = np.array([_uid(f"{seed}|{end_date}|s|{x}") for x in searches.session], dtype=object)
    actions = np.array(["impression", "click", "add_to_cart", "purchase"], dtype=object)
    frame = pd.DataFrame({
        "query_id": query_ids[s],
        "client_id": client_ids[s],
        "session_id": session_ids[s],
        "user_query": searches.text[s],
        "timestamp": _to_utc(t),
        "action_name": actions[a],
        "object_id": _product_ids(prod),
        "position": p.astype(np.int64),
    })
    return frame, shown


# --------------------------------------------------------------------------------------------
# Judgments and ground truth
# --------------------------------------------------------------------------------------------


def _pick_judged(rng: np.random.Generator, counts: np.ndarray, n_judged: int) -> np.ndarray:
    """Intents to judge: a third each from head, torso and tail of those that were searched."""
    searched = np.flatnonzero(counts > 0)
    ranked = searched[np.argsort(-counts[searched], kind="stable")]
    if n_judged >= len(ranked):
        return ranked
    cuts = [0, max(1, len(ranked) // 10), max(2, len(ranked) * 4 // 10), len(ranked)]
    strata = [ranked[cuts[i]:cuts[i + 1]] for i in range(3)]
    picked: list[int] = []
    for i, stratum in enumerate(strata):
        want = (n_judged - len(picked)) // (3 - i)
        take = min(want, len(stratum))
        picked += rng.choice(stratum, size=take, replace=False).tolist()
    rest = np.setdiff1d(ranked, picked)
    picked += rng.choice(rest, size=n_judged - len(picked), replace=False).tolist()
    return np.array(sorted(picked), dtype=np.int64)


def _take(rng: np.random.Generator, pool: np.ndarray, n: int, exclude: set[int]) -> list[int]:
    """Up to n random items of pool not in exclude."""
    pool = np.array([x for x in pool.tolist() if x not in exclude], dtype=np.int64)
    if n <= 0 or len(pool) == 0:
        return []
    return rng.choice(pool, size=min(n, len(pool)), replace=False).tolist()


def _judged_products(rng: np.random.Generator, vocab: _Vocab, products: _Products, intents: _Intents,
                     q: int, shown: np.ndarray, n: int, by_type: list[np.ndarray]) -> list[int]:
    """n products for intent q, pooled like a real judging campaign (candidates a system could plausibly
    return, no random catalog items): the most-shown, Exact and attribute-mismatched products of the type,
    accessories of the type (or the type an accessory goes with), related types, and products of other
    types in the same top category."""
    n = min(n, len(products.type))
    chosen: list[int] = []
    picked: set[int] = set()

    def add(items: list[int]) -> None:
        chosen.extend(items)
        picked.update(items)

    add(shown[:round(_SHOWN_SHARE * n)].tolist())  # the production engine's usual first page
    t = int(intents.type[q])
    if t >= 0:
        same = by_type[t]
        g = _grade(vocab, products, intents, np.full(len(same), q), same)
        add(_take(rng, same[g == 2], max(2, round(0.15 * n)), picked))
        add(_take(rng, same[g == 1], round(0.25 * n), picked))
        for linked, share in ((vocab.accessory[t], 0.15), (vocab.related[t], 0.1)):
            pool = np.concatenate([by_type[r] for r in np.flatnonzero(linked)] or [np.zeros(0, np.int64)])
            add(_take(rng, pool, round(share * n), picked))
        top = vocab.type_top[t]
    else:
        brand_prods = np.flatnonzero(products.brand == intents.brand[q])
        add(_take(rng, brand_prods, max(2, round(0.3 * n)), picked))
        top = vocab.brand_top[intents.brand[q]]
    same_top = np.flatnonzero(vocab.type_top[products.type] == top)
    add(_take(rng, same_top, n - len(chosen), picked))
    add(_take(rng, np.arange(len(products.type)), n - len(chosen), picked))  # only when the category is small
    return chosen[:n]


def _judgments(rng: np.random.Generator, vocab: _Vocab, products: _Products, intents: _Intents,
               searches: _Searches, shown: np.ndarray, judged_queries: int, per_query: int,
               label_noise: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """WANDS-style judgments; returns the frame plus the (intent, product) index pairs."""
    counts = np.bincount(searches.intent, minlength=len(intents.texts))
    judged = _pick_judged(rng, counts, judged_queries)
    by_type = [np.flatnonzero(products.type == t) for t in range(len(vocab.types))]
    texts = pd.DataFrame({"intent": searches.intent, "text": searches.text})
    counted = texts.groupby(["intent", "text"], sort=True).size().rename("n").reset_index()
    counted["canonical"] = counted["text"].to_numpy(dtype=object) == np.array(intents.texts, dtype=object)[
        counted["intent"].to_numpy()]
    top_text = (counted.sort_values(["intent", "canonical", "n", "text"], ascending=[True, False, False, True],
                                    kind="stable")
                .drop_duplicates("intent").set_index("intent")["text"])
    qi_list, pi_list = [], []
    for q in judged.tolist():
        shown_q, times = np.unique(shown[searches.intent == q], return_counts=True)
        shown_q = shown_q[np.argsort(-times, kind="stable")]  # most often shown first
        prods = _judged_products(rng, vocab, products, intents, q, shown_q, per_query, by_type)
        qi_list += [q] * len(prods)
        pi_list += prods
    qi, pi = np.array(qi_list, dtype=np.int64), np.array(pi_list, dtype=np.int64)
    grade = _grade(vocab, products, intents, qi, pi)
    noisy = rng.random(len(grade)) < label_noise
    grade = np.where(noisy, (grade + rng.integers(1, 3, len(grade))) % 3, grade).astype(np.int64)
    frame = pd.DataFrame({
        "query": top_text.reindex(qi).to_numpy(dtype=object),
        "product_id": _product_ids(pi),
        "grade": grade,
        "label": _LABELS[grade],
    })
    return frame, qi, pi


def _ground_truth(vocab: _Vocab, products: _Products, intents: _Intents, pairs: pd.DataFrame) -> pd.DataFrame:
    """Noise-free grades for distinct (query text, product) pairs; pairs has query, intent, product."""
    pairs = pairs.drop_duplicates(["query", "product"]).sort_values(["query", "product"], kind="stable")
    grade = _grade(vocab, products, intents, pairs["intent"].to_numpy(), pairs["product"].to_numpy())
    return pd.DataFrame({
        "query": pairs["query"].to_numpy(dtype=object),
        "product_id": _product_ids(pairs["product"].to_numpy()),
        "grade": grade,
    }).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


def _uid(key: str) -> str:
    """A deterministic UUID-formatted id derived from key."""
    return str(uuid.UUID(bytes=hashlib.md5(key.encode()).digest()))


def _product_ids(idx: np.ndarray) -> np.ndarray:
    """Product index -> 'P000123'."""
    return np.char.add("P", np.char.zfill(np.asarray(idx).astype(str), 6)).astype(object)


def _to_utc(us: np.ndarray) -> pd.Series:
    """Microseconds since the epoch -> datetime64[us, UTC]."""
    return pd.Series(np.asarray(us, dtype=np.int64).astype("datetime64[us]")).dt.tz_localize("UTC")


def _end_us(end_date: str) -> int:
    """Start (00:00 UTC) of end_date in microseconds since the epoch."""
    return int(np.datetime64(pd.Timestamp(end_date).strftime("%Y-%m-%d"), "us").astype(np.int64))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


_SIZES = GenerateSettings()  # the defaults of generate_demo's sizes: the `generate.*` settings'


def generate_demo(seed: int = _SIZES.seed, n_products: int = _SIZES.n_products, n_queries: int = _SIZES.n_queries,
                  n_days: int = _SIZES.n_days, end_date: str = _SIZES.end_date,
                  searches_per_day: int = _SIZES.searches_per_day, page_size: int = _SIZES.page_size,
                  judged_queries: int = _SIZES.judged_queries, judgments_per_query: int = _SIZES.judgments_per_query,
                  label_noise: float = _SIZES.label_noise) -> dict[str, pd.DataFrame]:
    """Generate catalog, query_log, judgments and ground_truth frames, deterministic in seed.

    Days are the n_days calendar days (UTC) ending at end_date inclusive. Every argument defaults to its `generate.*`
    setting (relevance.settings.GenerateSettings), the `generate` job's.
    """
    if min(n_products, n_queries, n_days, searches_per_day, page_size) < 1:
        raise ValueError("n_products, n_queries, n_days, searches_per_day and page_size must be >= 1")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError("label_noise must be in [0, 1]")
    rng = np.random.default_rng(seed)
    vocab = _build_vocab()
    end_us = _end_us(end_date)
    type_w = _type_weights(rng, vocab)
    products, catalog = _generate_catalog(rng, vocab, n_products, end_us, type_w)
    intents = _generate_intents(rng, vocab, n_queries, type_w)
    cand, cand_score = _engine_candidates(rng, vocab, products, intents, k=max(4 * page_size, 40))
    searches = _draw_searches(rng, intents, n_days, searches_per_day, end_us)
    query_log, shown = _simulate_log(rng, vocab, products, intents, searches, cand, cand_score,
                                     page_size, seed, end_date)
    judgments, jq, jp = _judgments(rng, vocab, products, intents, searches, shown,
                                   judged_queries, judgments_per_query, label_noise)
    impressed = pd.DataFrame({
        "query": np.repeat(searches.text, shown.shape[1]),
        "intent": np.repeat(searches.intent, shown.shape[1]),
        "product": shown.ravel(),
    })
    judged = pd.DataFrame({"query": judgments["query"].to_numpy(dtype=object), "intent": jq, "product": jp})
    ground_truth = _ground_truth(vocab, products, intents, pd.concat([impressed, judged], ignore_index=True))
    return {"catalog": catalog, "query_log": query_log, "judgments": judgments, "ground_truth": ground_truth}


def catalog_truth(seed: int = _SIZES.seed, n_products: int = _SIZES.n_products, n_queries: int = _SIZES.n_queries,
                  end_date: str = _SIZES.end_date, min_grade: int = 1) -> pd.DataFrame:
    """The noise-free grade of every (query, product) of the whole catalog with grade >= `min_grade`, for every query
    text the demo of these sizes can log (each intent's variants, normalized as build_pairs normalizes them):
    query_norm, intent, product_id, grade. The generator's own first steps (vocabulary, catalog, intents) are
    replayed with the same seed, so the products and intents are those `generate_demo` wrote; a query_norm two
    intents share keeps the first intent. For benchmarks of recall over the whole catalog (bench/retrieval_truth.py);
    `ground_truth` holds only the impressed and judged pairs."""
    rng = np.random.default_rng(seed)
    vocab = _build_vocab()
    type_w = _type_weights(rng, vocab)
    products, _ = _generate_catalog(rng, vocab, n_products, _end_us(end_date), type_w)
    intents = _generate_intents(rng, vocab, n_queries, type_w)
    queries: dict[str, int] = {}
    for i in range(len(intents.texts)):
        for text in intents.variants[i]:
            queries.setdefault(normalize_text(str(text)), i)
    all_products = np.arange(len(products.type))
    frames = []
    for intent in sorted(set(queries.values())):
        grade = _grade(vocab, products, intents, np.full(len(all_products), intent), all_products)
        keep = grade >= min_grade
        frames.append(pd.DataFrame({"intent": intent, "product_id": _product_ids(all_products[keep]),
                                    "grade": grade[keep]}))
    by_intent = pd.concat(frames, ignore_index=True)
    names = pd.DataFrame({"query_norm": list(queries), "intent": list(queries.values())})
    return names.merge(by_intent, on="intent").sort_values(["query_norm", "product_id"], ignore_index=True)
