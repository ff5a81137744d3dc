"""Epoch checkpoints: an interrupted training resumes where it stopped, not from epoch 0.

A cached training (:func:`softlib.train.train_cached`, a stacked group of
:func:`softlib.multimodel.train_cached_many`) keeps, beside the cache, the state it needs to go
on after its last finished epoch: weights, optimizer, every random generator, history,
validation and early-stopping state. It is written at most every ``SOFTLIB_CHECKPOINT_SECONDS``
(default 60 s; ``0`` disables checkpoints), atomically, and deleted once the trained entry is
stored. A run killed or interrupted (a lent GPU's command limit, a preempted node, Ctrl-C)
resumes from it the next time the same job runs, with the same result as an uninterrupted run
on the same device (random draws included).

A *halt* deadline (:func:`set_halt`; ``compute --halt-seconds``) stops a training at the end of
the last epoch that fits before it, after writing its checkpoint, by raising
:class:`TrainingHalted`: a compute budget says when no new job may start, the halt when the
jobs running must stop. A long group started just before the budget then keeps every epoch it
finished when the machine's time runs out, for the next run on a machine that has the
checkpoint (checkpoints hold weights: they stay in that machine's cache, bundles leave them out).
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from ._io import atomic_path, save_json
from .cache import BudgetExhausted

#: bumped when the saved state's layout changes: older checkpoints are then ignored
CHECKPOINT_FORMAT = 1

_halt: float | None = None


class TrainingHalted(BudgetExhausted):
    """A training stopped at the halt deadline (:func:`set_halt`) after saving its checkpoint."""


def set_halt(seconds_from_now: float | None) -> None:
    """Stop trainings that would still be running this many seconds from now (``None``: never)
    at the end of their last epoch that fits, checkpointed (see :class:`TrainingHalted`)."""
    global _halt
    _halt = None if seconds_from_now is None else time.monotonic() + float(seconds_from_now)


def halt_due(next_epoch_seconds: float) -> bool:
    """Whether another epoch lasting ``next_epoch_seconds`` would end past the halt deadline."""
    return _halt is not None and time.monotonic() + float(next_epoch_seconds) >= _halt


def checkpoint_seconds() -> float:
    """Seconds between two checkpoint writes (``SOFTLIB_CHECKPOINT_SECONDS``, default 60;
    0 or less: no checkpoints)."""
    raw = os.environ.get("SOFTLIB_CHECKPOINT_SECONDS", "60")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"SOFTLIB_CHECKPOINT_SECONDS must be a number of seconds, got "
                         f"{raw!r}") from None


class Checkpoint:
    """One training's checkpoint file. ``identity`` (JSON-able: what is trained, on which kind
    of device) must match for a saved state to be resumed; anything else found there is set
    aside with a warning and training starts over."""

    def __init__(self, path: str | os.PathLike, identity: dict[str, Any],
                 every_seconds: float | None = None, label: str = "a training"):
        self.path = Path(path)
        self.identity = {"format": CHECKPOINT_FORMAT, **identity}
        self.label = label  # for messages
        self.every_seconds = checkpoint_seconds() if every_seconds is None else float(every_seconds)
        self._last_save = time.monotonic()
        #: the epoch the last :meth:`load` resumed from (0: none)
        self.resumed_epoch = 0

    @property
    def enabled(self) -> bool:
        return self.every_seconds > 0

    def load(self) -> dict[str, Any] | None:
        """The saved state (tensors on the CPU) when it belongs to this training, else None."""
        self._last_save = time.monotonic()
        if not self.enabled or not self.path.exists():
            return None
        import torch
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable (e.g. a disk filled mid-write elsewhere)
            warnings.warn(f"softlib.checkpoint: could not read {self.path} ({exc}); "
                          "training starts over")
            return None
        if not isinstance(state, dict) or state.get("identity") != self.identity:
            warnings.warn(f"softlib.checkpoint: {self.path} belongs to another training; "
                          "training starts over")
            return None
        self.resumed_epoch = int(state["epoch"])
        from .progress import write
        write(f"softlib: resuming {self.label} from its checkpoint after epoch "
              f"{self.resumed_epoch} ({self.path})")
        return state

    def epoch_end(self, epoch: int, epochs: int, epoch_seconds: float,
                  state: Callable[[], dict[str, Any]]) -> None:
        """After ``epoch`` (1-based) of ``epochs``: write the checkpoint when one is due, and
        at the halt deadline write it and raise :class:`TrainingHalted`. ``state()`` builds
        the state to save (only when saving)."""
        if not self.enabled or epoch >= epochs:
            return
        halting = halt_due(epoch_seconds)
        if halting or time.monotonic() - self._last_save >= self.every_seconds:
            self.save(epoch, state(), epochs)
        if halting and self.enabled:  # (a failed write turned checkpoints off: train on)
            raise TrainingHalted(f"{self.label} stopped after epoch {epoch}/{epochs} at the "
                                 f"halt deadline; its checkpoint ({self.path.name}) resumes it "
                                 "on the next run")

    def save(self, epoch: int, state: dict[str, Any], epochs: int | None = None) -> None:
        """Write ``state`` as the checkpoint after ``epoch``, and beside it a small JSON note
        (what trains, how far) that :func:`in_progress` lists without loading weights. A
        write that fails (no space, no permission) turns this training's checkpoints off with
        a warning: the training itself goes on."""
        import torch
        try:
            with atomic_path(self.path, suffix=".pt") as tmp:
                torch.save({"identity": self.identity, "epoch": int(epoch), **state}, tmp)
            save_json(self.path.with_suffix(".json"),
                      {"label": self.label, "epoch": int(epoch), "epochs": epochs,
                       "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "bytes": self.path.stat().st_size})
        except OSError as exc:
            warnings.warn(f"softlib.checkpoint: could not write {self.path} ({exc}); "
                          f"{self.label} trains on without checkpoints")
            self.every_seconds = 0.0
        self._last_save = time.monotonic()

    def clear(self) -> None:
        """Delete the checkpoint and its note (its training's entry is stored)."""
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".json").unlink(missing_ok=True)


