"""A trainer checkpoint on disk, read: where its steps are, its manifest verified, its common
state and a model's sharded state loaded from it. The contract between the trainer, which
writes checkpoints (checkpoint_write.py), and everything that reads them (inference,
sweeps, tools). The layout's names are layout.py's.

Every read goes through `read_common` or `load_sharded`, which verify the manifest first
(manifest.py): a damaged checkpoint is a CheckpointError naming its files, never
data loaded silently. A checkpoint without a manifest is refused too (a partial copy or a sync
that skipped small files looks exactly like one saved before manifests existed) unless the
caller opts in for this run (`allow_unverified`: train.allow_unverified_checkpoint,
the tools' --allow-unverified); `verify_checkpoint` is the one place that decides.

A path a user gives (a tool's argument) is a step directory, a run's `checkpoints/` directory
or the run's output directory (`resolve_checkpoint`: the newest complete step of those);
`checkpoint_config` and `load_model_state` read a model's config and tensors from it at any
layout (the tensors carry their shard layout, the config travels in the common state).

Errors name the checkpoint and the reason on one line; with PONDER_DEBUG=1 the traceback of
the underlying failure is printed to stderr as well.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.validation import StrictHandling

from megatron_ponder.config import Config, config_from_dict
from megatron_ponder.run import manifest as checkpoint_manifest
from megatron_ponder.run.layout import STEP_DIR, TRACKER


class CheckpointError(RuntimeError):
    pass


# Set to 1 to print the traceback behind a checkpoint (or save) error to stderr.
DEBUG_ENV = "PONDER_DEBUG"
ADD_MANIFEST = "python tools/convert_checkpoint.py add-manifest"


def one_line_reason(err: BaseException) -> str:
    """The innermost reason of `err` on one line: torch's CheckpointException carries whole
    remote tracebacks in its text, which belong in a log, not in an error message. The
    traceback itself goes to stderr when PONDER_DEBUG=1."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(err, file=sys.stderr)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {(lines[-1] if lines else '')[:300]}"


# Transformer Engine's modules keep their FP8 scaling metadata as `<module>._extra_state` (its
# activation op and norms too, which the local spec's modules lack): a checkpoint saved on the
# local spec (CPU runs, HF imports, convert_checkpoint) has none of theirs. Asked for and absent,
# a module keeps its fresh extra state (TE starts its FP8 history anew); every other key must be
# in the checkpoint. Present, it loads as usual, so a TE run resumes with its own.
EXTRA_STATE_SUFFIX = "_extra_state"


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def step_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:07d}"


def complete_steps(directory: Path) -> list[int]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = []
    for entry in directory.iterdir():
        match = STEP_DIR.match(entry.name)
        if match and (entry / "metadata.json").is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def resume_candidates(directory: Path) -> list[int]:
    """Complete steps in the order a resume tries them: the tracker's, then newest first."""
    complete = complete_steps(directory)[::-1]
    tracker = Path(directory) / TRACKER
    if tracker.is_file():
        text = tracker.read_text().strip()
        if text.isdigit() and int(text) in complete:
            complete.remove(int(text))
            return [int(text), *complete]
    return complete


def latest_step(directory: Path) -> int | None:
    """The tracker's step if that checkpoint is complete, else the newest complete one."""
    candidates = resume_candidates(directory)
    return candidates[0] if candidates else None


# Checkpoints this process verified: (path, manifest inode, manifest mtime).
# A checkpoint never changes once renamed into place (a re-save makes a new directory), so
# the tools' and the trainer's several reads of one checkpoint hash it once.
_verified: set[tuple] = set()
# Checkpoints this process read without a manifest, by the caller's opt-in (resolved paths).
_unverified: set[str] = set()


