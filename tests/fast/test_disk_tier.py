"""The prefix cache's disk tier with the stand-in model: a prompt prefilled by one engine is a hit for
another that names the same folder, and for a fresh one after a restart; a file that is corrupted,
truncated or of another layout is a logged miss, never a wrong answer; the folder stays private and
within its bound."""
import logging
import os

import pytest
import torch

from engine.core.config import EngineConfig, SamplingParams
from engine.core.disk_tier import SUFFIX, DiskTier, Layout, clear
from engine.core.kv_cache import KVPayload
from tests.fast.tiny_model import HEAD_DIM, KV_HEADS, LAYERS, expected_answer, expected_kv, tiny_engine
from tests.helpers import run_to_end

SYSTEM = list(range(1, 50))          # three whole blocks of 16, and one token more
QUESTION = [60, 61, 62, 63, 5]
PARAMS = SamplingParams(max_tokens=5, ignore_eos=True)


def engine_on(folder, **overrides):
    return tiny_engine(EngineConfig(kv_cache_tokens=512, kv_store_folder=str(folder), **overrides))


def answer(engine, prompt=SYSTEM + QUESTION, name="q"):
    engine.add_request(prompt, PARAMS, name)
    tokens = run_to_end(engine)[name]
    engine.disk_tier.flush()
    return tokens, next(r for r in engine.finished if r.request_id == name)


def test_a_prefix_one_engine_computed_is_read_from_disk_by_another_and_the_answer_is_the_same(tmp_path):
    first, second = engine_on(tmp_path), engine_on(tmp_path)
    tokens, record = answer(first)
    assert record.cached_tokens == 0 and first.disk_tier.stats.written == 3   # its three whole blocks
    tokens_again, record = answer(second)
    assert tokens_again == tokens == expected_answer(SYSTEM + QUESTION, 5)
    assert (record.cached_tokens, record.cache_tier) == (48, "disk") and second.disk_tier.stats.blocks_read == 3
    assert second.prefix_cache_stats()["disk"]["hits"] == 1


def test_a_restarted_engine_finds_what_the_folder_holds_and_loads_the_same_bytes(tmp_path):
    answer(engine_on(tmp_path))
    fresh = engine_on(tmp_path)
    fresh.add_request(SYSTEM + QUESTION, PARAMS, "q")
    fresh.scheduler.schedule()   # the prefix is loaded before the prompt's first step
    seq = fresh.sequences["q"]
    loaded = fresh.cache.export(seq.block_table, 48)
    want = expected_kv(SYSTEM[:48])
    assert seq.record.cache_tier == "disk"
    assert torch.equal(loaded.key, want.key) and torch.equal(loaded.value, want.value)


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "not ours"])
def test_a_damaged_file_is_a_logged_miss_never_a_wrong_answer(tmp_path, caplog, damage):
    answer(engine_on(tmp_path))
    victim = sorted(tmp_path.glob(f"*{SUFFIX}"), key=os.path.getmtime)[0]   # the first block: every hit needs it
    data = bytearray(victim.read_bytes())
    if damage == "flip a byte":
        data[-7] ^= 0xFF
    elif damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data = b"hello" + data
    victim.write_bytes(bytes(data))
    fresh = engine_on(tmp_path)
    with caplog.at_level(logging.WARNING, "pdlab.engine"):
        tokens, record = answer(fresh)
    assert tokens == expected_answer(SYSTEM + QUESTION, 5) and record.cached_tokens == 0
    assert fresh.disk_tier.stats.rejected == 1 and "refused" in caplog.text
    assert victim.exists()   # removed, then written anew by this prefill


def layout_and_block() -> tuple[Layout, KVPayload]:
    layout = Layout("tiny", "float32", LAYERS, KV_HEADS, HEAD_DIM, 16)
    block = torch.ones(LAYERS, 16, KV_HEADS, HEAD_DIM)
    return layout, KVPayload(block, -block)


def test_another_layouts_file_under_the_same_name_is_refused(tmp_path, caplog):
    layout, block = layout_and_block()
    writer = DiskTier(tmp_path, 1 << 20, layout)
    writer.write("k", block)
    writer.flush()
    reader = DiskTier(tmp_path, 1 << 20, Layout("tiny", "bfloat16", LAYERS, KV_HEADS, HEAD_DIM, 16))
    assert reader.read("k") is None and reader.stats.rejected == 1 and not (tmp_path / f"k{SUFFIX}").exists()


def test_the_folder_is_private_bounded_least_recently_used_first_and_cleared(tmp_path):
    layout, block = layout_and_block()
    folder = tmp_path / "store"
    one_block = DiskTier(folder, 1 << 20, layout)
    one_block.write("probe", block)
    one_block.flush()
    size = (folder / f"probe{SUFFIX}").stat().st_size
    tier = DiskTier(folder, 3 * size, layout)
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    for key in ["a", "b"]:
        tier.write(key, block)
        tier.flush()
    tier.read("probe")   # used again: it outlives "a"
    tier.write("c", block)
    tier.flush()
    left = sorted(p.stem for p in folder.glob(f"*{SUFFIX}"))
    assert tier.bytes_on_disk <= 3 * size and "probe" in left and "a" not in left and tier.stats.evicted >= 1
    (folder / ".x.999999999.tmp").write_bytes(b"half a block")   # a writer that died mid-write
    DiskTier(folder, 3 * size, layout)
    assert not list(folder.glob(".*.tmp"))
    assert clear(folder) == len(left) and not list(folder.glob(f"*{SUFFIX}"))


def test_a_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    layout, _ = layout_and_block()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(ValueError, match="belongs to another user"):
        DiskTier(tmp_path, 1 << 20, layout)


def test_a_block_unused_for_its_lifetime_is_a_miss_and_removed(tmp_path):
    layout, block = layout_and_block()
    tier = DiskTier(tmp_path, 1 << 20, layout, ttl_s=60)
    tier.write("old", block)
    tier.write("new", block)
    tier.flush()
    hour_ago = os.path.getmtime(tmp_path / f"old{SUFFIX}") - 3600
    os.utime(tmp_path / f"old{SUFFIX}", (hour_ago, hour_ago))
    assert not tier.has("old") and tier.has("new") and tier.stats.expired == 1
    assert not (tmp_path / f"old{SUFFIX}").exists()
