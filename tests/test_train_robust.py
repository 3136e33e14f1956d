"""Training that nothing spoils: SIGTERM/SIGINT stop at a step with the checkpoint saved,
a locked output folder, refused overwrites, and one-line write errors (full disk)."""

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ndmsolve as nd
from ndmsolve._guard import LOCK_NAME, FolderLockedError, TrainingInterrupted, folder_lock
from ndmsolve.checkpoint import CheckpointWriteError, load_checkpoint, read_checkpoint
from ndmsolve.cli import main
from ndmsolve.data import checkerboard
from ndmsolve.fields import MLP, EpsilonPredictor
from ndmsolve.train import CheckpointExistsError, train

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--data",
    "checkerboard",
    "--hidden",
    "16",
    "--depth",
    "2",
    "--transform-hidden",
    "8",
    "--batch-size",
    "32",
    "--n-grid",
    "0",
    "--no-progress",
    "--log-every",
    "1000",
]
WAIT_S = 120  # generous: only an upper bound on waiting for a subprocess's first checkpoint


def _cli(out, *extra):
    return main(["train", *TINY, "--out", str(out), *extra])


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _model():
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(-8.0, 8.0)
    pred = EpsilonPredictor(MLP(2, hidden=16, depth=2, time_dim=8), sched)
    return nd.NDM(
        pred, nd.ResidualTransform(MLP(2, hidden=8, depth=1, time_dim=8)), sched, data_shape=(2,)
    )


DATA = checkerboard(256, torch.Generator().manual_seed(0))


def _api(ck, steps=4, **kw):
    kw.setdefault("progress", False)
    return train(_model(), DATA, steps=steps, batch_size=16, generator=3, checkpoint=ck, **kw)


def _wait_for(path: Path, proc) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {path} after {WAIT_S} s"
        time.sleep(0.05)


