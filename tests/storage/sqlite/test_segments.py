"""Body segments: file format, torn tails, lost bodies, removal, backup, the 0.1.0 upgrade."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings, strategies as st

from broker_core.journal import AckOp, DeliverOp, Insert, PutQueue
from broker_core.messages import Entry, QueueOptions
from storage import SQLiteStorage
from storage.errors import SegmentDataMissing, StorageCorrupt
from storage.sqlite.backup import backup_database
from storage.sqlite.segments import (
    FILE_HEADER,
    RECORD,
    SegmentLog,
    check_bodies,
    encode_record,
    pack_ref,
    scan,
    segments_path,
    unpack_ref,
)

if TYPE_CHECKING:
    from broker_core.journal import Op

FIXTURE = Path(__file__).parents[2] / "fixtures" / "datadir-0.1.0"
HEADER = FILE_HEADER.pack(b"wsbseg01", 1)

records = st.lists(
    st.tuples(st.integers(1, 2**63 - 1), st.binary(max_size=300)), min_size=1, max_size=20
)


@given(records)
def test_a_segment_reads_back_every_record_it_was_written(items: list[tuple[int, bytes]]) -> None:
    """Records encoded one after another scan back in order, with their offsets."""
    data = HEADER + b"".join(encode_record(id, body) for id, body in items)
    assert [(id, body) for _, id, body in scan(data)] == items


@given(records, st.data())
def test_a_cut_segment_reads_back_a_prefix_of_its_records(
    items: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    """Cut anywhere (a torn write), a segment scans as the records wholly before the cut."""
    encoded = [encode_record(id, body) for id, body in items]
    whole = HEADER + b"".join(encoded)
    cut = data.draw(st.integers(FILE_HEADER.size, len(whole)))
    ends = [FILE_HEADER.size + sum(map(len, encoded[: n + 1])) for n in range(len(encoded))]
    expected = [item for item, end in zip(items, ends, strict=True) if end <= cut]
    assert [(id, body) for _, id, body in scan(whole[:cut])] == expected


@given(records, st.data())
def test_a_damaged_byte_never_reads_as_another_record(
    items: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    """One flipped or zeroed byte: the scan stops at the damaged record, never misreads it."""
    whole = bytearray(HEADER + b"".join(encode_record(id, body) for id, body in items))
    at = data.draw(st.integers(FILE_HEADER.size, len(whole) - 1))
    whole[at] = data.draw(st.sampled_from([0, whole[at] ^ 0xFF]))
    if whole[at] == bytes(HEADER + b"".join(encode_record(i, b) for i, b in items))[at]:
        return
    found = [(id, body) for _, id, body in scan(bytes(whole))]
    assert found == items[: len(found)]
    assert len(found) < len(items)


@given(st.integers(0, 2**20), st.integers(0, 2**40 - 1))
def test_a_reference_packs_segment_and_offset(number: int, offset: int) -> None:
    """`pack_ref` and `unpack_ref` are inverses."""
    assert unpack_ref(pack_ref(number, offset)) == (number, offset)


@settings(deadline=None, max_examples=25)
@given(st.lists(st.binary(min_size=1, max_size=5000), min_size=1, max_size=40))
def test_a_segment_log_reads_each_body_by_reference_across_roll_overs(bodies: list[bytes]) -> None:
    """Appended in batches with small segments, each body reads back by its reference."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        log = SegmentLog(Path(folder) / "segments", fsync=False, roll_bytes=8192)
        log.recover(None)
        refs = []
        for start in range(0, len(bodies), 3):
            refs += [
                log.append(id, body)
                for id, body in enumerate(bodies[start : start + 3], start=start + 1)
            ]
            log.write()
        for id, (ref, body) in enumerate(zip(refs, bodies, strict=True), start=1):
            assert log.read(ref, id, len(body)) == body
        with pytest.raises(StorageCorrupt):
            log.read(refs[0], 999, len(bodies[0]))
        log.close()


