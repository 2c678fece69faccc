"""pipeline.feed (``finsent produce``): JSONL and CSV feeds, bad lines, topic choice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from streaming_helpers import read_topic
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.feed import read_feed
from pipeline.infra import EmbeddedBroker, create_topics_sync
from pipeline.schemas import parse_input

JSONL = b"""{"id": "n1", "text": "$AAPL beats", "published_at": "2024-03-14T14:00:00Z", "kind": "news"}
{"id": "t1", "text": "loving $TSLA", "published_at": 1710424800000, "kind": "tweet"}

not json
{"id": "x", "published_at": "2024-03-14T14:00:00Z"}
{"id": "n2", "text": "Markets flat", "published_at": "2024-03-14T14:01:00Z"}
"""

CSV = """id,text,published_at,kind,tickers,source
c1,"Apple, Inc. beats estimates",2024-03-14T14:00:00Z,news,"AAPL;MSFT",Wire
c2,tweet about $NVDA,1710424800000,tweet,,
c3,,2024-03-14T14:00:00Z,news,,
"""


def test_jsonl_lines_are_validated_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_bytes(JSONL)
    lines = list(read_feed(path))
    assert [(fl.line_no, fl.doc_id, fl.kind) for fl in lines if fl.error is None] == [
        (1, "n1", "news"), (2, "t1", "tweet"), (6, "n2", None),
    ]  # fmt: skip
    bad = {fl.line_no: fl.error for fl in lines if fl.error is not None}
    assert set(bad) == {4, 5}
    assert bad[4].startswith("not_json") and bad[5].startswith("missing_field")
    assert lines[0].value == JSONL.splitlines()[0]  # the line's own bytes are sent


def test_csv_rows_become_input_objects(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text(CSV)
    lines = list(read_feed(path))
    good = [fl for fl in lines if fl.error is None]
    assert [fl.doc_id for fl in good] == ["c1", "c2"]
    m1 = parse_input(good[0].value, now_ms=2_000_000_000_000)
    assert m1.tickers == ("AAPL", "MSFT") and m1.source == "Wire" and m1.text == "Apple, Inc. beats estimates"
    assert orjson.loads(good[1].value)["published_at"] == 1710424800000  # numbers stay numbers
    (bad,) = [fl for fl in lines if fl.error is not None]
    assert bad.line_no == 4 and "missing_field" in (bad.error or "")


def test_csv_without_text_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        list(read_feed(path))


@pytest.mark.integration
def test_produce_command_routes_by_kind(broker: EmbeddedBroker, ns: str, tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "feed.jsonl"
    path.write_bytes(JSONL)
    news, tweets = f"{ns}news.raw", f"{ns}tweets.raw"
    create_topics_sync(broker.bootstrap, [news, tweets], partitions=2)
    result = CliRunner().invoke(app, ["produce", str(path), "--bootstrap", broker.bootstrap, "--namespace", ns])
    assert result.exit_code == 0, result.output
    assert "sent 2 to" in result.output and "2 bad lines skipped" in result.output
    assert f"{path}:4: skipped: not_json" in result.output
    got = {t: asyncio.run(read_topic(broker.bootstrap, t)) for t in (news, tweets)}
    assert Counter(r.key for r in got[news]) == {b"n1": 1, b"n2": 1}  # no kind -> news
    assert [r.key for r in got[tweets]] == [b"t1"]
    forced = f"{ns}forced"
    create_topics_sync(broker.bootstrap, [forced], partitions=1)
    result = CliRunner().invoke(app, ["produce", str(path), "--bootstrap", broker.bootstrap, "--topic", forced])
    assert result.exit_code == 0, result.output
    assert len(asyncio.run(read_topic(broker.bootstrap, forced))) == 3
