"""The embedded server holds Python's cyclic collector off while it parses a JSON body, and lets it run
again once no parse is in progress (or once overlapping parses have held it off too long)."""

from __future__ import annotations

import contextlib
import gc
import time

import pytest

from crossdeploy.serving.gc_pause import GcPause


@contextlib.contextmanager
def counting_collections():
    """The number of collections started inside the block, as a one-element list."""
    started = [0]

    def callback(phase, info):
        if phase == "start":
            started[0] += 1

    gc.callbacks.append(callback)
    try:
        yield started
    finally:
        gc.callbacks.remove(callback)


@pytest.fixture(autouse=True)
def collector_back_on():
    yield
    gc.enable()


def make_lists(n: int = 20_000) -> list:
    return [[float(i)] for i in range(n)]


def test_no_collection_runs_inside_the_pause_and_one_does_outside():
    # the control first: the same allocations without the pause start collections, so a count of zero
    # inside it is the pause's doing and not a blind counter
    with counting_collections() as outside:
        make_lists()
    assert outside[0] > 0
    with counting_collections() as inside:
        with GcPause():
            make_lists()
    assert inside[0] == 0
    assert gc.isenabled()


def test_overlapping_parses_keep_it_off_until_the_last_one_ends():
    pause = GcPause()
    pause.__enter__()
    pause.__enter__()
    pause.__exit__(None, None, None)
    assert not gc.isenabled(), "the first parse to end turned the collector on under the second"
    pause.__exit__(None, None, None)
    assert gc.isenabled()


def test_parses_that_never_leave_a_break_let_it_run_after_max_pause_s():
    pause = GcPause(max_pause_s=0.05)
    pause.__enter__()
    assert not gc.isenabled()
    time.sleep(0.1)
    pause.__enter__()  # a parse arriving while the first has held the collector off past the limit
    assert gc.isenabled(), "overlapping parses held the collector off without bound"
    pause.__exit__(None, None, None)
    pause.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_the_process_turned_off_stays_off():
    gc.disable()
    with GcPause():
        pass
    assert not gc.isenabled()


def test_the_server_parses_a_float_body_without_a_collection(served_repo, tiny_images):
    """A batch of 8 tiny float images is 33 k JSON lists: enough to start collections, none inside the
    predictor's parse. The planted defect (the parse without the pause) starts them."""
    import orjson

    from crossdeploy.serving.predictors import SavedModelPredictor

    predictor = SavedModelPredictor("tiny", served_repo / "models" / "serving" / "tiny" / "1", 8)
    body = orjson.dumps({"instances": tiny_images[1].tensors("NHWC")[:8]}, option=orjson.OPT_SERIALIZE_NUMPY)
    with counting_collections() as paused:
        predictor._parse(body)
    assert paused[0] == 0
    predictor._parse_pause = contextlib.nullcontext()
    with counting_collections() as unpaused:
        predictor._parse(body)
    assert unpaused[0] > 0
