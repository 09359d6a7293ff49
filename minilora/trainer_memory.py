"""transformers' ``TrainerMemoryTracker`` (``TrainingArguments(skip_memory_metrics=False)``): how much host memory
each stage of a Trainer's life took.

For each stage (``init``: the Trainer's construction; ``train``; ``eval``; ``test``: ``predict``) the process's
resident set size (psutil's RSS) is read after a garbage collection at the start and at the end, while a thread
polls it for the peak in between. A stage's metrics are ``<stage>_mem_cpu_alloc_delta`` (end - start) and
``<stage>_mem_cpu_peaked_delta`` (peak - end, at least 0); the first stage reported also carries ``init``'s and
``before_init_mem_cpu`` (the RSS when the Trainer was built). An evaluation inside training is not a stage of its
own (train's tracking goes on). There is no device memory here: minilora's Trainer runs on the CPU, as
transformers' does on a machine without an accelerator (no ``*_mem_gpu_*`` keys). Without psutil nothing is
measured, as in transformers. The numbers are this process's, so they are not transformers' numbers; the keys,
the stages and when they are measured are.
"""
import gc
import threading

__all__ = ["TrainerMemoryTracker"]


class TrainerMemoryTracker:
    """``start(stage)`` at the beginning of a stage, ``stop_and_update_metrics(stage, metrics)`` at its end
    (transformers finds the stage from the calling method's name; minilora's Trainer names it)."""

    def __init__(self, skip_memory_metrics=False):
        self.skip_memory_metrics = skip_memory_metrics
        if skip_memory_metrics:
            return
        try:
            import psutil
        except ImportError:  # (transformers' soft dependency: silently off)
            self.skip_memory_metrics = True
            return
        self.process = psutil.Process()
        self.cur_stage, self.cpu, self.init_reported = None, {}, False

    def cpu_mem_used(self):
        """The resident set size of this process, in bytes."""
        return self.process.memory_info().rss

    def _peak_monitor(self):
        self.cpu_mem_used_peak = -1
        while True:  # (no sleep: transformers' loop, so the peak is not missed)
            self.cpu_mem_used_peak = max(self.cpu_mem_used(), self.cpu_mem_used_peak)
            if not self.peak_monitoring:
                break

    def start(self, stage):
        """Start measuring ``stage`` (ignored inside another stage: an evaluation during training)."""
        if self.skip_memory_metrics or (self.cur_stage is not None and self.cur_stage != stage):
            return
        self.cur_stage = stage
        gc.collect()
        self.cpu_mem_used_at_start = self.cpu_mem_used()
        self.peak_monitoring = True
        self._monitor = threading.Thread(target=self._peak_monitor, daemon=True)
        self._monitor.start()

    def stop(self, stage):
        if self.cur_stage is not None and self.cur_stage != stage:
            return
        self.peak_monitoring = False
        self._monitor.join()  # (transformers reads the peak without waiting; joining reads a finished one)
        gc.collect()
        now = self.cpu_mem_used()
        self.cpu[self.cur_stage] = {"begin": self.cpu_mem_used_at_start, "end": now,
                                    "alloc": now - self.cpu_mem_used_at_start,
                                    "peaked": max(0, self.cpu_mem_used_peak - now)}
        self.cur_stage = None

    def update_metrics(self, stage, metrics):
        """Put the stage's deltas into ``metrics`` (with init's and before_init_mem_cpu the first time)."""
        if self.skip_memory_metrics or (self.cur_stage is not None and self.cur_stage != stage):
            return
        stages = [stage] if self.init_reported else ["init", stage]
        self.init_reported = True
        for name in stages:
            for kind in ("alloc", "peaked"):
                if name in self.cpu and kind in self.cpu[name]:
                    metrics[f"{name}_mem_cpu_{kind}_delta"] = self.cpu[name][kind]
        if stages[0] == "init":
            metrics["before_init_mem_cpu"] = self.cpu["init"]["begin"]

    def stop_and_update_metrics(self, stage, metrics=None):
        """End ``stage`` and report it into ``metrics`` (``init`` has none: kept for the first report)."""
        if self.skip_memory_metrics:
            return
        self.stop(stage)
        if metrics is not None:
            self.update_metrics(stage, metrics)
