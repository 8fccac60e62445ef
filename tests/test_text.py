from typing import Any

from udfs.text import build_product_text, normalize_text


def test_normalize_text_folds_case_space_and_punctuation():
    assert normalize_text("  Gray  SOFA!! ") == "gray sofa"
    assert normalize_text("Ｇｒａｙ ｓｏｆａ") == "gray sofa"  # full-width forms (NFKC)
    assert normalize_text("t-shirt, men's (XL)") == "t-shirt men's xl"
    assert normalize_text("- leading and trailing -") == "leading and trailing"
    assert normalize_text(None) == ""
    assert normalize_text("!!!") == ""


def test_normalize_text_is_idempotent():
    for raw in ["Gray Sofa!!", "4.5 inch / 2-pack", "H&M  tee", "sofá"]:
        once = normalize_text(raw)
        assert normalize_text(once) == once


def test_build_product_text_orders_fields_and_key_attributes():
    text = build_product_text(
        "Cozy Gray Sofa, 3-Seat", "IKEA", "Furniture > Living Room > Sofas",
        {"zz_extra": "1", "material": "Linen", "color": "Gray"},
    )
    assert text == ("cozy gray sofa 3-seat | brand: ikea | category: living room > sofas | "
                    "color: gray, material: linen, zz_extra: 1")


def test_build_product_text_handles_sparse_products_and_word_budget():
    assert build_product_text("Lamp", "", None, None) == "lamp"
    long_title = " ".join(f"word{i}" for i in range(100))
    assert len(build_product_text(long_title, "b", "c", {}, max_words=10).split(" ")) == 10


def test_build_product_text_takes_the_description_only_when_asked():
    title, brand, attributes = "HP 564 Photo Original Photo black", "HP", {"colour": "Black"}
    without = "hp 564 photo original photo black | brand: hp | colour: black"
    assert build_product_text(title, brand, None, attributes, description="564 Photo Ink Cartridge") == without
    assert build_product_text(title, brand, "Ink", attributes, description="564 Photo Ink-Cartridge, 2-pack!",
                              description_words=4) == (
        "hp 564 photo original photo black | brand: hp | category: ink | 564 photo ink-cartridge 2-pack | colour: black")
    missing: Any
    for missing in (None, float("nan"), "", "!!"):  # a null (NaN from pandas) or empty description is left out
        assert build_product_text(title, brand, None, attributes, description=missing, description_words=4) == without
