from __future__ import annotations

import re

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.profile.domain import catalog, progression
from services.profile.domain.catalog import ACCESSORY, BASE, COLOR, OUTFIT


def test_catalog_shape():
    items = catalog.CATALOG
    assert len(items) >= 20
    assert len({i.item_id for i in items}) == len(items)
    assert {i.slot for i in items} == {BASE, COLOR, OUTFIT, ACCESSORY}
    for item in items:
        assert re.fullmatch(r"[a-z]+-[a-z]+", item.item_id)
        assert len(item.item_id) <= catalog.ITEM_ID_MAX_LEN
        assert progression.MIN_LEVEL <= item.unlock_level <= progression.MAX_LEVEL
        assert item.name
    for slot in (BASE, COLOR, OUTFIT, ACCESSORY):
        assert any(i.unlock_level == 1 for i in items if i.slot == slot)


def test_default_items_are_a_valid_level_one_outfit():
    chosen = catalog.check_outfit(list(catalog.DEFAULT_ITEMS), 1)
    assert [i.item_id for i in chosen] == list(catalog.DEFAULT_ITEMS)


def test_full_outfit():
    ids = ["base-owl", "color-berry", "outfit-explorer", "acc-cap", "acc-scarf", "acc-backpack"]
    assert [i.item_id for i in catalog.check_outfit(ids, 6)] == ids


@pytest.mark.parametrize(("ids", "fields"), [
    (["base-blob", "nope", "also-nope"], ["item_ids[1]", "item_ids[2]"]),
    (["base-blob", "base-blob"], ["item_ids[1]"]),
    (["base-blob", "base-fox"], ["item_ids[1]"]),
    (["base-blob", "outfit-tshirt", "outfit-raincoat"], ["item_ids[2]"]),
    (["base-blob", "acc-cap", "acc-glasses", "acc-scarf", "acc-backpack"], ["item_ids[4]"]),
    (["color-sky"], ["item_ids"]),
    ([], ["item_ids"]),
    (["base-blob"] * 7, ["item_ids"]),
])
def test_invalid_outfits_name_the_item(ids, fields):
    with pytest.raises(InvalidArgument) as info:
        catalog.check_outfit(ids, 30)
    assert info.value.fields == fields


def test_locked_items_are_a_failed_precondition_after_shape_checks():
    with pytest.raises(FailedPrecondition) as info:
        catalog.check_outfit(["base-dragon"], 11)
    assert info.value.violation_type == "ITEM_LOCKED" and info.value.subject == "base-dragon"
    assert catalog.check_outfit(["base-dragon"], 12)
    # A malformed request is INVALID_ARGUMENT even if it also holds a locked item.
    with pytest.raises(InvalidArgument):
        catalog.check_outfit(["base-dragon", "base-unicorn"], 1)
