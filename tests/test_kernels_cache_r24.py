"""CI time: the session's helper core builds minilora's own kernels (kernels/*.cu) into the kernel cache at the start
(tests/background_runs.py, ``warm_project_kernels``), where the main process used to compile each file at its first
launch. These tests check that the warmed builds are the very cache entries the launches look up -- a different key
would cost nothing in correctness, only the time, silently -- and which sessions queue the warm-up."""
import types

import pytest

import background_runs
import minilora as ml
from minilora import emulator, kernels

WARM = "kernels/*.cu builds"


@pytest.fixture
def builds_refused(monkeypatch):
    """This process's modules forgotten and every build refused: a kernel is then only found in the disk cache."""
    monkeypatch.setattr(emulator, "_MODULES", {})
    monkeypatch.setattr(kernels, "_MODULES", {})

    def refused(self, *args, **kwargs):
        raise AssertionError(f"{self.variant} build of {self.source_path.name} was not in the cache")
    monkeypatch.setattr(emulator._Module, "_build", refused)


def _warmed(background):
    if WARM not in background:  # (a session that did not collect this file's neighbours: queued here)
        background.submit(WARM, "background_runs", "warm_project_kernels")
    background.result(WARM)


@pytest.mark.skipif(not emulator.is_available(), reason="the CUDA emulator needs a C++ compiler")
@pytest.mark.parametrize("filename", kernels.KERNEL_FILES)
def test_warmed_builds_are_the_ones_a_launch_its_racecheck_and_sanitizer_use(filename, background, builds_refused):
    _warmed(background)
    emu = ml.device("emu")
    module = kernels._module(emu, filename)  # what kernels._launch launches from
    kernel = module.get_function(module.kernel_names[0])
    kernel._build_of("racecheck")  # racecheck=True's build (conftest's racecheck_every_launch)
    kernels._module(emu, filename, sanitize=True).compile()  # kernels.checking(sanitize=True)'s


def _item(module, fixtures=()):
    return types.SimpleNamespace(module=module, fixturenames=fixtures)


def test_only_sessions_with_kernel_tests_queue_the_warm_up():
    uses = types.ModuleType("uses_kernels")
    uses.kernels = kernels
    uses_a_function = types.ModuleType("uses_a_function")
    uses_a_function.lora_forward = kernels.lora_forward
    other = types.ModuleType("other")
    other.value = 1
    assert background_runs._launches_project_kernels([_item(other), _item(uses)])
    assert background_runs._launches_project_kernels([_item(uses_a_function)])
    assert background_runs._launches_project_kernels([_item(other, ("kernel_device",))])
    assert not background_runs._launches_project_kernels([_item(other, ("device",))])


def test_a_run_two_tests_take_before_the_helper_gets_to_it_runs_once(monkeypatch):
    """A test that gets to its run before the helper thread runs it itself; the key's next test takes that outcome
    (it ran the call again: the warm-up above, once per kernel file, when this file ran on its own)."""
    runs = background_runs.BackgroundRuns()
    monkeypatch.setattr(runs, "start", lambda: None)  # the helper busy with other runs all along
    runs.submit("pid", "os", "getpid")
    try:
        assert runs.result("pid") == runs.result("pid")  # one process
    finally:
        runs.close()


@pytest.mark.skipif(not emulator.is_available(), reason="the CUDA emulator needs a C++ compiler")
@pytest.mark.parametrize("file_name, build", [  # each file's fixtures, past their lru_cache
    ("test_emulator_modern_r20", lambda file: [file.module.__wrapped__(True)]),
    ("test_emulator_r19", lambda file: [file.samples.__wrapped__(), file.cooperative.__wrapped__()]),
    ("test_emulator_kernels_r11", lambda file: [file.module.__wrapped__()]),
    ("test_emulator_kernels_r12", lambda file: [file.sgemm_module.__wrapped__(), file.classics.__wrapped__(True)]),
    ("test_emulator_kernels_r13", lambda file: [file.public.__wrapped__(), file.corners.__wrapped__()]),
    ("test_emulator_kernels_r18", lambda file: [file.module.__wrapped__()]),
    ("test_emulator", lambda file: [file.module.__wrapped__(keywords["path"].name, keywords["sanitize"])
                                    for keywords, _ in file.EMULATOR_BUILDS]),
    ("test_emulator_r4", lambda file: [file.samples.__wrapped__()])])
def test_a_files_emulator_builds_are_the_ones_its_tests_build(file_name, build, background, builds_refused,
                                                              monkeypatch):
    """A test file's ``EMULATOR_BUILDS``, compiled by the helper (background_runs.build_emulator_modules), are found
    by its own fixtures' builds (test_emulator_kernels_r1*'s under memcheck_every_launch's MINILORA_EMU_MEMCHECK)."""
    file = pytest.importorskip(file_name)
    key = ("emulator builds", file_name)
    if key not in background:
        background.submit(key, "background_runs", "build_emulator_modules", file.EMULATOR_BUILDS)
    background.result(key)
    for _, changes in file.EMULATOR_BUILDS:
        for name, value in changes.items():
            monkeypatch.setenv(name, value)
    for module in build(file):
        module.compile()