def _same_state(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        sa = a[key] if key == "model" else a[key]["shadow"]
        sb = b[key] if key == "model" else b[key]["shadow"]
        assert sa.keys() == sb.keys()
        for name in sa:
            assert torch.equal(sa[name], sb[name]), (key, name)
    assert a["losses"] == b["losses"]


# ----------------------------------------------------------------- signals
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_the_step_and_resume_is_bit_exact(tmp_path, sig, code):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ndmsolve", "train", *TINY, "--steps", "1000000"]
    cmd += ["--checkpoint-every", "3", "--out", str(out)]
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(out / "checkpoint.pt", proc)  # training is under way
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert lines[0] == (
        f"ndmsolve train: interrupted ({sig.name}) at step {step}; checkpoint saved to "
        f"{out / 'checkpoint.pt'}; continue with --resume"
    )
    assert read_checkpoint(out / "checkpoint.pt")["step"] == step
    assert not list(out.glob(".*.tmp")) and not (out / LOCK_NAME).exists()
    # Continued to step + 2, it equals a run of step + 2 steps straight, bit for bit.
    assert _cli(out, "--steps", str(step + 2), "--checkpoint-every", "3", "--resume") == 0
    assert _cli(tmp_path / "straight", "--steps", str(step + 2), "--checkpoint-every", "3") == 0
    _same_state(
        load_checkpoint(out / "checkpoint.pt"),
        load_checkpoint(tmp_path / "straight" / "checkpoint.pt"),
    )


def _signalling_loss(at_calls: dict):
    """The continuous loss, sending this process the signals ``at_calls[k]`` at call k."""
    from ndmsolve.objectives import continuous_loss

    calls = []

    def loss(model, x, generator):
        calls.append(1)
        for s in at_calls.get(len(calls), ()):
            os.kill(os.getpid(), s)
        return continuous_loss(model, x, generator=generator)

    return loss


def test_api_interrupt_finishes_the_step_and_restores_handlers(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    ck = tmp_path / "ck.pt"
    with pytest.raises(TrainingInterrupted) as info:
        _api(ck, steps=50, loss=_signalling_loss({3: [signal.SIGTERM]}))
    e = info.value
    # Sent during step 3's loss: step 3 completes and is saved.
    assert (e.step, e.signal, e.checkpoint, e.exit_code) == (3, signal.SIGTERM, ck, 143)
    assert load_checkpoint(ck)["step"] == 3 and len(load_checkpoint(ck)["losses"]) == 3
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert not (tmp_path / LOCK_NAME).exists()
    # Without a checkpoint the run stops all the same.
    with pytest.raises(TrainingInterrupted, match="at step 2; nothing saved"):
        train(_model(), DATA, steps=50, batch_size=16, generator=3, progress=False,
              loss=_signalling_loss({2: [signal.SIGINT]}))  # fmt: skip


def test_second_signal_during_the_save_waits_for_it(tmp_path, monkeypatch):
    import ndmsolve.train as train_mod

    real = train_mod.save_checkpoint
    seen = []

    def save_and_signal(path, **entries):
        os.kill(os.getpid(), signal.SIGINT)  # the second signal, mid-save
        seen.append(entries["step"])
        return real(path, **entries)

    monkeypatch.setattr(train_mod, "save_checkpoint", save_and_signal)
    ck = tmp_path / "ck.pt"
    with pytest.raises(TrainingInterrupted) as info:
        _api(ck, steps=50, loss=_signalling_loss({2: [signal.SIGINT]}))
    assert info.value.step == 2 and info.value.checkpoint == ck and seen == [2]
    assert load_checkpoint(ck)["step"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_second_signal_before_the_save_abandons_the_run(tmp_path):
    ck = tmp_path / "ck.pt"
    loss = _signalling_loss({5: [signal.SIGINT, signal.SIGINT]})
    with pytest.raises(TrainingInterrupted) as info:
        _api(ck, steps=50, checkpoint_every=2, loss=loss)
    e = info.value
    assert e.checkpoint is None and e.kept_step == 4 and e.step == 4
    assert "not saved (second signal); the checkpoint of step 4 is kept" in str(e)
    assert load_checkpoint(ck)["step"] == 4


def test_an_ignored_signal_stays_ignored(tmp_path, monkeypatch):
    monkeypatch.setattr(
        signal, "getsignal", lambda s: signal.SIG_IGN if s == signal.SIGINT else None
    )
    installed = []
    monkeypatch.setattr(signal, "signal", lambda s, h: installed.append(s))
    _api(tmp_path / "ck.pt", steps=1)
    assert signal.SIGINT not in installed and installed.count(signal.SIGTERM) == 2


def test_no_handlers_outside_the_main_thread(tmp_path):
    seen, errors = [], []

    def loss(model, x, generator):
        from ndmsolve.objectives import continuous_loss

        seen.append(signal.getsignal(signal.SIGTERM))
        return continuous_loss(model, x, generator=generator)

    def work():
        try:
            _api(tmp_path / "ck.pt", steps=2, loss=loss)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors and seen == [before, before]


def _ddp_worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2
    )
    try:
        loss = _signalling_loss({3: [signal.SIGTERM]} if rank == 1 else {})
        try:
            _api(os.path.join(folder, "ddp.pt"), steps=50, loss=loss)
            result = None
        except TrainingInterrupted as e:
            result = (e.step, int(e.signal), str(e.checkpoint))
        torch.save(result, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_ddp_ranks_agree_on_the_stop(tmp_path):
    # Only rank 1 gets SIGTERM; both stop after the same step and rank 0 saves it.
    mp.spawn(_ddp_worker, args=(str(tmp_path),), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert got[0] == got[1] == (3, int(signal.SIGTERM), str(tmp_path / "ddp.pt"))
    assert load_checkpoint(tmp_path / "ddp.pt")["step"] == 3


def test_stale_temp_files_of_the_checkpoint_are_removed(tmp_path):
    ck = tmp_path / "ck.pt"
    stale = [tmp_path / ".ck.pt.a1b2c3d4.tmp", tmp_path / ".ck.pt.zz_99x.tmp"]
    others = [tmp_path / ".other.pt.a1b2c3d4.tmp", tmp_path / ".ck.pt.json", tmp_path / "ck.pt.tmp"]
    for p in stale + others:
        p.write_bytes(b"left by a killed save")
    _api(ck, steps=2)
    assert [p.exists() for p in stale] == [False, False]
    assert all(p.exists() for p in others)
    assert load_checkpoint(ck)["step"] == 2


# ----------------------------------------------------------------- the output folder
def _hold_lock(folder: Path):
    """A process holding ``folder``'s lock until its stdin closes."""
    code = (
        "import sys; from ndmsolve._guard import folder_lock\n"
        f"with folder_lock({str(folder)!r}):\n"
        "    print('locked', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        stale = out / ".checkpoint.pt.x1y2z3.tmp"  # the holder's in-flight write
        stale.write_bytes(b"partial")
        assert _cli(out, "--steps", "2") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("ndmsolve train: error: --out")
        assert f"in use by process {holder.pid}" in err
        with pytest.raises(FolderLockedError, match=f"process {holder.pid}") as info:
            _api(out / "checkpoint.pt", steps=2)
        assert info.value.pid == holder.pid
        assert stale.exists() and not (out / "checkpoint.pt").exists()
        # Another thread of this process is refused too (the lock is re-entrant per thread).
        errors = []
        with folder_lock(tmp_path / "mine"):
            t = threading.Thread(target=lambda: errors.append(_try_lock(tmp_path / "mine")))
            t.start()
            t.join()
        assert isinstance(errors[0], FolderLockedError)
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    assert _cli(out, "--steps", "2") == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert not stale.exists()


def _try_lock(folder):
    try:
        with folder_lock(folder):
            return None
    except FolderLockedError as e:
        return e


def test_existing_checkpoint_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(out, "--steps", "4") == 0
    ck = out / "checkpoint.pt"
    before = ck.read_bytes()
    capsys.readouterr()
    assert _cli(out, "--steps", "2") == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"ndmsolve train: error: {ck} exists: pass --resume to continue it or "
        f"--overwrite to replace it"
    )
    assert ck.read_bytes() == before
    assert _cli(out, "--steps", "2", "--resume", "--overwrite") == 2
    assert _cli(out, "--steps", "2", "--overwrite") == 0
    assert read_checkpoint(ck)["step"] == 2
    # The API alike.
    with pytest.raises(CheckpointExistsError, match="resume=True.*overwrite=True"):
        _api(ck, steps=3)
    assert read_checkpoint(ck)["step"] == 2
    _api(ck, steps=3, overwrite=True)
    assert read_checkpoint(ck)["step"] == 3


def test_resume_with_fewer_steps_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(out, "--steps", "6") == 0
    ck = out / "checkpoint.pt"
    before = ck.read_bytes()
    capsys.readouterr()
    assert _cli(out, "--steps", "4", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"ndmsolve train: error: --steps 4 is below the step of {ck} (6); "
        f"--resume needs --steps >= 6"
    )
    assert _cli(out, "--steps", "6", "--resume") == 0
    assert "already at step 6: nothing to train" in capsys.readouterr().out
    assert ck.read_bytes() == before
    api = tmp_path / "api.pt"
    _api(api, steps=6)
    before = api.read_bytes()
    with pytest.raises(ValueError, match="at step 6, beyond steps=4: resume with steps >= 6"):
        _api(api, steps=4, resume=True)
    res = _api(api, steps=6, resume=True)  # nothing to do: the file is left as it is
    assert api.read_bytes() == before and len(res.losses) == 6


def test_out_must_be_a_writable_folder(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("not a folder")
    assert _cli(afile, "--steps", "2") == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"ndmsolve train: error: --out {str(afile)!r} is a file; expected a folder (created if missing)"
    )
    assert main(["demo", "--quick", "--out", str(afile)]) == 2
    assert "--out" in capsys.readouterr().err
    with _mounted(tmp_path / "ro", "ro,size=1m") as ro:
        assert _cli(ro / "run", "--steps", "2") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ndmsolve train: error: --out {str(ro / 'run')!r} is not writable")
        assert "Read-only file system" in err


# ----------------------------------------------------------------- full disk
@contextlib.contextmanager
def _mounted(where: Path, options: str):
    """A tmpfs mounted at ``where`` (skips the test where mounting is not allowed)."""
    where.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _check_full_disk_message(err: str, ck: Path, kept_step: int) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (
        f"ndmsolve train: error: cannot write checkpoint {ck}: No space left on device; "
        f"the previous checkpoint (step {kept_step}) is kept"
    )
    assert read_checkpoint(ck)["step"] == kept_step
    assert not list(ck.parent.glob(".*.tmp"))


def test_full_disk_tmpfs(tmp_path, capsys):
    # Room for one checkpoint (~66 kB) but not for its successor beside it.
    with _mounted(tmp_path / "disk", "size=100k") as disk:
        assert _cli(disk, "--steps", "4", "--checkpoint-every", "2") == 1
        _check_full_disk_message(capsys.readouterr().err, disk / "checkpoint.pt", 2)


def test_full_disk_patched(tmp_path, capsys, monkeypatch):
    # torch.save writing to a full disk: a RuntimeError around the OSError.
    real, calls = torch.save, []

    def full(obj, f, *a, **k):
        calls.append(1)
        if len(calls) < 2:
            return real(obj, f, *a, **k)
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from None

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    assert _cli(out, "--steps", "4", "--checkpoint-every", "2") == 1
    _check_full_disk_message(capsys.readouterr().err, out / "checkpoint.pt", 2)
    # No previous checkpoint, through the API: the error class, its errno, one line.
    calls.clear()
    calls.append(1)
    with pytest.raises(CheckpointWriteError) as info:
        _api(tmp_path / "fresh" / "ck.pt", steps=2)
    assert info.value.errno == errno.ENOSPC and info.value.__suppress_context__
    assert str(info.value) == (
        f"cannot write checkpoint {tmp_path / 'fresh' / 'ck.pt'}: No space left on device; "
        f"no previous checkpoint"
    )
    assert os.listdir(tmp_path / "fresh") == []


def test_full_disk_at_fsync(tmp_path, monkeypatch):
    ck = tmp_path / "ck.pt"
    _api(ck, steps=2)

    def full(fd):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointWriteError) as info:
        _api(ck, steps=3, overwrite=True)
    assert str(info.value) == (
        f"cannot write checkpoint {ck}: {os.strerror(errno.EDQUOT)}; "
        f"the previous checkpoint (step 2) is kept"
    )
    monkeypatch.undo()
    assert read_checkpoint(ck)["step"] == 2 and os.listdir(tmp_path) == ["ck.pt"]
