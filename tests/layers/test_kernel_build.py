"""The C++ kernels' build (layers/cpu_ops.py): only a real compile or link error is
remembered; an interrupted build is retried; a dead builder's lock blocks nobody; two
checkouts share one library; processes whose parent prepared the kernels never compile.
And the record of the implementation that ran (layers/implementations.py): a resumed run
may not switch it. Real builds, real processes and real signals."""
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from harness import REPO, SHORT_SWEEP, USER_CACHE, run_tool

from frn_det.layers import cpu_ops, implementations
from frn_det.layers.frn import FilterResponseNorm2d
from frn_det.utils.paths import cache_dir

COMPILERS = ("cc1plus", "cc1", "clang", "clang++")  # the processes that compile (GCC's, Clang's)
PREPARE = "from frn_det.layers import cpu_ops; print('reason:', cpu_ops.prepare(print), flush=True)"


def require_compiler():
    compiler = (shlex.split(os.environ.get("CXX", "")) or ["c++"])[0]
    if not shutil.which(compiler) or not (shutil.which("ninja") or importlib.util.find_spec("ninja")):
        pytest.skip("no C++ compiler or no ninja")
    if os.environ.get("FRN_DET_NO_CPP", "0") not in ("", "0"):
        pytest.skip("FRN_DET_NO_CPP is set")


