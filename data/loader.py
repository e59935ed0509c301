"""A prefetching loader of pretraining batches: a background thread builds the next steps' batches.

It starts at any step (resuming needs only the step number) and yields, per optimizer step, the list
of `accumulation` micro-batch dicts this rank trains on.
"""

import queue
import threading

import torch

from data.pretraining import PretrainingData

_DONE = object()


class PretrainingLoader:
    def __init__(
        self,
        data: PretrainingData,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        accumulation: int = 1,
        start_step: int = 0,
        pin_memory: bool = False,
        prefetch: int = 4,
        max_steps: int | None = None,
    ):
        self._stop = threading.Event()
        self.data, self.global_batch_size = data, global_batch_size
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation
        self.step = start_step  # the step the next yielded batch belongs to
        self.max_steps = max_steps  # stop before this step (None: never stop)
        self.pin_memory = pin_memory and torch.cuda.is_available()  # pinning needs a CUDA build
        data.instance_indices(
            start_step, global_batch_size, rank, world_size, 0, accumulation
        )  # validate now
        self._queue = queue.Queue(maxsize=max(1, prefetch))
        self._thread = threading.Thread(target=self._produce, name="pretraining-loader", daemon=True)
        self._thread.start()

    def micro_batches(self, step: int) -> list[dict]:
        batches = [
            self.data.batch(step, self.global_batch_size, self.rank, self.world_size, m, self.accumulation)
            for m in range(self.accumulation)
        ]
        if self.pin_memory:
            batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
        return batches

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self):
        step = self.step
        try:
            while self.max_steps is None or step < self.max_steps:
                if not self._put((step, self.micro_batches(step))):
                    return
                step += 1
            self._put((None, _DONE))
        except BaseException as err:  # handed to the consumer, raised there
            self._put((None, err))

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        if self._stop.is_set():
            raise StopIteration
        step, item = self._queue.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        assert step == self.step
        self.step += 1
        return item

    def close(self):
        self._stop.set()
        # no timeout: the producer stops after the batch it is building; a daemon thread still inside a
        # torch op when the interpreter exits aborts the process ("terminate called without an active
        # exception"), seen with 2 ranks on a loaded machine
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self._stop.set()
