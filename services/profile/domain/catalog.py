"""The avatar item catalog (data) and the rules for what an avatar may wear.

Items never disappear from the catalog (an avatar may wear them); new items are
appended. The catalog order is the listing order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from services.common.errors import FailedPrecondition, InvalidArgument
from services.profile.domain.enums import AvatarSlot

BASE = AvatarSlot.AVATAR_SLOT_BASE
COLOR = AvatarSlot.AVATAR_SLOT_COLOR
OUTFIT = AvatarSlot.AVATAR_SLOT_OUTFIT
ACCESSORY = AvatarSlot.AVATAR_SLOT_ACCESSORY

MAX_PER_SLOT = {BASE: 1, COLOR: 1, OUTFIT: 1, ACCESSORY: 3}
MAX_ITEMS = sum(MAX_PER_SLOT.values())
ITEM_ID_MAX_LEN = 64


@dataclass(frozen=True)
class CatalogItem:
    item_id: str
    slot: AvatarSlot
    name: str
    unlock_level: int


def _items(slot: AvatarSlot, rows: list[tuple[str, str, int]]) -> list[CatalogItem]:
    return [CatalogItem(item_id, slot, name, level) for item_id, name, level in rows]


CATALOG: tuple[CatalogItem, ...] = tuple(
    _items(BASE, [
        ("base-blob", "Blob", 1),
        ("base-bunny", "Bunny", 1),
        ("base-fox", "Fox", 3),
        ("base-owl", "Owl", 6),
        ("base-turtle", "Turtle", 9),
        ("base-dragon", "Dragon", 12),
        ("base-unicorn", "Unicorn", 20),
    ])
    + _items(COLOR, [
        ("color-sky", "Sky blue", 1),
        ("color-leaf", "Leaf green", 1),
        ("color-sun", "Sunny yellow", 2),
        ("color-berry", "Berry pink", 4),
        ("color-ocean", "Deep ocean", 8),
        ("color-galaxy", "Galaxy", 15),
        ("color-rainbow", "Rainbow", 24),
    ])
    + _items(OUTFIT, [
        ("outfit-tshirt", "T-shirt", 1),
        ("outfit-raincoat", "Raincoat", 2),
        ("outfit-explorer", "Explorer jacket", 5),
        ("outfit-astronaut", "Astronaut suit", 10),
        ("outfit-knight", "Knight armour", 14),
        ("outfit-wizard", "Wizard robe", 18),
        ("outfit-superhero", "Superhero suit", 25),
    ])
    + _items(ACCESSORY, [
        ("acc-cap", "Cap", 1),
        ("acc-glasses", "Round glasses", 2),
        ("acc-scarf", "Scarf", 3),
        ("acc-backpack", "Backpack", 5),
        ("acc-headphones", "Headphones", 7),
        ("acc-telescope", "Telescope", 11),
        ("acc-crown", "Crown", 16),
        ("acc-wings", "Wings", 22),
        ("acc-cape", "Cape", 28),
    ])
)

BY_ID: dict[str, CatalogItem] = {item.item_id: item for item in CATALOG}
POSITION: dict[str, int] = {item.item_id: i for i, item in enumerate(CATALOG)}

# What a new avatar wears.
DEFAULT_ITEMS: tuple[str, ...] = ("base-blob", "color-sky")


def check_outfit(item_ids: list[str], level: int) -> list[CatalogItem]:
    """The catalog items for a customize request, or a domain error.

    Unknown ids, duplicates, too many items in a slot or a missing base are
    INVALID_ARGUMENT naming item_ids[i]; items above the avatar's level are
    FAILED_PRECONDITION (checked only once the request is well formed).
    """
    problems: list[tuple[str, str]] = []
    if len(item_ids) > MAX_ITEMS:
        raise InvalidArgument.field("item_ids", f"must hold at most {MAX_ITEMS} items")
    items: list[CatalogItem] = []
    seen: set[str] = set()
    per_slot: Counter[AvatarSlot] = Counter()
    for i, item_id in enumerate(item_ids):
        field = f"item_ids[{i}]"
        item = BY_ID.get(item_id)
        if item is None:
            problems.append((field, "unknown item"))
            continue
        if item_id in seen:
            problems.append((field, "is listed twice"))
            continue
        seen.add(item_id)
        per_slot[item.slot] += 1
        if per_slot[item.slot] > MAX_PER_SLOT[item.slot]:
            slot = AvatarSlot(item.slot).name
            problems.append((field, f"at most {MAX_PER_SLOT[item.slot]} item(s) in {slot}"))
            continue
        items.append(item)
    if not problems and per_slot[BASE] == 0:
        problems.append(("item_ids", "must include one base item"))
    if problems:
        raise InvalidArgument(problems)
    locked = [item for item in items if item.unlock_level > level]
    if locked:
        first = locked[0]
        raise FailedPrecondition(
            f"item {first.item_id} unlocks at level {first.unlock_level}; the avatar is level {level}",
            violation_type="ITEM_LOCKED",
            subject=first.item_id,
        )
    return items