def compiler_in_session(session: int) -> Optional[int]:
    """The pid of a compiler running in `session` (ninja starts each command in a process
    group of its own, but in the same session)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        if name in COMPILERS and int(text.rsplit(")", 1)[1].split()[3]) == session:
            return int(stat.parent.name)
    return None


def start(cmd, env, ignore_sigint=False) -> subprocess.Popen:
    """`cmd` in a session of its own (so that its whole process group can be signalled)."""
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=ignore)


def wait_until_compiling(proc: subprocess.Popen, timeout: float = 600) -> int:
    deadline = time.time() + timeout
    while True:
        pid = compiler_in_session(proc.pid)
        if pid is not None:
            time.sleep(0.5)  # well into the compile
            return pid
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"no compiler started: {proc.communicate()[0][-3000:]}")
        time.sleep(0.1)


def build_dir_of(cache: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FRN_DET_CACHE", str(cache))
    return cpu_ops.build_directory()


def remembered(build_dir: Path) -> list:
    return sorted(p.name for p in build_dir.glob("*.txt"))


@pytest.mark.slow
def test_interrupted_builds_are_not_remembered_and_the_next_process_builds(tmp_path, monkeypatch):
    """SIGINT to a launcher worker that ignores it (the signal then reaches ninja alone,
    which an older frn-det recorded as a failed build) and a killed compiler, one after the
    other on one cache: neither leaves a marker or a library, and each next process compiles
    again. A marker and torch's lock file that an older frn-det left behind do not block
    either. (Ctrl-C, SIGTERM and a builder that died holding the lock: the end-to-end test
    below.)"""
    require_compiler()
    cache = tmp_path / "cache"
    build_dir = build_dir_of(cache, monkeypatch)
    build_dir.mkdir(parents=True)
    (build_dir / "build_failed-0123456789ab.txt").write_text(
        "RuntimeError: Error building extension 'frn_det_cpu': ninja: build stopped: interrupted by user.\n")
    (build_dir / "lock").write_text("")  # torch < 2.6's FileBaton: a file whose existence blocks
    env = {"FRN_DET_CACHE": str(cache)}
    cases = [
        ("SIGINT, ignored by Python", {"ignore_sigint": True}, lambda proc, cc: os.killpg(proc.pid, signal.SIGINT),
         "KernelsNotReady: the C++ kernel build did not finish"),
        ("killed compiler", {}, lambda proc, cc: os.kill(cc, signal.SIGKILL),
         "KernelsNotReady: the C++ kernel build did not finish"),
    ]
    for name, options, interrupt, says in cases:
        proc = start([sys.executable, "-c", PREPARE], env, **options)
        interrupt(proc, wait_until_compiling(proc))  # compiling: nothing before was remembered
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode != 0 and says in out, (name, proc.returncode, out[-3000:])
        assert "reason:" not in out, (name, out[-3000:])  # no fallback to the PyTorch implementation
        assert remembered(build_dir) == [], (name, remembered(build_dir))
        assert not cpu_ops.library_path(build_dir).exists(), name
    assert not list(build_dir.glob("build-*"))  # their private build folders are gone
    proc = start([sys.executable, "-c", PREPARE], env)
    try:
        wait_until_compiling(proc)  # and the next process builds again
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def broken_checkout(root: Path) -> Path:
    """A copy of the package whose C++ sources do not compile."""
    shutil.copytree(REPO / "frn_det", root / "frn_det", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for source in cpu_ops.SOURCES:
        path = root / "frn_det" / "layers" / "csrc" / source.name
        path.write_text('#include "broken_on_purpose_by_frn_det_tests.h"\n' + path.read_text())  # fatal at once
    return root


def test_a_compile_error_is_remembered_and_children_take_the_parents_outcome(tmp_path):
    """A real compile error: the first process falls back and leaves a marker with the
    compiler's message; the next one falls back at once, without compiling; a child
    started after prepare() takes the parent's reason without trying."""
    require_compiler()
    checkout = broken_checkout(tmp_path / "checkout")
    env = {"FRN_DET_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(checkout)}
    first = run_tool_code(PREPARE, env)
    assert "reason: C++ build failed: RuntimeError: Error building extension" in first
    assert "fatal error: broken_on_purpose_by_frn_det_tests.h: No such file" in first
    markers = list((tmp_path / "cache").glob("torch_extensions/*/compile_error-*.txt"))
    assert len(markers) == 1 and "broken_on_purpose" in markers[0].read_text()
    child = ("import subprocess, sys; from frn_det.layers import cpu_ops; print('parent:', cpu_ops.prepare(print)); "
             "sys.stdout.flush(); subprocess.run([sys.executable, '-c', 'from frn_det.layers import cpu_ops; "
             "print(\"child:\", cpu_ops.unavailable_reason())'])")
    second = run_tool_code(child, env)
    assert "building the C++ CPU kernels" not in second  # neither compiled
    parent = second.split("parent: ")[1].splitlines()[0]
    assert parent.startswith("C++ build failed earlier:") and str(markers[0]) in parent and "not retried" in parent
    assert second.split("child: ")[1].splitlines()[0] == parent


def run_tool_code(code: str, env: dict) -> str:
    """`python -c code` in the checkout of env's PYTHONPATH (`-c` imports from its folder first)."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=env.get("PYTHONPATH", REPO), env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_a_dead_builders_lock_blocks_nobody(tmp_path, monkeypatch):
    """A live builder is waited for (and named); one killed outright (SIGKILL) releases
    the lock with its death."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from frn_det.layers import cpu_ops\n"
         "with cpu_ops._build_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)",
         str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        said = []
        monkeypatch.setattr(cpu_ops, "_announce", said.append)
        acquired = threading.Event()

        def build():
            with cpu_ops._build_lock(tmp_path):
                acquired.set()

        thread = threading.Thread(target=build, daemon=True)
        thread.start()
        assert not acquired.wait(1.5)
        assert said == [f"waiting for process {holder.pid}, which is building the C++ kernels in {tmp_path}"]
    finally:
        holder.kill()
        holder.wait()
    assert acquired.wait(10)
    thread.join()


def test_two_checkouts_share_one_library(tmp_path):
    """Two copies of the project (same sources) on one cache: the second loads the first's
    library instead of rebuilding it (torch's build file names the sources' absolute paths,
    so an older frn-det rebuilt it for each checkout in turn)."""
    require_compiler()
    checkouts = []
    for name in ("a", "b"):
        shutil.copytree(REPO / "frn_det", tmp_path / name / "frn_det", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        checkouts.append(tmp_path / name)
    show = PREPARE + ("; import os; p = cpu_ops.library_path(); "
                      "print('library:', p, os.stat(p).st_ino, os.stat(p).st_mtime_ns)")
    outputs = [run_tool_code(show, {"PYTHONPATH": str(c)}) for c in checkouts]
    libraries = [out.split("library: ")[1].splitlines()[0] for out in outputs]
    assert libraries[0] == libraries[1], libraries  # one library (path, inode, mtime), unchanged
    assert all("reason: None" in out for out in outputs)
    assert not any("building the C++ CPU kernels" in out for out in outputs[1:]), outputs


def test_prepared_processes_never_compile(tmp_path, monkeypatch):
    """Under a parent's prepare(): with the library gone, a child raises instead of
    compiling (inside a timed training) or falling back; with the parent's reason, it
    takes that reason; an outcome for another build folder (another machine, cache or
    version) does not apply."""
    monkeypatch.delenv("FRN_DET_NO_CPP", raising=False)
    build_dir = build_dir_of(tmp_path, monkeypatch)
    for reason in (None, "C++ build failed: RuntimeError: something"):
        monkeypatch.setenv(cpu_ops.PREPARED_ENV, json.dumps({"build": str(build_dir), "reason": reason}))
        monkeypatch.setattr(cpu_ops, "_ops", cpu_ops._NOT_YET)
        monkeypatch.setattr(cpu_ops, "_reason", None)
        if reason is None:
            with pytest.raises(cpu_ops.KernelsNotReady, match="does not compile"):
                cpu_ops.ops()
        else:
            assert cpu_ops.ops() is None and cpu_ops.unavailable_reason() == reason
    assert not build_dir.exists()  # nothing compiled, nothing written
    monkeypatch.setenv(cpu_ops.PREPARED_ENV, json.dumps({"build": str(tmp_path / "elsewhere"), "reason": "x"}))
    assert cpu_ops._prepared_outcome() is None


@pytest.mark.parametrize("output, status, remember", [
    ("frn_cpu.cpp:9:5: error: 'make_intrusive' was not declared in this scope\nninja: build stopped: subcommand "
     "failed.", 1, True),
    ("frn_cpu.cpp:1:10: fatal error: x.h: No such file or directory\ncompilation terminated.", 1, True),
    ("/usr/bin/ld: frn_cpu.o: undefined reference to `at::foo()'\ncollect2: error: ld returned 1 exit status", 1, True),
    ("ninja: build stopped: interrupted by user.", 2, False),
    ("c++: fatal error: Killed signal terminated program cc1plus\ncompilation terminated.", 1, False),
    ("frn_cpu.cpp: internal compiler error: Segmentation fault", 1, False),
    ("FAILED: frn_cpu.o\nc++ -MMD ... -c frn_cpu.cpp -o frn_cpu.o", 1, False),  # the compiler died silently
    ("fatal error: error writing to /tmp/cc.s: No space left on device", 1, False),
    ("frn_cpu.cpp:9:5: error: 'x' was not declared", -9, False),  # ninja itself killed
])
def test_only_compile_and_link_errors_count(output, status, remember):
    """The classification of a failed build, on ninja's output and exit status as torch
    reports them (RuntimeError from CalledProcessError)."""
    try:
        try:
            raise subprocess.CalledProcessError(status, ["ninja", "-v"])
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"Error building extension 'frn_det_cpu': [1/3] c++ ...\n{output}") from e
    except RuntimeError as error:
        assert cpu_ops.is_compile_error(error) is remember
    assert not cpu_ops.is_compile_error(KeyboardInterrupt())


def test_resumed_run_may_not_switch_implementation(tmp_path):
    """The implementation each layer ran travels with a real Detectron2 checkpoint; after
    resuming from it, the first call of another implementation raises, before any step."""
    implementations.reset()
    try:
        x = torch.randn(2, 4, 3, 3)
        model = torch.nn.Sequential(FilterResponseNorm2d(4, impl="reference"))
        model(x)
        assert implementations.used() == {
            "FRN": {"implementation": implementations.REFERENCE, "reason": "impl 'reference' requested"}}
        saver = DetectionCheckpointer(model, str(tmp_path))
        saver.add_checkpointable("implementations", implementations.RecordedImplementations())
        saver.save("model_0000009")

        implementations.reset()  # a new process
        resumed = torch.nn.Sequential(FilterResponseNorm2d(4, impl="torch"))
        loader = DetectionCheckpointer(resumed, str(tmp_path))
        loader.add_checkpointable("implementations", implementations.RecordedImplementations())
        loader.resume_or_load("", resume=True)
        with pytest.raises(implementations.ImplementationChanged,
                           match=r"FRN ran PyTorch reference in the checkpoint this run resumes from, and would run "
                                 r"PyTorch now \(impl 'torch' requested\): resuming would switch implementation"):
            resumed(x)
        resumed[0].impl = "reference"
        resumed(x)  # the checkpoint's implementation resumes
        assert implementations.label(implementations.used()) == "FRN PyTorch reference"
    finally:
        implementations.reset()


def test_the_tests_do_not_use_the_users_cache():
    """conftest.py gives the session a cache of its own (tests kill runs on purpose, also
    while they build); subprocesses inherit it."""
    assert cache_dir().resolve() != USER_CACHE.resolve()
    assert os.environ["FRN_DET_CACHE"] == str(cache_dir())


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_fault_drill_leaves_the_users_cache_untouched(tmp_path):
    """The drill kills sweeps on purpose: it gives them a temporary cache, whatever
    FRN_DET_CACHE (or ~/.cache) says, and removes it at the end."""
    user = tmp_path / "user_cache"
    (user / "datasets").mkdir(parents=True)
    (user / "datasets" / "mine.txt").write_text("the user's\n")
    home = tmp_path / "home"
    home.mkdir()
    before = snapshot(user)
    proc = run_tool("fault_drill.py", "--rounds", "1", "--norms", "gn", "--iters", "6", "--min-delay", "1",
                    "--max-delay", "3", "--out", tmp_path / "drill",
                    env={"FRN_DET_CACHE": str(user), "HOME": str(home), "FRN_DET_NO_CPP": "1"}, timeout=900)
    assert "runs lost 0" in proc.stdout, proc.stdout[-3000:]
    # each sweep said, before its first job, what its runs would use
    log = (tmp_path / "drill.drill.log").read_text()
    assert ("[sweep] FRN, TLU and EvoNorm use their PyTorch implementation in every run: C++ kernels disabled by "
            "FRN_DET_NO_CPP") in log
    assert snapshot(user) == before
    assert not (home / ".cache" / "frn_det").exists()
    drill_cache = Path(proc.stdout.split("sweeps' cache: ")[1].split()[0])
    assert drill_cache.name.startswith("frn_fault_drill_cache_") and not drill_cache.exists()


def metrics(sweep: Path) -> dict:
    (path,) = sweep.glob("*/metrics.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_interrupted_first_frn_run_then_rerun_gives_the_clean_builds_metrics(tmp_path):
    """The first FRN run on a fresh cache, interrupted while the kernels compile, by Ctrl-C
    and then by SIGTERM (a preemption, scancel or timeout; an older frn-det remembered
    that one as a failed build and trained on in PyTorch), then run again: it builds the
    kernels and gives exactly the metrics of a run on a cleanly built library."""
    require_compiler()
    args = ["hydra.mode=RUN", "norm=frn", "ims_per_gpu=2", "threads=1", *SHORT_SWEEP]
    run_tool("sweep.py", *args, f"output_dir={tmp_path / 'clean'}")  # the session's cache: a clean build
    cache = tmp_path / "cache"
    env = {"FRN_DET_CACHE": str(cache)}
    cmd = [sys.executable, str(REPO / "tools" / "sweep.py"), *args, f"output_dir={tmp_path / 'interrupted'}"]
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = start(cmd, env)
        wait_until_compiling(proc)
        os.killpg(proc.pid, sig)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode != 0, out[-3000:]
        assert not list(cache.glob("torch_extensions/*/*.txt")), "an interrupted build was remembered"
        assert not list(cache.glob("torch_extensions/*/*.so")), out[-3000:]
    # SIGTERM killed the builder while it held the build lock and left its private folder
    assert len(list(cache.glob("torch_extensions/*/build-*"))) == 1
    rerun = run_tool("sweep.py", *args, f"output_dir={tmp_path / 'interrupted'}", env=env)
    assert "building the C++ CPU kernels" in rerun.stdout + rerun.stderr
    assert not list(cache.glob("torch_extensions/*/build-*"))
    clean, again = metrics(tmp_path / "clean"), metrics(tmp_path / "interrupted")
    cpp = {"implementation": "C++", "reason": None}
    assert clean["implementations"] == again["implementations"] == {"FRN": cpp, "TLU": cpp}
    assert again["status"] == "finished" and again["resumed_from_iter"] == 0
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "iterations", "final_losses"):
        assert again[key] == clean[key], key
