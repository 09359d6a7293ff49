"""torch's post-local SGD hook: all-reduce over every rank until ``start_localSGD_iter``, then only within
``subgroup`` (a model averager then averages the parameters over all ranks every few steps)."""
import logging

from ....futures import Future
from ... import group
from . import default_hooks as default

__all__ = ["PostLocalSGDState", "post_localSGD_hook"]

logger = logging.getLogger(__name__)


class PostLocalSGDState:
    """The groups, the iteration local SGD starts at, and the iteration count (torch's slots)."""

    __slots__ = ["process_group", "subgroup", "start_localSGD_iter", "post_local_gradient_allreduce", "iter"]

    def __init__(self, process_group, subgroup, start_localSGD_iter, post_local_gradient_allreduce=True):
        logger.info("Local SGD will be started after %s iterations", start_localSGD_iter)
        self.process_group = process_group
        self.subgroup = subgroup
        self.start_localSGD_iter = start_localSGD_iter
        self.post_local_gradient_allreduce = post_local_gradient_allreduce
        self.iter = 0

    def maybe_increase_iter(self, bucket):
        """One iteration more when the last bucket of a backward is handed over."""
        if bucket.is_last():
            self.iter += 1
        if self.iter == self.start_localSGD_iter:
            logger.info("Start to apply local SGD after %s iterations.", self.iter)


def post_localSGD_hook(state, bucket):
    """The mean over ``state.process_group`` first, then over ``state.subgroup`` (or no communication
    when ``post_local_gradient_allreduce=False``)."""
    global_group_to_use = state.process_group if state.process_group is not None else group.WORLD
    input_tensor = bucket.buffer()
    if state.iter < state.start_localSGD_iter:
        state.maybe_increase_iter(bucket)
        return default._allreduce_fut(global_group_to_use, input_tensor)
    if not state.post_local_gradient_allreduce:
        future = Future()
        future.set_result(input_tensor)
        return future
    if state.subgroup is None:
        # torch makes one group per machine (dist.new_subgroups()), sized by its CUDA devices: on CPUs it
        # refuses in these words; minilora's ranks are CPU processes, so the same
        raise ValueError("Default group size only takes effect when CUDA is available.If your subgroup using a "
                         "backend that does not depend on CUDA,please pass in 'group_size' correctly.")
    return default._allreduce_fut(state.subgroup, input_tensor)
