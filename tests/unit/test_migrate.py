"""`superstatic-agent --migrate` (agent/migrate.py): a format-2 store converted to format-3
records, the backup and the marker, an interrupted run redone from the backup, refusals."""

from __future__ import annotations

import decimal
import shutil
from pathlib import Path
from typing import Any

import cbor2
import lmdb
import pytest
from superstatic_agent import cli, migrate
from superstatic_agent import records as layout
from superstatic_agent.statemachine import SM_META_KEYS
from superstatic_agent.storage import KEY_FORMAT, StartRefused, Storage, record_get, records
from support.v1store import write_v1_store

from superstatic.protocol import codec
from superstatic.protocol.codec import ENUM_BY_INT, Ref, enum_form

MAP_BYTES = 256 << 20
LONG = "k" * 700  # an entry key past ENTRY_KEY_INLINE_BYTES_MAX: a hashed key and a bucket


def v1_nodes() -> dict[str, tuple[int, str, Any]]:
    return {
        "@roots": (9, "dict", [["d", Ref("d")], ["s", Ref("s")], ["o", Ref("o")]]),
        # 1.0 first: Python keeps the first key object, so the record keeps it as original.
        "d": (
            7,
            "dict",
            [
                ["z", 1],
                [1.0, "one"],
                [(1, "t"), Ref("o")],
                [LONG, "long"],
                [enum_form("Color", ENUM_BY_INT, 2), "enum"],
                ["a", (1, 2)],
            ],
        ),
        "s": (5, "set", [1, "x", decimal.Decimal("2.5"), LONG, frozenset({3})]),
        "o": (6, "obj", ["Point", [["x", 1], ["y", Ref("d")]]]),
        "e": (3, "dict", []),
        "l": (4, "list", [*range(1000), Ref("d"), (1, 2)]),  # several leaves
    }


def open_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=migrate.MIGRATE_DBS_MAX)


def read_v3(path: Path) -> dict[str, tuple[layout.Header, Any]]:
    """Every node of a format-3 store as (header, contents in v1 form), read record by record
    with the layout's own decoders (the dict/obj order from the order db)."""
    env = open_env(path)
    try:
        dbs = {name: env.open_db(name) for name in layout.NODE_DB_NAMES}
        out: dict[str, tuple[layout.Header, Any]] = {}
        with env.begin() as txn:
            for oid_key, raw_nid in records(txn, dbs[b"oids"], "oids"):
                nid = layout.decode_nid(oid_key, raw_nid)
                head_key = layout.nid_key(nid)
                head_raw = record_get(txn, dbs[b"nodes"], "nodes", head_key)
                assert head_raw is not None
                header = layout.decode_header(head_key, head_raw)
                assert header.oid == oid_key.decode()
                out[header.oid] = (header, _contents(txn, dbs, nid, header))
        return out
    finally:
        env.close()


def _entry(txn: Any, dbs: Any, nid: int, ekey: bytes) -> layout.EntryRec:
    key = layout.entry_key(nid, ekey)
    raw = record_get(txn, dbs[b"entries"], "entries", key)
    assert raw is not None
    if layout.entry_key_hashed(key):
        return dict(layout.decode_bucket(key, raw))[ekey]
    return layout.decode_entry(key, raw)


def _contents(txn: Any, dbs: Any, nid: int, header: layout.Header) -> Any:
    prefix = layout.nid_key(nid)
    if header.kind == "list":
        from superstatic_agent.listtree import ListHeader, ListTree

        class Chunks:
            def get(self, chunk_id: int) -> bytes | None:
                return record_get(txn, dbs[b"chunks"], "chunks", layout.chunk_key(nid, chunk_id))

        tree = ListTree(Chunks(), ListHeader.from_wire(header.extra))  # type: ignore[arg-type]
        return list(tree.iter_values())
    if header.kind == "set":
        members = []
        for key, raw in records(txn, dbs[b"entries"], "entries"):
            if not key.startswith(prefix):
                continue
            if layout.entry_key_hashed(key):
                pairs = layout.decode_bucket(key, raw)
            else:
                pairs = [(layout.entry_key_ekey(key), layout.decode_entry(key, raw))]
            for ekey, entry in pairs:
                assert entry.version == header.version and not entry.tomb
                members.append(entry.original if entry.original is not None else codec.loads(ekey))
        return members
    items = []
    for key, ekey in records(txn, dbs[b"order"], "order"):
        if key.startswith(prefix):
            entry = _entry(txn, dbs, nid, ekey)
            assert entry.version == header.version and entry.pos == int.from_bytes(key[8:], "big")
            original = entry.original if entry.original is not None else codec.loads(ekey)
            items.append([original, entry.value])
    return [header.extra, items] if header.kind == "obj" else items


