"""``nn.SyncBatchNorm``: batch normalisation whose training statistics torch all-reduces over a process group.

On one process (no process group, or a group of one) torch's module falls back to ``F.batch_norm``, so a
model converted with ``SyncBatchNorm.convert_sync_batchnorm`` trains, evaluates and saves as the
BatchNorm it replaced; so does minilora's. Across several processes torch syncs only tensors on a GPU
(its ValueError for a CPU tensor is kept); minilora does not all-reduce batch statistics, and refuses that
case by name rather than normalise each process by its own batch alone.
"""
from .layers import _BatchNorm, _InstanceNorm

__all__ = ["SyncBatchNorm"]


class SyncBatchNorm(_BatchNorm):
    """torch's ``SyncBatchNorm(num_features, eps, momentum, affine, track_running_stats, process_group)``: any
    input [N, C, ...] of 2 or more dimensions."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    _ranks = range(2, 65)  # (_BatchNorm.forward's check: any rank from 2)

    def forward(self, input):
        if input.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {input.ndim}D input)")
        if input.shape[1] == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")
        if self.training:
            self._refuse_a_sync(input)
        return super().forward(input)

    def _refuse_a_sync(self, input):
        """torch syncs when a process group of more than one process is initialized: refused here."""
        from .. import distributed
        if not (distributed.is_available() and distributed.is_initialized()):
            return
        if input.device.type not in ("cuda",):
            raise ValueError("SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone")
        world_size = distributed.get_world_size(self.process_group)
        if world_size > 1:
            raise NotImplementedError(f"SyncBatchNorm over {world_size} processes: minilora does not all-reduce "
                                      "the batch statistics (torch's sync_batch_norm); use BatchNorm per process "
                                      "or one process")

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm*d replaced by a SyncBatchNorm sharing its parameters and buffers (a
        BatchNorm ``module`` itself is returned replaced), as torch's."""
        converted = module
        if isinstance(module, _BatchNorm) and not isinstance(module, _InstanceNorm):  # (torch's _BatchNorm)
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, bias=module.bias is not None)
            if module.affine:
                converted.weight = module.weight
                converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.training = module.training
            if hasattr(module, "qconfig"):
                converted.qconfig = module.qconfig
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted
