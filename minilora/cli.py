"""The ``minilora`` command. Each subcommand lives in the module that does the work.

A module named here provides ``add_cli_arguments(parser)`` and ``cli_main(args) -> int``; this file
only routes, so ``minilora --help`` stays fast (no module is imported until its command runs).

Ctrl-C prints ``minilora <command>: interrupted`` and exits with the shell's status 130; a full disk (or a
read-only folder) and an allocation the machine cannot hold print one line and exit with status 1.
A user's mistake prints one line, ``minilora <command>: error: ...``, and exits with status 2, as
argparse does: a bad option value is caught by the argument types below, a mistake found later (a
folder that is not a model) by raising ``UsageError`` in ``cli_main``. Anything else is a bug and
keeps its traceback.
"""
import argparse
import errno
import importlib
import math
import os
import sys

# name -> (module, one line for `minilora --help`)
COMMANDS = {
    "demo": ("minilora.demo", "LoRA fine-tune the shipped base model end to end, offline (the main job)"),
    "train": ("minilora.train", "train a model (full fine-tuning or LoRA) on a built-in task"),
    "generate": ("minilora.generate", "continue a prompt with a model (greedy or sampled)"),
    "info": ("minilora.memory", "summarise a model: layers, parameter counts, bytes"),
    "memory": ("minilora.memory", "full fine-tuning vs LoRA memory for a model size, without allocating"),
    "experiment": ("minilora.demo", "reproduce the LoRA paper's claims at small scale (e.g. `ranks`)"),
    "exercises": ("minilora.exercises", "build or check the student copy of the exercises"),
    "serve": ("minilora.serve.cli", "serve a base model and many LoRA adapters over an OpenAI-compatible API"),
}


# --------------------------------------------------------------------------------------------------
# Argument types for the commands' options: argparse reports a bad value with the option's name
# ("argument --steps: must be an integer >= 1, got '0'") instead of failing later, or running on it.
# --------------------------------------------------------------------------------------------------
def _number(text, kind, test, allowed):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not test(value):
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return value


def positive_int(text):
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text):
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def port_number(text):
    """A TCP port: 0 (the system picks a free one) to 65535 (99999 was a traceback from the socket's bind)."""
    return _number(text, int, lambda v: 0 <= v <= 65535, "a port number in 0-65535")


def positive_float(text):
    return _number(text, float, lambda v: v > 0, "a number > 0")


def non_negative_float(text):
    return _number(text, float, lambda v: v >= 0, "a number >= 0")


def dropout_probability(text):
    return _number(text, float, lambda v: 0 <= v <= 1, "a probability in [0, 1]")


def device_name(text):
    """``--device``: cpu, emu or cuda, and enabled on this machine (a missing GPU is named here)."""
    from .device import all_devices
    devices = {d.name: d for d in all_devices()}
    if text not in devices:
        raise argparse.ArgumentTypeError(f"must be one of {sorted(devices)}, got {text!r}")
    if not devices[text].enabled():
        raise argparse.ArgumentTypeError(f"device {text!r} is not available here: {devices[text].why_disabled}")
    return text


class UsageError(Exception):
    """A user's mistake found while a command runs: ``minilora <command>: error: <message>``, exit 2."""


def output_folder(path, option="--out", make=True, what="the run folder"):
    """Check the folder a command writes into before any work, so that a bad one is a usage error now, not a
    traceback (or an error after an hour of training): a name that is a file; with ``make``, a folder that cannot be
    made (a name under a file, a virtual file system such as /proc) or written in (read-only, forbidden) -- it is
    made, and a file is made in it and taken out again."""
    import tempfile
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path} is a file; {what} must be a folder (or a new name)")
    if not make:
        return
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot make this folder or write in it ({exc.strerror or exc})") from None


def build_parser(command=None):
    parser = argparse.ArgumentParser(
        prog="minilora",
        description="minilora: LoRA from the autograd engine down to the CUDA kernels. "
                    "Start with `minilora demo`.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {}  # name -> its parser, to report a mistake in the command's own words
    for name, (module_name, help_text) in COMMANDS.items():
        p = parser.commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen command's module is imported
            getattr(importlib.import_module(module_name), "add_cli_arguments")(p, name)
    return parser


# A full disk, a quota, a file-size limit, a read-only or forbidden folder: the machine's state, not a bug in
# minilora. A command reports them in one line (the error names the file), without a traceback.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame `minilora` and show its usage, not the command's options
        owner = parser.commands.get(args.command, parser)
        owner.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.cli_main(args) or 0)
    except UsageError as exc:
        print(f"minilora {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        print(f"minilora {args.command}: {exc}", file=sys.stderr)  # (the error names the file)
        return 1
    except MemoryError as exc:  # sizes this machine cannot hold (--r 1000000000, an adapter of that rank): its
        # state and the user's numbers, as a full disk is, not a bug -- one line naming the allocation
        print(f"minilora {args.command}: out of memory: {exc or 'MemoryError'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C is the user's choice, not a bug: no traceback, the shell's 130
        saved = getattr(exc, "checkpoint", None)  # train's TrainingInterrupted: the finished steps are kept
        print(f"\nminilora {args.command}: interrupted" + (f"; the finished steps are in {saved}" if saved else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # `python -m minilora.cli`: run minilora.cli's main, whose UsageError the
    # commands raise (this file, run as __main__, is a second module with a UsageError of its own)
    sys.exit(importlib.import_module("minilora.cli").main())