BODY = b'"' + b"x" * 1022 + b'"'


def _publish(first: int, count: int, queue: str = "q") -> list[Op]:
    now = time.time()
    return [
        Insert(queue, Entry(id, content=BODY, size=len(BODY), created_at=now))
        for id in range(first, first + count)
    ]


def _segments(database: Path) -> list[Path]:
    return sorted(segments_path(database).glob("*.seg"))


async def _filled(path: Path, count: int = 10) -> None:
    storage = SQLiteStorage(path)
    await storage.open()
    await storage.write([PutQueue("q", QueueOptions(), time.time(), time.time())])
    await storage.write(_publish(1, count))
    await storage.close()


async def test_bodies_leave_the_database_for_a_segment(tmp_path: Path) -> None:
    """A published body is in a segment; its row holds a reference and no content."""
    path = tmp_path / "broker.db"
    await _filled(path, 3)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT length(content), body_ref FROM messages").fetchall()
    assert [length for length, _ in rows] == [0, 0, 0]
    assert all(ref is not None for _, ref in rows)
    [segment] = _segments(path)
    assert [id for _, id, _ in scan(segment.read_bytes())] == [1, 2, 3]


async def test_a_torn_segment_tail_is_cut_and_every_message_kept(tmp_path: Path) -> None:
    """Half a record past the last committed one (a crash mid-write) is cut off at open."""
    path = tmp_path / "broker.db"
    await _filled(path, 5)
    [segment] = _segments(path)
    whole = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(encode_record(6, BODY)[:700])
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        assert segment.stat().st_size == whole
        await storage.write(_publish(6, 2))
        for id in range(1, 8):
            message = await storage.get_message(id)
            assert message is not None
            assert message.entry.content == BODY
    finally:
        await storage.close()


async def test_a_whole_uncommitted_record_is_kept_and_appended_after(tmp_path: Path) -> None:
    """A whole record no row references (its commit never happened) harms nothing."""
    path = tmp_path / "broker.db"
    await _filled(path, 2)
    [segment] = _segments(path)
    with segment.open("ab") as file:
        file.write(encode_record(3, b"never committed"))
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        await storage.write(_publish(3, 1))
        message = await storage.get_message(3)
        assert message is not None
        assert message.entry.content == BODY
    finally:
        await storage.close()


async def test_a_reference_past_the_segment_end_refuses_to_start(tmp_path: Path) -> None:
    """A segment shorter than what the database references stops the open, loudly."""
    path = tmp_path / "broker.db"
    await _filled(path, 5)
    [segment] = _segments(path)
    os.truncate(segment, segment.stat().st_size - 10)
    storage = SQLiteStorage(path)
    with pytest.raises(SegmentDataMissing, match="accept-data-loss"):
        await storage.open()
    assert not storage.is_open


async def test_the_check_before_serving_names_lost_bodies(tmp_path: Path) -> None:
    """`check_bodies` (run by ``broker serve`` before it starts) refuses a short segment."""
    path = tmp_path / "broker.db"
    await _filled(path, 5)
    check_bodies(path)
    [segment] = _segments(path)
    os.truncate(segment, segment.stat().st_size - 1)
    with pytest.raises(SegmentDataMissing, match="lost from offset"):
        check_bodies(path)
    check_bodies(path, accept_loss=True)


async def test_accepting_lost_bodies_drops_their_messages_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    """With accept_data_loss, messages whose bodies are gone go; the rest and new ones serve."""
    path = tmp_path / "broker.db"
    await _filled(path, 5)
    [segment] = _segments(path)
    record = RECORD.size + len(BODY)
    os.truncate(segment, FILE_HEADER.size + 3 * record + 5)
    storage = SQLiteStorage(path, accept_data_loss=True)
    clean = await storage.open()
    try:
        assert not clean
        assert [await storage.get_message(id) is not None for id in range(1, 6)] == [
            True,
            True,
            True,
            False,
            False,
        ]
        assert await storage.last_message_id() > 5
        new = await storage.last_message_id() + 1
        await storage.write(_publish(new, 1))
        message = await storage.get_message(new)
        assert message is not None
        assert message.entry.content == BODY
    finally:
        await storage.close()