def verify_checkpoint(path: Path, allow_unverified: bool = False) -> None:
    """Raise CheckpointError naming every file of `path` that does not match its manifest,
    or, unless `allow_unverified`, saying that it has none. A collective when several
    processes run: every rank calls it."""
    path = Path(path)
    manifest = path / checkpoint_manifest.MANIFEST
    try:
        stat = manifest.stat()
        key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns)
    except FileNotFoundError:
        key = None
    if key in _verified:
        return
    problems = checkpoint_manifest.verify(path)
    if problems is None:
        if not allow_unverified:
            raise CheckpointError(
                f"checkpoint {path} has no {checkpoint_manifest.MANIFEST}, so its files cannot "
                "be checked (a partial copy or a sync that skipped small files looks the same "
                "as a checkpoint saved before manifests existed): refused. If you trust it, "
                f"write one with `{ADD_MANIFEST} {path}`, or read it unverified for one run "
                "with train.allow_unverified_checkpoint=true (training) or --allow-unverified "
                "(the tools)")
        if str(path.resolve()) not in _unverified and rank() == 0:
            print(f"warning: {path} has no {checkpoint_manifest.MANIFEST}: reading it "
                  "unverified, as allowed for this run", file=sys.stderr)
        _unverified.add(str(path.resolve()))
        return
    if problems:
        raise CheckpointError(f"checkpoint {path} is damaged: " + "; ".join(problems))
    _verified.add(key)


def read_unverified(path: Path) -> bool:
    """Whether this process read `path` without a manifest (by the caller's opt-in)."""
    return str(Path(path).resolve()) in _unverified


def read_common(path: Path, allow_unverified: bool = False) -> dict:
    """The checkpoint's common state (config, train state, world size), once verified."""
    verify_checkpoint(path, allow_unverified)
    try:
        return dist_checkpointing.load_common_state_dict(str(path))
    except Exception as err:  # an unpicklable or missing common.pt
        raise CheckpointError(f"checkpoint {path}: its common state (common.pt) cannot be read "
                              f"({one_line_reason(err)})") from None


def load_sharded(template: dict, path: Path, hint: str, allow_unverified: bool = False) -> dict:
    """dist_checkpointing.load of a verified checkpoint, its failures (a missing shard,
    another model) as a CheckpointError naming the checkpoint and what to do (`hint`).
    `_extra_state` entries the checkpoint lacks are left out of the result (EXTRA_STATE_SUFFIX);
    load the model part with `load_model_tensors`."""
    verify_checkpoint(path, allow_unverified)
    try:
        # RETURN_UNEXPECTED: megatron drops the requested keys the checkpoint lacks before
        # reading and names them ("unexpected"), instead of the reader failing on the first.
        state, _, absent = dist_checkpointing.load(template, str(path),
                                                   strict=StrictHandling.RETURN_UNEXPECTED)
    except BaseException as err:  # CheckpointException derives from BaseException
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        raise CheckpointError(
            f"checkpoint {path} does not fit this model or is incomplete "
            f"({one_line_reason(err)}); {hint}") from None
    required = sorted(key for key in absent if not key.endswith(EXTRA_STATE_SUFFIX))
    if required:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model or is incomplete (it lacks "
            f"{len(required)} entries this model needs, e.g. {', '.join(required[:3])}); {hint}")
    return state


def load_model_tensors(model, state_dict: dict) -> None:
    """model.load_state_dict, strict except for `_extra_state` the checkpoint did not have."""
    result = model.load_state_dict(state_dict, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith(EXTRA_STATE_SUFFIX)]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"the checkpoint's model state does not fit this model: missing "
                              f"{missing[:3]}, unexpected {result.unexpected_keys[:3]}")


def resolve_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if (path / "metadata.json").is_file():
        return path
    for directory in (path, path / "checkpoints"):
        step = latest_step(directory)
        if step is not None:
            return step_path(directory, step)
    raise CheckpointError(
        f"{path} is not a checkpoint: expected a step_XXXXXXX directory holding metadata.json, "
        f"a checkpoints/ directory, or a training run's output directory")


def checkpoint_config(path: str | Path, overrides: list[str] = (),
                      allow_unverified: bool = False) -> Config:
    """The config saved with the checkpoint, at a single-process layout (TP 1), plus overrides."""
    common = read_common(resolve_checkpoint(path), allow_unverified)
    saved = dict(common["config"])
    saved["parallel"] = {}  # layout of this process, not of the run that saved it
    return config_from_dict(saved, list(overrides))


def load_model_state(model, path: str | Path, allow_unverified: bool = False) -> None:
    """Fill `model` (any layout) from the checkpoint's model tensors."""
    path = resolve_checkpoint(path)
    state = load_sharded({"model": model.sharded_state_dict()}, path,
                         "a shard file may be missing or the checkpoint incomplete",
                         allow_unverified)
    load_model_tensors(model, state["model"])
