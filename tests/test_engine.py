"""The refill engine equals per-sample, one-at-a-time early exit, whatever the batching."""

import asyncio
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinymodels import borderline, exit_probs_one, random_ids, tiny_classifier

from models.engine import EarlyExitEngine, reference_predict
from models.exits import ConfidenceWindow, Entropy, FullDepth, MaxProb, Patience
from models.pool import EnginePool

MODELS = {(kind, shared): tiny_classifier(kind, layers=4, seed=3, shared_head=shared)
          for kind in ("bert", "albert") for shared in (False, True)}
TOL = 1e-4


rules = st.one_of(
    st.just(FullDepth()),
    st.builds(MaxProb, st.floats(0.4, 0.99)),
    st.builds(Entropy, st.floats(0.05, 0.9)),
    st.builds(Patience, st.integers(1, 6)),
    st.builds(ConfidenceWindow, st.floats(0.0, 0.6), st.integers(1, 6), st.floats(0.05, 0.6)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model_key=st.sampled_from(sorted(MODELS)),
    rule=rules,
    n=st.integers(1, 40),
    seed=st.integers(0, 10_000),
    max_batch=st.sampled_from([1, 2, 5, 8, 16]),
    mode=st.sampled_from(["static", "compact", "refill"]),
    policy=st.sampled_from(["largest", "deepest"]),
    lookahead=st.sampled_from([1, 4]),
    chunk=st.sampled_from([None, 2, 3]),
)
def test_engine_matches_one_at_a_time_reference(model_key, rule, n, seed, max_batch, mode, policy, lookahead, chunk):
    model = MODELS[model_key]
    ids = random_ids(n, seed, min_len=1 if seed % 2 else 2, max_len=60)
    random.Random(seed).shuffle(ids)  # arrival order
    engine = EarlyExitEngine(model, rule, max_batch=max_batch, mode=mode, policy=policy, lookahead=lookahead,
                             chunk=chunk)
    got = engine.run(ids)
    assert len(got) == n
    for x, pred in zip(ids, got):
        ref = reference_predict(model, x, rule)
        if borderline(rule, exit_probs_one(model, x)[: max(ref.exit_layer, pred.exit_layer)]):
            continue  # documented exception: a decision within 1e-4 of its threshold may flip
        assert pred.exit_layer == ref.exit_layer
        assert pred.label == ref.label
        assert max(abs(a - b) for a, b in zip(pred.probs, ref.probs)) < TOL
    assert engine.stats.retired == n
    assert engine.in_flight == 0 and engine.waiting == 0


def test_refill_keeps_the_batch_full_while_work_waits():
    model = MODELS[("bert", False)]
    ids = random_ids(200, 7)
    engine = EarlyExitEngine(model, Entropy(0.6), max_batch=16, mode="refill")
    future = engine.submit_ids(ids)
    sizes = []
    while engine.waiting:
        engine.step()
        if engine.waiting:  # work still waited after this step's admission
            sizes.append(engine.last_occupancy)
            assert not future.done()  # one Future for the whole batch: done with its last sample
    assert len(sizes) > 10 and all(s == 16 for s in sizes), sizes
    while engine.in_flight:
        engine.step()
    assert len(future.result(timeout=0)) == len(ids)


def test_static_early_exit_costs_as_much_as_its_slowest_sample():
    model = MODELS[("bert", False)]
    ids = random_ids(64, 11)
    rule = Entropy(0.6)
    static = EarlyExitEngine(model, rule, max_batch=16, mode="static")
    compact = EarlyExitEngine(model, rule, max_batch=16, mode="compact")
    a, b = static.run(ids), compact.run(ids)
    assert [p.exit_layer for p in a] == [p.exit_layer for p in b]
    assert compact.stats.sample_layers == sum(p.exit_layer for p in b)
    assert static.stats.sample_layers >= compact.stats.sample_layers


async def test_async_front_backpressure_and_clean_shutdown():
    model = MODELS[("albert", True)]
    engine = EarlyExitEngine(model, Patience(2), max_batch=4, max_queue=8).start()
    model.tokenizer = None
    ids = random_ids(50, 5)
    # predict() takes texts; here we drive the same path with ids through submit in a thread.
    fut = await asyncio.to_thread(engine.submit_ids, ids)  # 50 > max_queue: submitter blocks, then proceeds
    results = await asyncio.wrap_future(fut)
    assert [r.exit_layer for r in results] == [reference_predict(model, x, Patience(2)).exit_layer for x in ids]
    more = engine.submit_ids(ids[:10])
    engine.close()  # finishes the queued work before the thread ends
    assert more.done() and more.exception() is None and len(more.result()) == 10
    assert engine.submit_ids([]).result(timeout=0) == []  # an empty batch is done at once
    assert not any(t.name == "finsent-engine" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit_ids(ids[:1])


def test_bad_arguments_are_rejected():
    model = MODELS[("bert", False)]
    with pytest.raises(ValueError, match="mode"):
        EarlyExitEngine(model, FullDepth(), mode="dynamic")
    with pytest.raises(ValueError, match="policy"):
        EarlyExitEngine(model, FullDepth(), policy="random")


def test_settings_choose_the_engine_policy():
    from pipeline.inference import build_engine
    from pipeline.settings import Settings

    model = tiny_classifier("bert")
    assert build_engine(Settings(), model=model).policy == "deepest"  # streaming default: low tail latency
    assert build_engine(Settings(engine_policy="largest"), model=model).policy == "largest"
    with pytest.raises(ValueError):
        Settings(engine_policy="fastest")


def test_engine_mode_setting_and_auto():
    from pipeline.inference import build_engine, engine_mode
    from pipeline.settings import Settings

    assert build_engine(Settings(), model=tiny_classifier("bert")).mode == "refill"
    assert build_engine(Settings(engine_mode="compact"), model=tiny_classifier("bert")).mode == "compact"
    assert engine_mode(Settings(engine_mode="auto")) == "compact"
    assert engine_mode(Settings(device="cuda")) == "refill"
    assert engine_mode(Settings(device="cuda", engine_mode="static")) == "static"


# --------------------------------------------------------------------------------------------
# EnginePool: replicas over one model, each in its own thread


def _assert_matches_reference(model, rule, ids, got) -> None:
    assert len(got) == len(ids)
    for x, pred in zip(ids, got):
        ref = reference_predict(model, x, rule)
        if borderline(rule, exit_probs_one(model, x)[: max(ref.exit_layer, pred.exit_layer)]):
            continue
        assert (pred.exit_layer, pred.label) == (ref.exit_layer, ref.label)
        assert max(abs(a - b) for a, b in zip(pred.probs, ref.probs)) < TOL


def test_pool_splits_a_large_batch_across_replicas_in_input_order():
    model, rule = MODELS[("bert", False)], Entropy(0.5)
    ids = random_ids(150, 21, max_len=50)
    pool = EnginePool([EarlyExitEngine(model, rule, max_batch=8) for _ in range(3)]).start()
    try:
        got = pool.run(ids)  # 150 texts fill many batches: one contiguous part per replica
        _assert_matches_reference(model, rule, ids, got)
        assert [e.stats.retired for e in pool.engines] == [50, 50, 50]
        assert pool.stats.retired == 150 and len(pool.stats.exit_layers) == 150
        assert pool.stats.sample_layers == sum(p.exit_layer for p in got)
    finally:
        pool.close()
    assert not any(t.name == "finsent-engine" for t in threading.enumerate())


async def test_pool_predict_sends_small_batches_to_the_least_loaded_replica():
    model, rule = MODELS[("albert", True)], Patience(2)
    model.tokenizer = None
    pool = EnginePool([EarlyExitEngine(model, rule, max_batch=4) for _ in range(2)]).start()
    try:
        busy, idle = pool.engines
        parked = busy.submit_ids(random_ids(40, 1))  # queued on the first replica
        batch = random_ids(3, 2)
        got = await asyncio.wrap_future(pool.submit_ids(batch))  # < max_batch: one part, the idle replica
        _assert_matches_reference(model, rule, batch, got)
        assert idle.stats.retired == 3
        await asyncio.wrap_future(parked)
        with pytest.raises(RuntimeError, match="start"):
            await EnginePool([EarlyExitEngine(model, rule)]).predict(["text"])
    finally:
        pool.close()


def test_pool_rejects_replicas_of_different_models():
    with pytest.raises(ValueError, match="share one model"):
        EnginePool([EarlyExitEngine(MODELS[("bert", False)], FullDepth()),
                    EarlyExitEngine(MODELS[("bert", True)], FullDepth())])
    with pytest.raises(ValueError, match="at least one"):
        EnginePool([])


def test_build_engine_replicas_from_settings():
    import torch

    from pipeline.inference import build_engine, engine_replicas
    from pipeline.settings import Settings

    model = MODELS[("bert", False)]
    threads = torch.get_num_threads()
    try:
        pool = build_engine(Settings(engine_replicas=2, threads=2), model)
        assert isinstance(pool, EnginePool) and len(pool.engines) == 2
        assert torch.get_num_threads() == 1  # the two threads are shared out: one each
        assert isinstance(build_engine(Settings(engine_replicas=1), model), EarlyExitEngine)
        # default: one per CPU thread on CPU (even after an engine lowered torch's count), 1 on GPU
        assert engine_replicas(Settings(threads=3)) == 3
        assert engine_replicas(Settings(threads=64)) == 4
        assert engine_replicas(Settings(device="cuda", threads=8)) == 1
    finally:
        torch.set_num_threads(threads)


def test_inference_leaves_one_cpu_to_the_event_loop(monkeypatch: pytest.MonkeyPatch):
    import torch

    from pipeline import inference
    from pipeline.settings import Settings

    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(inference.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
        assert inference.cpu_threads(Settings()) == 3
        assert inference.engine_replicas(Settings()) == 3
        assert inference.cpu_threads(Settings(threads=4)) == 4  # an explicit count is taken as it is
        monkeypatch.setattr(inference.os, "sched_getaffinity", lambda pid: {0, 1})
        assert isinstance(inference.build_engine(Settings(), MODELS[("bert", False)]), EarlyExitEngine)
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(inference.os, "sched_getaffinity", lambda pid: {0})
        assert inference.cpu_threads(Settings()) == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_cancelled_caller_does_not_kill_the_engine(replicas: int):
    """A worker shutting down cancels its awaiting tasks; the engine must finish and keep serving."""
    model, rule = MODELS[("bert", False)], Entropy(0.5)
    engines = [EarlyExitEngine(model, rule, max_batch=4) for _ in range(replicas)]
    engine = (engines[0] if replicas == 1 else EnginePool(engines)).start()
    try:
        fut = engine.submit_ids(random_ids(40, 3))  # 40 >= 2 x max_batch: split over the pool
        waiter = asyncio.ensure_future(asyncio.wrap_future(fut))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not fut.cancelled()
        got = await asyncio.wrap_future(engine.submit_ids(random_ids(5, 4)))  # still serving
        assert len(got) == 5 and all(e._error is None for e in engines)
        assert len(fut.result(timeout=30)) == 40
    finally:
        engine.close()