def dump(path: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    env = open_env(path)
    try:
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
            return {
                name: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=env.open_db(name, txn=txn))]
                for name in names
            }
    finally:
        env.close()


def meta_value(path: Path, db: bytes, key: bytes) -> Any:
    env = open_env(path)
    try:
        with env.begin() as txn:
            raw = record_get(txn, env.open_db(db, txn=txn), db.decode(), key)
            return None if raw is None else cbor2.loads(raw)
    finally:
        env.close()


def test_a_v1_store_becomes_per_key_records(tmp_path: Path) -> None:
    store = tmp_path / "a"
    nodes = v1_nodes()
    write_v1_store(store, nodes, applied=50)
    before = dump(store)
    done = migrate.migrate(store, map_bytes=MAP_BYTES)
    assert (done.nodes, done.applied, done.already) == (6, 50, False)
    assert done.entries == 3 + 6 + 5 + 2 + 1002
    got = read_v3(store)
    assert set(got) == set(nodes)
    for oid, (version, kind, contents) in nodes.items():
        header, stored = got[oid]
        assert (header.kind, header.version, header.shape_version) == (kind, version, version)
        if kind == "set":
            assert set(stored) == set(contents) and header.count == len(contents)
        elif kind == "list":
            assert stored == contents and header.count == len(contents)
        else:
            assert stored == contents, oid  # original keys (1.0, the enum) and order kept
            items = contents[1] if kind == "obj" else contents
            assert header.count == header.next_pos == len(items)
    assert got["o"][0].extra == "Point"
    nids = sorted(layout.key_nid(k) for k, _ in dump(store)[b"nodes"])
    assert nids == [1, 2, 3, 4, 5, 6]  # in oid order: "@roots" "d" "e" "l" "o" "s"
    assert meta_value(store, b"sm_meta", layout.KEY_NEXT_NID) == 7
    assert got["l"][0].extra[0] == 1002 and got["l"][0].extra[2] >= 1  # length, height
    assert len(dump(store)[b"chunks"]) > 4
    assert meta_value(store, b"sm_meta", layout.KEY_TOMB_HORIZON) == 50
    # Only sm_meta keys the state machine knows: a migrated leader's snapshot is accepted.
    assert {k for k, _ in dump(store)[b"sm_meta"]} <= set(SM_META_KEYS)
    assert meta_value(store, b"meta", KEY_FORMAT) == 5  # then the log moved (8.18)
    assert meta_value(store, b"meta", migrate.KEY_MIGRATING) is None
    after = dump(store)
    assert b"objects" not in after and b"staging_objects" not in after
    for kept in (b"sessions", b"outcomes"):
        assert after[kept] == before[kept], kept
    assert b"log" not in after and done.log_entries == 1
    storage = Storage(store, map_bytes=MAP_BYTES)
    try:
        assert [(e.index, e.term) for e in storage.load().entries] == [(50, 3)]
    finally:
        storage.close()
    # The backup is the untouched format-2 store.
    backup = dump(store / migrate.BACKUP_DIR)
    assert backup[b"objects"] == before[b"objects"]
    assert meta_value(store / migrate.BACKUP_DIR, b"meta", KEY_FORMAT) == 2


def test_migrating_again_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "a"
    write_v1_store(store, v1_nodes())
    migrate.migrate(store, map_bytes=MAP_BYTES)
    once = dump(store)
    again = migrate.migrate(store, map_bytes=MAP_BYTES)
    assert again.already and dump(store) == once


def test_an_interrupted_migration_is_redone_from_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = {f"n{i:03}": (i + 1, "dict", [[f"k{j}", j] for j in range(50)]) for i in range(40)}
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    write_v1_store(clean, nodes)
    write_v1_store(crashed, nodes)
    migrate.migrate(clean, map_bytes=MAP_BYTES)

    real = migrate._convert_node
    calls = []

    def dying(*args: Any) -> int:
        calls.append(1)
        if len(calls) == 30:
            raise KeyboardInterrupt  # the operator's Ctrl-C, or a crash, mid-way
        return real(*args)

    monkeypatch.setattr(migrate, "MIGRATE_TXN_BYTES", 2_000)  # several commits before it
    monkeypatch.setattr(migrate, "_convert_node", dying)
    with pytest.raises(KeyboardInterrupt):
        migrate.migrate(crashed, map_bytes=MAP_BYTES)
    half = dump(crashed)
    assert b"objects" in half and half[b"nodes"], "some transactions were committed"
    assert meta_value(crashed, b"meta", migrate.KEY_MIGRATING) is not None
    monkeypatch.setattr(migrate, "_convert_node", real)
    done = migrate.migrate(crashed, map_bytes=MAP_BYTES)
    assert done.nodes == 40
    result = dump(crashed)
    for name in (*layout.NODE_DB_NAMES, b"sm_meta", b"meta", b"log", b"sessions"):
        assert result.get(name) == dump(clean).get(name), name