async def test_segments_whose_messages_are_all_gone_are_deleted(tmp_path: Path) -> None:
    """Acked and pruned, a full segment's file goes; a segment with a live body stays."""
    path = tmp_path / "broker.db"
    storage = SQLiteStorage(path, processed_retention_s=0.0, processed_retention_count=0)
    await storage.open()
    try:
        storage.bodies.roll_bytes = 8 * 1024
        await storage.write([PutQueue("q", QueueOptions(), time.time(), time.time())])
        for batch in range(6):
            await storage.write(_publish(batch * 10 + 1, 10))
        assert len(_segments(path)) >= 4
        now = time.time()
        # Every message but 15 is acked: 15's segment must stay.
        ops: list[Op] = []
        for id in range(1, 61):
            if id != 15:
                ops += [DeliverOp(id, 1, now + 30), AckOp("q", id, now)]
        await storage.write(ops)
        await storage.prune(time.time() + 1)
        await storage.sweep_segments(force=True)
        left = _segments(path)
        current = segments_path(path) / f"{storage.bodies.current:010d}.seg"
        keep = unpack_ref(await _ref(path, 15))[0]
        assert {p.name for p in left} == {current.name, f"{keep:010d}.seg"}
        message = await storage.get_message(15)
        assert message is not None
        assert message.entry.content == BODY
    finally:
        await storage.close()


async def _ref(path: Path, id: int) -> int:
    with sqlite3.connect(path) as db:
        (ref,) = db.execute("SELECT body_ref FROM messages WHERE id = ?", (id,)).fetchone()
    return int(ref)


async def test_a_backup_carries_the_segments_of_its_snapshot(tmp_path: Path) -> None:
    """A backup of a running store has every body; a broker opened on it reads them all."""
    path = tmp_path / "live" / "broker.db"
    path.parent.mkdir()
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        storage.bodies.roll_bytes = 8 * 1024
        await storage.write([PutQueue("q", QueueOptions(), time.time(), time.time())])
        for first in range(1, 41, 10):
            await storage.write(_publish(first, 10))
        target = tmp_path / "copy" / "broker.db"
        target.parent.mkdir()
        highest = backup_database(path, target)
        await storage.write(_publish(41, 5))
    finally:
        await storage.close()
    assert highest == 40
    assert len(_segments(target)) >= 2
    copy = SQLiteStorage(target)
    await copy.open()
    try:
        for id in range(1, 41):
            message = await copy.get_message(id)
            assert message is not None
            assert message.entry.content == BODY
        assert await copy.get_message(41) is None
    finally:
        await copy.close()


async def test_a_0_1_0_data_dir_serves_old_in_row_and_new_segment_bodies(tmp_path: Path) -> None:
    """After the upgrade old bodies are read from their rows and new ones from segments."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    path = data / "broker.db"
    with sqlite3.connect(path) as db:
        before = dict(db.execute("SELECT id, content FROM messages").fetchall())
    assert before
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] >= 3
        new = await storage.last_message_id() + 1
        await storage.write([PutQueue("fresh", QueueOptions(), time.time(), time.time())])
        await storage.write(_publish(new, 1, "fresh"))
    finally:
        await storage.close()
    reopened = SQLiteStorage(path)
    await reopened.open()
    try:
        for id, content in before.items():
            message = await reopened.get_message(id)
            assert message is not None
            assert message.entry.content == bytes(content)
        message = await reopened.get_message(new)
        assert message is not None
        assert message.entry.content == BODY
    finally:
        await reopened.close()
    with sqlite3.connect(path) as db:
        refs = dict(db.execute("SELECT id, body_ref FROM messages").fetchall())
    assert all(refs[id] is None for id in before)
    assert refs[new] is not None
