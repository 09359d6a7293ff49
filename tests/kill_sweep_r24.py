"""A run SIGKILLed at every file-system step resumes to the uninterrupted run (a script, not a test: ~N runs each).

    PYTHONPATH=. python tests/kill_sweep_r24.py [--loop trainer|train] [--every K] [--first N]

``--loop trainer`` (the default): the child trains test_faults_r19's run (LoRA, dropout, shuffled loader, two
micro-batches a step, a checkpoint every 2 steps, save_total_limit=2, 4 steps) and then calls ``save_model()``.
``--loop train``: test_resume_r5's ``minilora.train`` run (LoRA with dropout on every linear layer, gradient
accumulation, warmup and cosine, clipping, an evaluation every 2 steps, a checkpoint every 3, 8 steps). The child
kills itself (SIGKILL: nothing cleans up)
right after its n-th call of a step that changes the disk (os.replace/rename/link/remove/rmdir/mkdir, fsync, a
file opened for writing, renameat2's exchange). The run is then resumed in this process from its newest checkpoint
(from scratch when none is there yet), and must give the uninterrupted run's weights, optimizer, scheduler,
generators and logs bit for bit, and a folder with no leftovers.
Prints one line per kill point and a total.
"""
import argparse
import ctypes
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

_CHANGES = ("replace", "rename", "link", "remove", "unlink", "rmdir", "mkdir", "makedirs", "fsync")


def child(loop, out, kill_at):
    """Train (and save), SIGKILLed after the ``kill_at``-th disk-changing call (0: never); prints the count."""
    import builtins
    calls = [0]

    def counted(function):
        def call(*args, **kwargs):
            result = function(*args, **kwargs)
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return call
    for name in _CHANGES:
        setattr(os, name, counted(getattr(os, name)))
    real_open = builtins.open
    builtins.open = lambda file, mode="r", *a, **k: (counted(real_open) if any(c in mode for c in "wax+") else
                                                     real_open)(file, mode, *a, **k)
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "renameat2"):
        exchange = libc.renameat2
        ctypes.CDLL = _with_counted_renameat2(ctypes.CDLL, counted(exchange))
    LOOPS[loop][0](out)
    print("CALLS", calls[0])


def trainer_run(out):
    import test_faults_r19 as r19
    trainer = r19.make_trainer(out)
    trainer.train()
    trainer.save_model()


def _with_counted_renameat2(cdll, renameat2):
    class Counted(cdll):
        def __getattr__(self, name):
            return renameat2 if name == "renameat2" else super().__getattr__(name)
    return Counted


def train_run(out):
    import test_resume_r5 as r5
    r5.run(r5.MODELS["lora-dropout"], out)


def resumed_train_outcome(out):
    """test_resume_r5's resume (adapters drawn elsewhere first: the checkpoint must replace them), or the run from
    scratch where the kill came before the first checkpoint."""
    import test_resume_r5 as r5
    from minilora.train import load_training_state
    resume = os.path.isfile(os.path.join(out, "checkpoint.npz"))
    model, result = r5.run(r5.MODELS["lora-dropout"], out, init_seed=7 if resume else 0, resume=resume)
    state = load_training_state(os.path.join(out, "checkpoint.npz"))
    return {"weights": {name: p.numpy(force=True).tobytes() for name, p in model.named_parameters()},
            "history": repr((result.losses, result.lrs, result.grad_norms, result.evals)),
            "checkpoint": repr({key: state[key] for key in ("optimizer", "scheduler", "rng", "losses", "model")}),
            "metrics": r5.train_records(out)}


def resumed_trainer_outcome(out):
    import minilora as ml
    import test_faults_r19 as r19
    trainer = r19.make_trainer(out)
    has_checkpoint = any(name.startswith("checkpoint-") for name in os.listdir(out)) if os.path.isdir(out) else False
    if has_checkpoint:  # (whatever the resuming process drew before: the checkpoint's generators replace it. Not a
        ml.rand(3)  # manual_seed: the sampler's seed is the generator's initial seed when train() makes its loader,
        # in transformers/accelerate too; a run started over draws as the first one did)
    trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    trainer.save_model()
    return r19.outcome(trainer)


LOOPS = {"trainer": (trainer_run, resumed_trainer_outcome), "train": (train_run, resumed_train_outcome)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", choices=sorted(LOOPS), default="trainer")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--folder", default="/tmp/kill_sweep_r24")
    options = parser.parse_args()
    import shutil
    from test_faults import leftovers
    shutil.rmtree(options.folder, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE, os.environ.get("PYTHONPATH", "")])}
    counting = subprocess.run([sys.executable, __file__, "child", options.loop, os.path.join(options.folder, "count"),
                               "0"],
                              env=env, capture_output=True, text=True, timeout=600)
    total = int(counting.stdout.split("CALLS")[-1])
    resumed_outcome = LOOPS[options.loop][1]
    expected = resumed_outcome(os.path.join(options.folder, "reference"))
    failures = 0
    for kill_at in range(max(1, options.first), total + 1, options.every):
        out = os.path.join(options.folder, f"killed-{kill_at}")
        done = subprocess.run([sys.executable, __file__, "child", options.loop, out, str(kill_at)], env=env,
                              capture_output=True,
                              text=True, timeout=600)
        # (exit 0: the run made fewer calls than the counting run -- lock files come and go with timing -- and ended
        # before this one: its folder is the finished run's, compared all the same)
        problems = [] if done.returncode in (0, -signal.SIGKILL) else [f"exit {done.returncode}: {done.stderr[-500:]}"]
        try:
            got = resumed_outcome(out)
            problems += [key for key in expected if got[key] != expected[key]]
            problems += [f"leftovers {leftovers(out)}"] if leftovers(out) else []
        except Exception as exc:  # noqa: BLE001  (reported, the sweep goes on)
            problems.append(f"{type(exc).__name__}: {exc}")
        failures += bool(problems)
        print(f"kill after call {kill_at}/{total}: {'ok' if not problems else '; '.join(problems)}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"{failures} of {len(range(max(1, options.first), total + 1, options.every))} kill points failed")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
