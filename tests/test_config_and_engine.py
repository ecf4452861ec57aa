"""tz.config and the engine's task runner."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.config import config
from torchzarr.core.engine import is_all_fill, run_parallel


def test_config_set_restores_and_validates():
    before = config.threads
    with config.set(threads=1, task_bytes=10):
        assert config.threads == 1 and config.task_bytes == 10
    assert config.threads == before
    with pytest.raises(TypeError, match="unknown"):
        config.set(nope=1)
    with pytest.raises(ValueError, match="positive"):
        config.set(threads=0)


def test_run_parallel_keeps_order_and_uses_threads():
    seen: set[int] = set()

    def work(x: int) -> int:
        seen.add(threading.get_ident())
        return x * x

    with config.set(threads=2, task_bytes=1):
        assert run_parallel(work, list(range(50)), cost=lambda _: 1) == [x * x for x in range(50)]
    assert len(seen) >= 1


def test_run_parallel_raises_first_error_after_all_finish():
    done = []

    def work(x: int) -> int:
        if x == 3:
            raise RuntimeError("boom 3")
        done.append(x)
        return x

    with config.set(threads=2, task_bytes=1), pytest.raises(RuntimeError, match="boom 3"):
        run_parallel(work, list(range(8)), cost=lambda _: 1)
    assert len(done) == 7


def test_is_all_fill_cases():
    assert is_all_fill(np.zeros(5), 0.0)
    assert not is_all_fill(np.array([0.0, 1.0]), 0.0)
    assert is_all_fill(np.full(3, np.nan), np.nan)
    assert not is_all_fill(np.array([np.nan, 1.0]), np.nan)
    assert is_all_fill(np.full(2, complex(np.nan, 1)), complex(np.nan, 1))
    assert is_all_fill(np.zeros(0), 1)
    assert is_all_fill(np.ones((2, 3)).T, 1.0)


def test_a_durable_local_write_that_fails_midway_changes_nothing(tmp_path, monkeypatch):
    from torchzarr.storage.local import LocalStore

    store = LocalStore(tmp_path / "a.zarr", fsync=True)
    arr = tz.create_array(store, shape=(64, 8), dtype=torch.float32, chunks=(8, 8))
    arr[:] = torch.zeros(64, 8)
    real, calls = LocalStore.stage_many, []

    def fail_third(self, items):
        calls.append(len(items))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, items)

    monkeypatch.setattr(LocalStore, "stage_many", fail_third)
    with tz.config.set(threads=2, task_bytes=256), pytest.raises(Exception, match="No space"):
        arr[:] = torch.ones(64, 8)
    monkeypatch.undo()
    assert len(calls) >= 3
    assert torch.equal(tz.open_array(store)[:], torch.zeros(64, 8))  # all or nothing
    assert not [p for p in (tmp_path / "a.zarr").rglob("*") if p.name.endswith(".partial")]


# -- config.set blocks restore only their own settings, also when they overlap ----------------
def test_leaving_a_block_keeps_changes_to_settings_it_did_not_set():
    before = config.retries
    try:
        with config.set(threads=1):
            config.retries = 7
            tz.config.set(io_batch_bytes=1 << 20)  # no ``with``: a lasting change
        assert config.retries == 7 and config.io_batch_bytes == 1 << 20
    finally:
        config.retries, config.io_batch_bytes = before, 256 << 20


def test_a_lasting_change_of_a_setting_a_block_set_outlives_the_block():
    before = config.task_bytes
    try:
        with config.set(task_bytes=10):
            config.task_bytes = 20
            assert config.task_bytes == 20
        assert config.task_bytes == 20
    finally:
        config.task_bytes = before


def test_nested_blocks_restore_in_turn():
    before = config.threads
    with config.set(threads=3):
        with config.set(threads=5, task_bytes=7):
            assert (config.threads, config.task_bytes) == (5, 7)
        assert config.threads == 3 and config.task_bytes == 1 << 20
    assert config.threads == before


@pytest.mark.parametrize("first_to_close", ["A", "B"])
def test_overlapping_blocks_in_two_threads_restore_the_value_outside_both(first_to_close):
    before = config.threads
    opened = {"A": threading.Event(), "B": threading.Event()}
    close = {"A": threading.Event(), "B": threading.Event()}
    seen: dict[str, int] = {}

    def block(name: str, threads: int) -> None:
        with config.set(threads=threads):
            opened[name].set()
            close[name].wait(10)
        seen[name] = config.threads  # right after this block ended

    a = threading.Thread(target=block, args=("A", before + 5))
    b = threading.Thread(target=block, args=("B", before + 6))
    a.start()
    opened["A"].wait(10)
    b.start()
    opened["B"].wait(10)
    assert config.threads == before + 6  # the block opened last wins while open
    second = "B" if first_to_close == "A" else "A"
    close[first_to_close].set()
    (a if first_to_close == "A" else b).join(10)
    assert seen[first_to_close] == (before + 6 if first_to_close == "A" else before + 5)
    close[second].set()
    a.join(10)
    b.join(10)
    assert config.threads == before


def test_overlapping_blocks_of_different_settings_leave_each_other_alone():
    before = (config.threads, config.io_batch_bytes)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with config.set(threads=before[0] + 5):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second() -> None:
        a_in.wait(10)
        with config.set(io_batch_bytes=1 << 20):
            b_in.set()
            a_out.wait(10)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert (config.threads, config.io_batch_bytes) == before


def test_a_set_result_dropped_without_with_is_a_lasting_change():
    import gc

    before = config.retries
    try:
        with config.set(retries=1):
            config.set(retries=5)  # dropped at once: lasting, no block left open
            gc.collect()
            assert config.retries == 5
        assert config.retries == 5
        assert not config._blocks and not config._outside
    finally:
        config.retries = before


@pytest.mark.parametrize("key", ["retry_backoff", "retry_deadline", "timeout"])
def test_config_refuses_nan_seconds(key):
    with pytest.raises(tz.errors.InvalidArgumentError, match=key):
        config.set(**{key: float("nan")})
    with pytest.raises(tz.errors.InvalidArgumentError, match=key):
        setattr(config, key, float("nan"))


@pytest.mark.parametrize("key", ["retry_backoff", "retry_deadline", "timeout"])
def test_config_refuses_seconds_past_float_range_as_a_bad_setting(key):
    before = getattr(config, key)
    with pytest.raises(tz.errors.InvalidArgumentError, match=key):
        config.set(**{key: 10**400})
    with pytest.raises(tz.errors.InvalidArgumentError, match=key):
        setattr(config, key, -(10**400))
    assert getattr(config, key) == before


def test_a_set_result_used_in_a_second_with_is_refused():
    before = config.retries
    changes = config.set(retries=7)
    with changes:
        assert config.retries == 7
    assert config.retries == before
    with pytest.raises(tz.errors.InvalidArgumentError, match=r"config\.set"), changes:
        pass
    assert config.retries == before and not config._blocks
    nested = config.set(retries=8)
    with nested:
        with pytest.raises(tz.errors.InvalidArgumentError, match="one with-block"), nested:
            pass
        assert config.retries == 8
    assert config.retries == before


def test_config_refuses_infinite_seconds_except_an_unbounded_deadline():
    for key in ("retry_backoff", "timeout"):
        with pytest.raises(tz.errors.InvalidArgumentError, match=key):
            config.set(**{key: float("inf")})
    with config.set(retry_deadline=float("inf"), timeout=None):
        assert config.retry_deadline == float("inf")
    with pytest.raises(tz.errors.InvalidArgumentError, match="or None for no bound"):
        config.timeout = float("inf")


@pytest.mark.parametrize(
    "key", ["threads", "io_batch_bytes", "task_bytes", "cache_bytes", "retries"]
)
def test_config_takes_numpy_ints_as_ints(key):
    before = getattr(config, key)
    with config.set(**{key: np.int64(4)}):
        assert getattr(config, key) == 4 and type(getattr(config, key)) is int
    try:
        setattr(config, key, np.uint32(5))
        assert getattr(config, key) == 5 and type(getattr(config, key)) is int
    finally:
        setattr(config, key, before)
    with pytest.raises(tz.errors.InvalidArgumentError, match=f"setting '{key}' must be a") as err:
        config.set(**{key: np.int64(-1)})
    assert not isinstance(err.value, TypeError)  # a value out of range, not of a wrong type


@pytest.mark.parametrize("value", ["4", 4.0, True, np.bool_(True), None, [4]])
def test_config_refuses_settings_of_a_wrong_type_as_type_errors(value):
    before = config.threads
    for key in ("threads", "cache_bytes", "timeout", "retry_backoff"):
        if key == "timeout" and value is None:
            continue  # no bound
        if key in ("timeout", "retry_backoff") and isinstance(value, float):
            continue  # seconds may be fractional
        with pytest.raises(tz.errors.ArgumentTypeError, match=f"setting '{key}' must be"):
            config.set(**{key: value})
        with pytest.raises(tz.errors.ArgumentTypeError, match=f"setting '{key}' must be"):
            setattr(config, key, value)
    assert config.threads == before


def test_config_takes_numpy_numbers_of_seconds():
    with config.set(timeout=np.float32(2.5), retry_backoff=np.int64(1), retry_deadline=np.inf):
        assert (config.timeout, config.retry_backoff, config.retry_deadline) == (2.5, 1, np.inf)
        assert type(config.retry_backoff) is int and type(config.timeout) is float


# -- the pool: a change of config.threads never fails a run still using the old pool ----------
def test_changing_threads_while_a_run_submits_does_not_shut_its_pool(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from torchzarr.core import pool as engine

    interrupted: list[ThreadPoolExecutor] = []

    class ChangesThreadsOnFirstSubmit(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):  # type: ignore[override]
            if not interrupted:  # another thread changes threads and runs meanwhile
                interrupted.append(self)

                def other() -> None:
                    with config.set(threads=11, task_bytes=1):
                        assert run_parallel(abs, [-1, -2, -3], cost=lambda _: 1) == [1, 2, 3]

                thread = threading.Thread(target=other)
                thread.start()
                thread.join(10)
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(engine, "ThreadPoolExecutor", ChangesThreadsOnFirstSubmit)
    with config.set(threads=9, task_bytes=1):
        assert run_parallel(abs, list(range(-20, 0)), cost=lambda _: 1) == list(range(20, 0, -1))
    old = interrupted[0]
    assert old is not engine._pool and old._shutdown  # the last user shut the old pool
    assert not engine._pool_users


def test_a_pool_leased_again_as_its_last_user_leaves_is_not_shut_under_the_new_lease(
    monkeypatch,
):
    # Order forced: the last user of the current pool releases the lock; before it acts on
    # "idle", a second call leases the same pool and a third replaces it by another size.
    from torchzarr.core import pool as engine

    class RunsBetweenLeaseEnds:
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self.releases = 0
            self.after_release: dict[int, object] = {}

        def __enter__(self) -> None:
            self._lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self._lock.release()
            self.releases += 1
            action = self.after_release.pop(self.releases, None)
            if callable(action):
                action()

    lock = RunsBetweenLeaseEnds()
    monkeypatch.setattr(engine, "_pool", None)
    monkeypatch.setattr(engine, "_pool_size", 0)
    monkeypatch.setattr(engine, "_pool_users", {})
    monkeypatch.setattr(engine, "_pool_lock", lock)
    second_lease = engine._leased_pool(2)
    leased: list = []

    def second_leases_and_third_replaces() -> None:
        leased.append(second_lease.__enter__())
        with engine._leased_pool(3):
            pass

    first_lease = engine._leased_pool(2)
    pool = first_lease.__enter__()  # release 1
    lock.after_release[2] = second_leases_and_third_replaces
    first_lease.__exit__(None, None, None)  # release 2: the others run right after it
    assert leased == [pool] and pool is not engine._pool
    try:
        assert pool.submit(abs, -1).result(10) == 1  # still open for the second lease
    finally:
        second_lease.__exit__(None, None, None)
    assert pool._shutdown and not engine._pool_users  # its last user shut it
    engine._pool.shutdown(wait=False)


# -- write telemetry: one call counts once; a sharded array counts inner chunks ---------------
def _write_events(arr, value) -> tuple[dict, list]:
    from torchzarr import telemetry

    events: list = []

    def listen(event, amounts):
        if event == "write":
            events.append(dict(amounts))

    telemetry.reset()
    telemetry.add_listener(listen)
    try:
        arr[:] = value
    finally:
        telemetry.remove_listener(listen)
    return telemetry.snapshot(), events


def test_a_write_spanning_many_batches_counts_one_write_and_one_event():
    arr = tz.create_array("memory://", shape=(1000,), dtype=torch.float64, chunks=(10,))
    with config.set(io_batch_bytes=800):  # 10 chunks a batch: 10 batches
        snap, events = _write_events(arr, torch.arange(1000.0))
    assert snap["writes"] == 1 and snap["chunks_written"] == 100
    assert len(events) == 1 and events[0]["writes"] == 1
    assert events[0]["chunks_written"] == 100 and events[0]["bytes_written"] > 0


def test_a_sharded_write_counts_inner_chunks_like_a_read():
    from torchzarr import telemetry

    arr = tz.create_array(
        "memory://", shape=(1000,), dtype=torch.float64, chunks=(10,), shards=(100,)
    )
    snap, events = _write_events(arr, torch.arange(1000.0))
    assert snap["chunks_written"] == 100 and events[0]["chunks_written"] == 100
    telemetry.reset()
    arr[:]
    assert telemetry.snapshot()["chunks_fetched"] == 100
    snap, _ = _write_events(arr, torch.zeros(1000))  # all fill: every shard deleted
    assert snap["chunks_deleted"] == 100 and snap["chunks_written"] == 0


def test_a_failing_write_counts_what_it_stored_but_no_write(monkeypatch):
    from torchzarr import telemetry
    from torchzarr.storage.memory import MemoryStore

    store = MemoryStore()
    arr = tz.create_array(store, shape=(100,), dtype=torch.float64, chunks=(10,))
    real, calls = MemoryStore.set_many, []

    def fail_second(self, items):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, items)

    monkeypatch.setattr(MemoryStore, "set_many", fail_second)
    telemetry.reset()
    with config.set(io_batch_bytes=400), pytest.raises(OSError, match="No space"):
        arr[:] = torch.arange(100.0)  # batches of 5 chunks: the second fails
    snap = telemetry.snapshot()
    assert snap["writes"] == 0 and snap["chunks_written"] == 5


def test_settings_from_environment_parses_each_kind():
    from torchzarr.config import settings_from_environment

    found = settings_from_environment(
        {
            "TORCHZARR_THREADS": " 3 ",
            "TORCHZARR_CACHE_BYTES": "0",
            "TORCHZARR_TIMEOUT": "None",
            "TORCHZARR_RETRY_DEADLINE": "inf",
            "TORCHZARR_RETRY_BACKOFF": "0.5",
            "TORCHZARR_SOMETHING_NEWER": "1",
            "THREADS": "9",
        }
    )
    assert found == {
        "threads": 3,
        "cache_bytes": 0,
        "timeout": None,
        "retry_deadline": float("inf"),
        "retry_backoff": 0.5,
    }
    assert isinstance(found["threads"], int)


@pytest.mark.parametrize(
    "variable, text",
    [
        ("TORCHZARR_THREADS", "0"),
        ("TORCHZARR_THREADS", "four"),
        ("TORCHZARR_RETRIES", "2.5"),
        ("TORCHZARR_TIMEOUT", "nan"),
        ("TORCHZARR_TIMEOUT", "inf"),
        ("TORCHZARR_RETRY_BACKOFF", "none"),
    ],
)
def test_an_invalid_environment_setting_names_the_variable(variable, text):
    from torchzarr.config import settings_from_environment

    with pytest.raises(tz.errors.InvalidArgumentError, match=f"{variable}='{text}'"):
        settings_from_environment({variable: text})


def test_an_infinite_timeout_in_the_environment_suggests_none():
    from torchzarr.config import settings_from_environment

    with pytest.raises(tz.errors.InvalidArgumentError, match="or none for no bound, got inf"):
        settings_from_environment({"TORCHZARR_TIMEOUT": "inf"})


def _config_in_a_spawned_process() -> tuple[int, int | None]:
    return config.threads, config.cache_bytes


def test_spawned_processes_start_from_the_environment(monkeypatch):
    import multiprocessing

    monkeypatch.setenv("TORCHZARR_THREADS", "5")
    monkeypatch.setenv("TORCHZARR_CACHE_BYTES", "12345")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_config_in_a_spawned_process) == (5, 12345)
