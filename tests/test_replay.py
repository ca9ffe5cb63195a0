"""Recorded runs of fused models (cnnfast._replay): a replay gives the
normal run's output bit for bit, and anything that could make it stale (a
new input signature, replaced weights, a thread count, a non-finite input,
a layer computing outside the drivers) sends the call the normal way."""
from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

import cnnfast
from cnnfast import _replay, models, nn
from cnnfast.nn.fuse import _REFUSED, _SEEN


def _normal(fused, x, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("CNNFAST_REPLAY", "0")
        return fused(x)


def _entries(fused):
    return [e if isinstance(e, str) else "recording" for e in fused._replays.values()]


def _input(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


MODELS = {
    "resnet18": lambda dt: models.resnet18(num_classes=10, dtype=dt),
    "mobilenet_v2": lambda dt: models.mobilenet_v2(num_classes=10, dtype=dt),
    "googlenet": lambda dt: models.googlenet(num_classes=10, dtype=dt),
    "lenet5": lambda dt: models.lenet5(dtype=dt),
}
SHAPES = {"resnet18": (2, 3, 40, 36), "mobilenet_v2": (1, 3, 33, 32),
          "googlenet": (1, 3, 96, 80), "lenet5": (3, 1, 32, 32)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_replay_matches_the_normal_run(name, dtype, monkeypatch):
    fused = MODELS[name](dtype).eval().fuse()
    shape = SHAPES[name]
    outs = [fused(_input(shape, dtype, seed)) for seed in range(4)]
    assert _entries(fused) == ["recording"]
    for seed, y in enumerate(outs):
        expected = _normal(fused, _input(shape, dtype, seed), monkeypatch)
        assert y.dtype == expected.dtype and y.shape == expected.shape
        assert y.tobytes() == expected.tobytes()
    # each call returns its own array: later calls do not overwrite it
    assert not np.shares_memory(outs[2], outs[3])


def test_each_signature_and_thread_count_has_its_recording(monkeypatch):
    fused = models.resnet18(num_classes=10).eval().fuse()
    for threads in (1, 2):
        with cnnfast.num_threads(threads):
            for shape in [(1, 3, 32, 32), (2, 3, 32, 32), (1, 3, 40, 32)]:
                for seed in range(3):
                    x = _input(shape, seed=seed)
                    assert fused(x).tobytes() == _normal(fused, x, monkeypatch).tobytes()
    assert len(fused._replays) <= _replay.MAX_RECORDINGS
    assert "recording" in _entries(fused)


def test_replaced_weights_are_seen(monkeypatch):
    fused = models.resnet18(num_classes=10).eval().fuse()
    x = _input((1, 3, 32, 32))
    for _ in range(3):
        before = fused(x)
    other = models.resnet18(num_classes=10).eval().fuse()
    fused.load_state_dict(other.state_dict())
    after = fused(x)
    assert after.tobytes() == other(x).tobytes()
    assert after.tobytes() != before.tobytes()
    fused.fc.bias.data = np.ones_like(fused.fc.bias.data)   # a parameter's array replaced
    assert fused(x).tobytes() == _normal(fused, x, monkeypatch).tobytes()
    fused.module.fc = nn.Identity()                        # a module replaced
    y = fused(x)
    assert y.shape == (1, 512)
    assert y.tobytes() == _normal(fused, x, monkeypatch).tobytes()


def test_fused_arrays_are_read_only():
    fused = models.resnet18(num_classes=10).eval().fuse()
    with pytest.raises(ValueError, match="read-only"):
        fused.fc.bias.data[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        fused.module.conv1.weight.data[...] = 0.0


def test_non_finite_input_after_recording(monkeypatch):
    # Winograd refuses a non-finite input and its caller runs the direct
    # kernel: the replay must notice and run the normal way
    fused = models.resnet18(num_classes=10).eval().fuse()
    for seed in range(3):
        fused(_input((1, 3, 64, 64), seed=seed))
    x = _input((1, 3, 64, 64), seed=7)
    x[0, 1, 30, 30] = np.nan
    x[0, 2, 3, 3] = np.inf
    y = fused(x)
    expected = _normal(fused, x, monkeypatch)
    assert np.array_equal(y, expected, equal_nan=True)


def test_inputs_the_layers_would_convert_run_the_normal_way(monkeypatch):
    fused = models.resnet18(num_classes=10).eval().fuse()
    base = _input((1, 3, 32, 64))
    views = [base[:, :, :, ::2], np.asfortranarray(base[:, :, :, :32]),
             base[:, :, :, :32].astype(">f4")]
    for v in views:
        for _ in range(3):
            y = fused(v)
        assert y.tobytes() == _normal(fused, v, monkeypatch).tobytes()
    assert "recording" not in _entries(fused)


class _Scale(nn.Module):
    """A user layer computing in NumPy, outside cnnfast's drivers."""

    def __init__(self):
        super().__init__()
        self.factor = 2.0

    def forward(self, x):
        return x * self.factor


def test_computation_outside_the_drivers_is_refused(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Scale(), nn.ReLU(),
                          nn.Conv2d(4, 2, 3)).eval()
    fused = model.fuse()
    for seed in range(4):
        x = _input((2, 3, 9, 9), seed=seed)
        assert fused(x).tobytes() == _normal(fused, x, monkeypatch).tobytes()
    assert _entries(fused) == [_REFUSED]


def test_concurrent_calls_from_threads(monkeypatch):
    fused = models.mobilenet_v2(num_classes=10).eval().fuse()
    xs = [_input((1, 3, 32, 32), seed=s) for s in range(6)]
    expected = [_normal(fused, x, monkeypatch) for x in xs]
    fused(xs[0])
    fused(xs[0])   # recorded
    errors = []

    def work(i):
        for _ in range(5):
            for x, e in zip(xs, expected):
                if fused(x).tobytes() != e.tobytes():
                    errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_copies_and_pickles_record_again(monkeypatch):
    fused = models.resnet18(num_classes=10).eval().fuse()
    x = _input((1, 3, 32, 32))
    for _ in range(3):
        y = fused(x)
    for twin in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        assert _entries(twin) in ([], [_SEEN]) or None in twin._replays.values()
        for _ in range(3):
            assert twin(x).tobytes() == y.tobytes()


def test_replay_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("CNNFAST_REPLAY", "0")
    fused = models.resnet18(num_classes=10).eval().fuse()
    for _ in range(3):
        fused(_input((1, 3, 32, 32)))
    assert fused._replays == {}


def test_explain_and_layer_timing_trace_the_normal_run():
    fused = models.resnet18(num_classes=10).eval().fuse()
    x = _input((1, 3, 32, 32))
    for _ in range(3):
        fused(x)
    report = cnnfast.explain_model(fused, x.shape)
    assert any(r.name == "module.conv1" for r in report.rows)


def test_activations_share_buffers_by_live_range():
    allocated = {i: np.empty(n, np.uint8) for i, n in enumerate([100, 200, 100, 50, 300])}
    live = {0: (0, 1), 1: (1, 2), 2: (2, 3), 3: (3, 4), 4: (2, 2)}
    buffers = _replay._share_buffers(live, allocated)
    for a in live:
        assert buffers[a].nbytes >= allocated[a].nbytes
        for b in live:
            overlap = not (live[a][1] < live[b][0] or live[b][1] < live[a][0])
            if a != b and overlap:
                assert buffers[a] is not buffers[b]
    assert buffers[2] is buffers[0]   # 0 ends at call 1, 2 starts at call 2
    assert len({id(b) for b in buffers.values()}) < len(live)


def test_onnx_models_replay(monkeypatch):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    import cnnfast.onnx as connx

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in [("w", (16, 3, 3, 3)), ("b", (16,)), ("fw", (5, 16)), ("fb", (5,))]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    fused = connx.load(model.SerializeToString()).fuse()
    outs = [fused(_input((2, 3, 12, 12), seed=s)) for s in range(4)]
    assert _entries(fused) == ["recording"]
    for s, y in enumerate(outs):
        assert y.tobytes() == _normal(fused, _input((2, 3, 12, 12), seed=s), monkeypatch).tobytes()


def test_recorded_calls_know_their_layers():
    fused = models.resnet18(num_classes=10).eval().fuse()
    x = _input((1, 3, 32, 32))
    fused(x)
    fused(x)
    rec = fused.recording(x)
    assert rec is not None
    names = {id(m): n for n, m in fused.named_modules()}
    owners = [None if o is None else (names[id(o[0])], o[1]) for o in rec.owners]
    assert owners[0] is None                      # the input's layout conversion
    assert ("module.conv1", 0) in owners and ("module.fc", 0) in owners
    assert all(o is None or o[0].startswith("module.") for o in owners)
    times = rec.timed_run(x, __import__("time").perf_counter)
    assert len(times) == len(rec.calls) and all(t >= 0 for t in times)


def test_thread_choice_follows_the_load():
    choice = _replay.ThreadChoice()
    choice.twin = object()
    picks = []

    def call(many_s, twin_s):
        twin = choice.wants_twin()
        picks.append(twin)
        choice.report(twin, twin_s if twin else many_s)

    for _ in range(50):              # quiet: the many-thread run; the twin tried once early
        call(0.010, 0.020)
    assert picks[2] and sum(picks) == 1
    picks.clear()
    for _ in range(64):              # loaded: two threads slower than one
        call(0.030, 0.020)
    assert picks.index(True) <= 3    # three slow runs (or sooner a probe), then the twin
    assert sum(picks[8:]) >= 52      # mostly the twin, the other every 16th call
    assert not all(picks[8:])
    picks.clear()
    for _ in range(80):              # quiet again: back to many threads
        call(0.010, 0.020)
    assert sum(picks[-25:]) <= 1     # back on many threads; the twin at its rare re-try


def test_thread_choice_sees_starved_threads():
    # a model that starts under load: its best many-thread time is a loaded
    # one, but its threads get half the CPU
    choice = _replay.ThreadChoice()
    choice.twin = object()
    picks = []
    for _ in range(20):
        twin = choice.wants_twin()
        picks.append(twin)
        choice.report(twin, 0.020 if twin else 0.060, 1.0 if twin else 0.45)
    assert picks[:2] == [False] * 2 and picks[2] and sum(picks) >= 15


def test_thread_choice_without_a_twin_stays():
    choice = _replay.ThreadChoice()
    choice.twin = False
    for _ in range(20):
        assert not choice.wants_twin()
        choice.report(False, 1.0 if _ % 2 else 0.1)


def test_one_thread_twin_gives_the_same_output(monkeypatch):
    monkeypatch.setattr(_replay.ThreadChoice, "wants_twin", lambda self: True)
    for name, shape in [("mobilenet_v2", (1, 3, 32, 32)), ("resnet18", (2, 3, 32, 32))]:
        fused = MODELS[name](np.float32).eval().fuse()
        with cnnfast.num_threads(2):
            for seed in range(4):
                x = _input(shape, seed=seed)
                assert fused(x).tobytes() == _normal(fused, x, monkeypatch).tobytes()
            (rec,) = [e for e in fused._replays.values() if not isinstance(e, str)]
            # a twin is kept only where its output is the many-thread one's
            assert rec.choice.twin is False or isinstance(rec.choice.twin, _replay.Recording)


def test_empty_batches_views_and_bad_dtypes(monkeypatch):
    fused = models.resnet18(num_classes=10).eval().fuse()
    for _ in range(3):
        assert fused(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 10)
    big = _input((3, 3, 32, 32))
    outs = [fused(big[1:2]) for _ in range(3)]   # a C-contiguous view into a larger array
    assert outs[-1].tobytes() == _normal(fused, big[1:2], monkeypatch).tobytes()
    for _ in range(3):   # the same error as the normal run, at every call
        with pytest.raises(TypeError, match="dtype"):
            fused(big.astype(np.float64))