def test_a_run_stopped_before_the_marker_starts_over(tmp_path: Path) -> None:
    """A backup without the marker (stopped while copying): made again, store untouched."""
    store = tmp_path / "a"
    write_v1_store(store, v1_nodes())
    (store / migrate.BACKUP_DIR).mkdir()
    (store / migrate.BACKUP_DIR / "data.mdb").write_bytes(b"half a copy")
    migrate.migrate(store, map_bytes=MAP_BYTES)
    assert meta_value(store / migrate.BACKUP_DIR, b"meta", KEY_FORMAT) == 2
    assert set(read_v3(store)) == set(v1_nodes())


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ({"d": (1, "dict", [[float("nan"), 1]])}, "object d holds a key or set member"),
        ({"s": (1, "set", [float("nan")])}, "object s holds a key or set member"),
        ({"d": (1, "dict", [[1, "a"], [1.0, "b"]])}, "object d holds two keys"),
    ],
)
def test_keys_data_model_2_refuses_stop_the_migration(
    tmp_path: Path, nodes: dict[str, Any], message: str
) -> None:
    store = tmp_path / "a"
    write_v1_store(store, nodes)
    with pytest.raises(migrate.MigrationRefused, match=message):
        migrate.migrate(store, map_bytes=MAP_BYTES)
    # Nothing converted was kept: the next run starts from the backup.
    assert b"nodes" not in dump(store) or not dump(store)[b"nodes"]
    assert meta_value(store, b"meta", migrate.KEY_MIGRATING) is not None


def test_other_formats_and_missing_stores_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StartRefused, match="holds no superstatic store"):
        migrate.migrate(tmp_path / "none", map_bytes=MAP_BYTES)
    write_v1_store(tmp_path / "f1", {}, fmt=1)
    with pytest.raises(StartRefused, match="format 1; --migrate converts format 2"):
        migrate.migrate(tmp_path / "f1", map_bytes=MAP_BYTES)
    store = tmp_path / "lost"
    write_v1_store(store, v1_nodes())
    migrate.migrate(store, map_bytes=MAP_BYTES)
    env = open_env(store)
    with env.begin(write=True) as txn:
        from superstatic_agent.storage import record_put

        record_put(txn, env.open_db(b"meta", txn=txn), migrate.KEY_MIGRATING, b"1")
    env.close()
    shutil.rmtree(store / migrate.BACKUP_DIR)
    with pytest.raises(StartRefused, match=r"its backup .* is missing"):
        migrate.migrate(store, map_bytes=MAP_BYTES)


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "a"
    write_v1_store(store, v1_nodes(), applied=12)
    assert cli.main(["--migrate", "--data-dir", str(store)]) == 0
    assert "migrated 6 objects (1018 entries) at index 12 to format 5" in capsys.readouterr().out
    assert cli.main(["--migrate", "--data-dir", str(store)]) == 0
    assert "already format 5" in capsys.readouterr().out
    write_v1_store(tmp_path / "nan", {"d": (1, "dict", [[float("nan"), 1]])})
    assert cli.main(["--migrate", "--data-dir", str(tmp_path / "nan")]) == 3


def test_a_migrated_store_ships_as_a_peer_snapshot(tmp_path: Path) -> None:
    """A migrated leader's records are what a follower accepts: its snapshot chunks stage with
    the state machine's own checks and install byte for byte."""
    from superstatic_agent import snapshot_records
    from superstatic_agent.raft.types import ConfState, SnapshotMeta
    from superstatic_agent.statemachine import stage_chunk
    from superstatic_agent.storage import install_staged, open_dbs

    store, follower = tmp_path / "a", tmp_path / "b"
    write_v1_store(store, v1_nodes(), applied=50)
    migrate.migrate(store, map_bytes=MAP_BYTES)
    follower.mkdir()
    envs = [open_env(store), open_env(follower)]
    shipped = [*(n.decode() for n in layout.NODE_DB_NAMES), "sm_meta", "sessions"]
    try:
        source, target = (open_dbs(env) for env in envs)
        with envs[0].begin() as txn:
            chunks = list(snapshot_records.snapshot_chunks(txn, source, 300))
        assert len(chunks) > 5
        with envs[1].begin(write=True) as txn:
            for chunk in chunks:
                stage_chunk(txn, target, chunk)
            # The install swaps the tables: the follower's live ones are what it returns.
            installed = install_staged(txn, target, SnapshotMeta(50, 3, ConfState.make(["a"])))
        for name in shipped:
            with envs[0].begin() as a, envs[1].begin() as b:
                migrated = list(a.cursor(db=getattr(source, name)))
                assert list(b.cursor(db=getattr(installed, name))) == migrated, name
    finally:
        for env in envs:
            env.close()
