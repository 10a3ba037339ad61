"""Unit tests of the pure parts of fan-out and watermarks: registry entries that
expire, and which field a watermark lives in."""

from __future__ import annotations

from delivery_service.repository import WatermarkMove
from libs.push import live_routes, route_value
from libs.receipt_projection import Watermarks


def test_registry_entries_past_their_expiry_are_ignored() -> None:
    fields = {
        "c1": "gw-a|1000",
        "c2": "gw-b|2000",
        "c3": "gw|with|pipes|3000",
        "c4": "garbage",
    }
    assert live_routes(fields, now=1500) == {"c2": "gw-b", "c3": "gw|with|pipes"}
    assert live_routes(fields, now=5000) == {}
    instance, _, expires = route_value("gw-a", ttl_s=30).rpartition("|")
    assert instance == "gw-a"
    assert live_routes({"c": route_value("gw-a")}) == {"c": "gw-a"}
    assert int(expires) > 0


def test_watermark_fields() -> None:
    # An inbox: delivered per reader (its owner), read per peer (the thread).
    delivered = WatermarkMove("delivered", "user", "bob", "bob", "bob", 5)
    read = WatermarkMove("read", "user", "bob", "bob", "ada", 4)
    assert (delivered.field, read.field) == ("bob", "ada")
    # A group: both per reader.
    assert WatermarkMove("read", "group", "g1", "carol", "g1", 7).field == "carol"


def test_read_implies_delivered() -> None:
    marks = Watermarks(delivered={"bob": 3}, read={"ada": 9})
    assert marks.delivered_seq("bob", "ada") == 9
    assert marks.delivered_seq("bob", "eve") == 3
    assert marks.delivered_seq("dan", "dan") == 0
