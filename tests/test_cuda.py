"""The CUDA plumbing the TensorRT runner stands on (crossdeploy/tensorrt/cuda.py), on a kernel-free copy
workload, so it is checked on any GPU machine with cuda-python, TensorRT or not (marked gpu)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

CAPACITY = 8  # the workload's largest "batch"
ROW = 1024  # floats per sample
SENTINEL = -1.0


class CopyWorkload:
    """The runner's shape in small: pinned host buffers, device buffers, one stream, events around the
    work, and the work itself a device-to-device copy whose size follows the batch, as an engine's
    kernels follow the input shape."""

    def __init__(self, cuda_graph: bool):
        cuda = pytest.importorskip("cuda.bindings", reason="needs cuda-python (pip install cuda-python)")
        del cuda
        from crossdeploy.tensorrt.cuda import DeviceBuffer, GraphReplay, PinnedBuffer, check, cudart

        self.rt, self.check = cudart(), check
        self.host_in = PinnedBuffer((CAPACITY, ROW), np.float32)
        self.host_out = PinnedBuffer((CAPACITY, ROW), np.float32)
        self.dev_in, self.dev_out = DeviceBuffer(self.host_in.nbytes), DeviceBuffer(self.host_out.nbytes)
        self.stream = check(self.rt.cudaStreamCreate())
        self.start, self.end = check(self.rt.cudaEventCreate()), check(self.rt.cudaEventCreate())
        self.replay = GraphReplay(self.stream) if cuda_graph else None
        self.device_ms: list[float] = []

    def _copy(self, n: int):
        def enqueue(stream):
            self.check(
                self.rt.cudaMemcpyAsync(
                    self.dev_out.pointer, self.dev_in.pointer, n * ROW * 4, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream
                )
            )

        return enqueue

    def __call__(self, batch: np.ndarray, enqueue=None) -> np.ndarray:
        rt, check, n = self.rt, self.check, len(batch)
        self.host_in.array[:n] = batch
        # the whole output is reset each call, so a copy of the wrong size shows past row n
        self.host_out.array[:] = SENTINEL
        check(
            rt.cudaMemcpyAsync(
                self.dev_out.pointer, self.host_out.pointer, self.host_out.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream
            )
        )
        check(
            rt.cudaMemcpyAsync(
                self.dev_in.pointer, self.host_in.pointer, self.host_in.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream
            )
        )
        check(rt.cudaEventRecord(self.start, self.stream))
        if enqueue is not None:
            enqueue(self.stream)
        elif self.replay is None:
            self._copy(n)(self.stream)
        else:
            self.replay.run(n, self._copy(n))
        check(rt.cudaEventRecord(self.end, self.stream))
        check(
            rt.cudaMemcpyAsync(
                self.host_out.pointer, self.dev_out.pointer, self.host_out.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream
            )
        )
        check(rt.cudaStreamSynchronize(self.stream))
        self.device_ms.append(float(check(rt.cudaEventElapsedTime(self.start, self.end))))
        return np.array(self.host_out.array)

    def close(self) -> None:
        if self.replay is not None:
            self.replay.drop()
        for event in (self.start, self.end):
            self.check(self.rt.cudaEventDestroy(event))
        self.check(self.rt.cudaStreamDestroy(self.stream))
        for buffer in (self.host_in, self.host_out, self.dev_in, self.dev_out):
            buffer.free()


def expected(batch: np.ndarray) -> np.ndarray:
    out = np.full((CAPACITY, ROW), SENTINEL, np.float32)
    out[: len(batch)] = batch
    return out


def batches(sizes):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, ROW), dtype=np.float32) for n in sizes]


def test_pinned_copies_streams_and_events_round_trip():
    work = CopyWorkload(cuda_graph=False)
    try:
        for batch in batches([CAPACITY, 3, 1]):
            np.testing.assert_array_equal(work(batch), expected(batch))
        assert len(work.device_ms) == 3 and min(work.device_ms) >= 0
    finally:
        work.close()


def test_graphs_follow_the_shape_and_match_the_plain_path():
    sizes = [4, 4, 4, 2, 2, 4, 4, 4, 2, 4]  # back to an earlier size, and alternating
    plain, graphed = CopyWorkload(cuda_graph=False), CopyWorkload(cuda_graph=True)
    try:
        for batch in batches(sizes):
            out = graphed(batch)  # once per batch: each call moves the replay's state on
            np.testing.assert_array_equal(out, plain(batch))
            np.testing.assert_array_equal(out, expected(batch))
        # captured on the second call at a shape, replayed while it lasts, never across a change
        assert graphed.replay.captures == 3 and graphed.replay.replays == 2
    finally:
        plain.close()
        graphed.close()


def test_a_stale_graph_would_copy_the_captured_size():
    """The defect GraphReplay exists to prevent: a graph captured at 4 replayed for a batch of 2."""
    from crossdeploy.tensorrt.cuda import GraphReplay

    work = CopyWorkload(cuda_graph=True)
    try:
        four, two = batches([4, 2])
        stale = GraphReplay(work.stream)
        stale.run(4, work._copy(4))  # plain
        work(four, enqueue=lambda stream: stale.run(4, work._copy(4)))  # captured at 4
        assert stale.captures == 1
        replayed_stale = work(two, enqueue=lambda stream: work.check(work.rt.cudaGraphLaunch(stale._graph, stream)))
        assert not np.array_equal(replayed_stale, expected(two))  # rows 2..3 are overwritten
        np.testing.assert_array_equal(work(two, enqueue=lambda stream: stale.run(2, work._copy(2))), expected(two))
        assert stale._graph is None  # the shape change dropped it
        stale.drop()
    finally:
        work.close()