def checkpoints_dir(cache_root: str | os.PathLike) -> Path:
    """Where the trainings of the cache at ``cache_root`` keep their checkpoints."""
    return Path(cache_root) / ".checkpoints"


def in_progress(root: str | os.PathLike) -> list[dict[str, Any]]:
    """The checkpointed trainings under ``root`` (a cache's ``.checkpoints`` folder), from
    their notes: label, epoch, epochs, when saved, size and file; oldest first."""
    out = []
    for note in sorted(Path(root).glob("*/*.json")):
        try:
            info = json.loads(note.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and note.with_suffix(".pt").exists():
            out.append({**info, "file": str(note.with_suffix(".pt"))})
    return sorted(out, key=lambda d: str(d.get("saved", "")))


def rng_state(device) -> dict[str, Any]:
    """torch's global random state (CPU, and the CUDA device's when training there): dropout
    draws from it."""
    import torch
    out = {"cpu": torch.get_rng_state()}
    if getattr(device, "type", str(device)) == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(saved: dict[str, Any], device) -> None:
    import torch
    torch.set_rng_state(saved["cpu"])
    if "cuda" in saved:
        torch.cuda.set_rng_state(saved["cuda"], device)


def for_cache_entry(root: str | os.PathLike, kind: str, key: str, trainer: str, device,
                    label: str) -> Checkpoint:
    """The checkpoint, under ``root`` (a cache's ``.checkpoints`` folder), of the training
    (``trainer``: 'fit' or 'fit_stacked') that will store entry ``kind/key`` (a stacked group:
    ``key`` a hash of its entries' keys). ``label`` names the training in messages."""
    return Checkpoint(Path(root) / kind / f"{key}.pt",
                      {"trainer": trainer, "kind": kind, "key": key,
                       "device": getattr(device, "type", str(device))}, label=label)
