"""torch's default DDP communication hooks, step for step (their order of operations decides the bits):

    from minilora.distributed.algorithms.ddp_comm_hooks import default_hooks
    model.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)

A hook gets ``(state, bucket)`` -- ``state`` is the process group here (None: the default one) --
and returns a Future of the bucket's new flat gradients. ``allreduce_hook`` divides the buffer by
the world size *before* summing (DDP without a hook sums, then divides: the same numbers when the
world size is a power of two). The 16-bit hooks cast the buffer first and divide in 16 bits, so a
gradient is rounded to float16 (bfloat16) twice before the sum, and the sum is rounded once more.
"""
from ... import Future, all_reduce, get_world_size, group  # noqa: F401 - Future: hooks' annotation
from .... import dtypes

__all__ = ["allreduce_hook", "fp16_compress_hook", "bf16_compress_hook", "fp16_compress_wrapper",
           "bf16_compress_wrapper"]


def _group(process_group):
    return process_group if process_group is not None else group.WORLD


def _allreduce_fut(process_group, tensor):
    """Divide ``tensor`` in place by the group's size, then sum it over the group: a Future of it."""
    group_to_use = _group(process_group)
    tensor.div_(get_world_size(group_to_use))
    return all_reduce(tensor, group=group_to_use, async_op=True).get_future().then(lambda fut: fut.value()[0])


def allreduce_hook(process_group, bucket):
    """The mean over the ranks of the bucket's gradients (what DDP does with no hook)."""
    return _allreduce_fut(process_group, bucket.buffer())


def _compress_hook(dtype, process_group, bucket):
    """Cast the buffer to ``dtype``, divide it there by the world size, sum it in ``dtype`` and copy
    the sum back into the buffer (which keeps the gradients' dtype)."""
    group_to_use = _group(process_group)
    buffer = bucket[0] if isinstance(bucket, tuple) else bucket.buffer()
    compressed = buffer.to(dtype).div_(get_world_size(group_to_use))

    def decompress(fut):
        value = fut.value()[0]
        buffer.copy_(value)
        return buffer
    return all_reduce(compressed, group=group_to_use, async_op=True).get_future().then(decompress)


def fp16_compress_hook(process_group, bucket):
    """Gradients all-reduced in float16: the buffer cast to float16, divided by the world size, summed."""
    return _compress_hook(dtypes.float16, process_group, bucket)


def bf16_compress_hook(process_group, bucket):
    """Gradients all-reduced in bfloat16 (torch allows it with NCCL only: register_comm_hook checks)."""
    return _compress_hook(dtypes.bfloat16, process_group, bucket)


def _compress_wrapper(dtype_of, hook, name):
    def wrapper_hook(hook_state, bucket):
        bucket.set_buffer(bucket.buffer().to(dtype_of()))
        fut = hook(hook_state, bucket)

        def decompress(fut):
            decompressed = bucket.buffer()  # the 16-bit buffer: DDP casts it into the gradients
            decompressed.copy_(fut.value())
            return decompressed
        return fut.then(decompress)
    wrapper_hook.__name__ = wrapper_hook.__qualname__ = name
    return wrapper_hook


def fp16_compress_wrapper(hook):
    """``hook`` run on a float16 copy of the buffer; its result cast back. ``fp16_compress_wrapper(
    allreduce_hook)`` is ``fp16_compress_hook``'s numbers."""
    return _compress_wrapper(lambda: dtypes.float16, hook, "fp16_compress_wrapper_hook")


def bf16_compress_wrapper(hook):
    """``hook`` run on a bfloat16 copy of the buffer (torch allows it with NCCL only)."""
    return _compress_wrapper(lambda: dtypes.bfloat16, hook, "bf16_compress_wrapper_hook")
