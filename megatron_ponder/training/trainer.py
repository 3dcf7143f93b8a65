"""The pretraining loop: data -> PonderLM -> AdamW, with evaluation, logging, checkpoints,
stop requests and non-finite-step handling. One concern per collaborator module; this
file only sequences them."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from megatron.core import parallel_state

from megatron_ponder.comm_device import comm_tensor
from megatron_ponder.config import Config, ConfigError, ModelConfig, PonderConfig, config_to_dict
from megatron_ponder.data.batches import batch_for_step
from megatron_ponder.data.datasets import build_checked, check_datasets
from megatron_ponder.data.tokenizer import Tokenizer, check_fits
from megatron_ponder.model import build_model
from megatron_ponder.model.spec import fused_kernels_available
from megatron_ponder.model.transforms import apply_transforms
from megatron_ponder.parallel import initialize_parallel
from megatron_ponder.parallel.grads import allreduce_tensor_parallel_partial_grads
from megatron_ponder.parallel.pipeline import pipeline_step
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.run.checkpoint_read import CheckpointError, read_unverified
from megatron_ponder.run.checkpoint_write import Checkpointer
from megatron_ponder.run.exit_codes import EXIT_DONE, EXIT_REQUEUE
from megatron_ponder.run.layout import check_writable_dir
from megatron_ponder.run.lock import lock_run
from megatron_ponder.run.signals import StopRequest
from megatron_ponder.training.engines import build_engine, data_parallel_mean
from megatron_ponder.training.evaluate import evaluate
from megatron_ponder.training.metrics import MetricsLogger
from megatron_ponder.training.optim import build_scheduler, resume_changes
from megatron_ponder.training.precision import backward_autocast, forward_autocast
from megatron_ponder.training.throughput import mfu, peak_flops


class NonFiniteError(RuntimeError):
    pass


@dataclass
class TrainState:
    step: int = 0  # optimizer steps completed (skipped ones included): the data position
    consecutive_skips: int = 0
    skipped_steps: int = 0


# The ponder fields that decide which parameters the model has (with every model field).
PONDER_SHAPE_FIELDS = ("method", "k", "router")


# A checkpoint written before a field existed was built with the field's default.
_FIELD_DEFAULTS = {"model": asdict(ModelConfig()), "ponder": asdict(PonderConfig())}


def _shape_fields_differ(saved: dict, current: dict) -> list[str]:
    """The fields deciding parameter shapes on which a checkpoint's config and the recipe
    disagree, as "section.field: checkpoint X, recipe Y"."""
    pairs = [("model", k) for k in sorted(set(saved["model"]) | set(current["model"]))]
    pairs += [("ponder", k) for k in PONDER_SHAPE_FIELDS]

    def value(config, section, key):
        return config[section].get(key, _FIELD_DEFAULTS[section].get(key))

    return [f"{section}.{k}: checkpoint {value(saved, section, k)!r}, recipe "
            f"{value(current, section, k)!r}" for section, k in pairs
            if value(saved, section, k) != value(current, section, k)]


def agree_on_stop(reason: str | None) -> str | None:
    """The stop decision of every rank together: a signal or the wall-time limit can reach
    the ranks a step apart, and the save that follows is collective, so all stop if any does."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return reason
    flag = comm_tensor([reason is not None], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and reason is None:
        return "another rank is stopping"
    return reason


class Trainer:
    def __init__(self, cfg: Config, stop: StopRequest | None = None):
        """stop: stop handling installed earlier (the CLI installs it before its imports);
        the wall-time limit then counts from then."""
        self.cfg = cfg
        self.output_dir = Path(cfg.train.output_dir)
        self.stop = stop or StopRequest()  # first: a signal during set-up is kept
        self.stop.max_wall_time_s = cfg.train.max_wall_time_s
        self.run_lock = None
        try:
            self._set_up(cfg)
        except BaseException:
            self.stop.restore()
            if self.run_lock is not None:
                self.run_lock.release()
            raise

    def _set_up(self, cfg: Config) -> None:
        t = cfg.train
        check_writable_dir(self.output_dir, "train.output_dir")  # before anything is written
        initialize_parallel(cfg)
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.pp_size = parallel_state.get_pipeline_model_parallel_world_size()
        # Every rank counts the FLOPs of its data-parallel replica's micro-batches, which its
        # tensor- and pipeline-parallel peers share.
        self.model_parallel_size = cfg.parallel.tensor_model_parallel_size * self.pp_size
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.autocast = forward_autocast(cfg, self.device)
        self.backward_autocast = backward_autocast(cfg, self.device)

        tokenizer = Tokenizer.load(cfg.data.tokenizer, cfg.data.eod_token)
        check_fits(tokenizer, cfg.model.vocab_size)
        eval_samples = t.eval_batches * t.micro_batch_size
        num_samples = (t.steps * t.global_batch_size, eval_samples, 0)
        data_config = check_datasets(
            cfg.data, vocab_size=tokenizer.vocab_size, eod_id=tokenizer.eod_id, seed=cfg.seed,
            num_samples=num_samples, model_vocab_size=cfg.model.vocab_size,
            cache_dir=cfg.data.cache_dir or str(self.output_dir / "data_cache"))
        # After the input checks (bad input writes nothing), before the resume point is
        # chosen and anything is written: one trainer per output directory.
        self.run_lock = lock_run(self.output_dir)
        self.checkpointer = Checkpointer(self.output_dir / "checkpoints", t.keep_checkpoints,
                                         allow_unverified=t.allow_unverified_checkpoint)
        self.skipped: list[str] = []  # checkpoints passed over on resume, each with why
        self._reported = 0  # how many of them stderr has named
        resume_step = self._resume_step()
        applied = self._check_resume_point(resume_step)
        self.train_data, self.valid_data, _ = build_checked(data_config, num_samples)
        # On CUDA with Transformer Engine: its fused layer spec (model/spec.py); then
        # train.recompute and train.compile on the built model (model/transforms.py).
        fused = fused_kernels_available(self.device)
        self.model = apply_transforms(build_model(cfg, fused_kernels=fused).to(self.device), t, fused)
        self.engine = build_engine(cfg, self.model)  # data parallelism (engines/)
        self.optimizer = self.engine.optimizer
        self.scheduler = build_scheduler(self.optimizer, t)
        self.state = TrainState()
        if resume_step is not None:
            resume_step, common, applied = self._load_newest_loadable(resume_step, applied)
            self.state = TrainState(**common["train_state"])
        self.logger = MetricsLogger(cfg, self.output_dir, self.state.step)
        if resume_step is not None:
            self.logger.print(f"resumed from {self.checkpointer.path(resume_step)} at step {self.state.step}")
            if read_unverified(self.checkpointer.path(resume_step)):
                # The opt-in, on record: this run's weights were never checked.
                self.logger.log(self.state.step, {"unverified_checkpoint": str(
                    self.checkpointer.path(resume_step))}, kind="resume")
        if applied:  # config.yaml below holds the new values; this record, the old ones
            self.logger.print("changed since the checkpoint, applied from this step: " + "; ".join(
                f"{k} {old!r} -> {new!r}" for k, (old, new) in applied.items()))
            self.logger.log(self.state.step, {"changed": applied}, kind="resume")
        if self.logger.enabled:
            (self.output_dir / "config.yaml").write_text(
                yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        self.shape = DecoderShape.of(cfg.model)
        self.peak = peak_flops(t.peak_tflops)
        # Until a save has been timed: 2 s plus model + AdamW state at 200 MB/s, generous.
        state_bytes = 3 * sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.last_save_s = 2.0 + state_bytes / 200e6

    def _resume_step(self, below: int | None = None) -> int | None:
        """The newest checkpoint (older than `below`) that verifies; newer ones that do not
        are named and skipped (with any the caller added to self.skipped since its last call)."""
        before = self._reported
        try:
            step = self.checkpointer.newest_usable(self.skipped, below)
        finally:
            self._reported = len(self.skipped)
        if len(self.skipped) > before and (not dist.is_initialized() or dist.get_rank() == 0):
            for reason in self.skipped[before:]:
                print(f"skipping a checkpoint: {reason}", file=sys.stderr, flush=True)
            print(f"resuming from the newest usable checkpoint, {self.checkpointer.path(step)}",
                  file=sys.stderr, flush=True)
        return step

    def _check_resume_point(self, step: int | None) -> dict:
        """Refuse another model's checkpoint or changed optimizer settings (ConfigError);
        return the changed settings that apply (see _check_optimizer_settings)."""
        if step is None:
            return {}
        self._check_checkpoint_shape(step)
        return self._check_optimizer_settings(step)

    def _load_newest_loadable(self, step: int, applied: dict) -> tuple[int, dict, dict]:
        """(step, common state, applied changes) of the newest checkpoint from `step` down
        that loads: one that verifies but does not load (a damaged shard of a checkpoint read
        unverified by opt-in) is named and skipped like one that does not verify."""
        while True:
            try:
                return step, self.checkpointer.load(step, self.engine, self.scheduler), applied
            except CheckpointError as err:
                self.skipped.append(str(err))
                try:
                    step = self._resume_step(below=step)
                except CheckpointError:  # none older is usable: name every one skipped
                    step = None
                if step is None:
                    raise CheckpointError(
                        f"no checkpoint in {self.checkpointer.directory} is usable: "
                        + " | ".join(self.skipped)
                        + ". Move the damaged ones away to start again from step 0.") from None
                applied = self._check_resume_point(step)

    def _check_optimizer_settings(self, step: int) -> dict:
        """Refuse a changed setting the checkpoint's optimizer state would silently override;
        return the changed settings that take effect ({field: [checkpoint, recipe]})."""
        refused, applied = resume_changes(self.checkpointer.read_common(step)["config"]
                                          ["train"], self.cfg.train)
        if refused:
            raise ConfigError(
                f"cannot resume from {self.checkpointer.path(step)} with changed optimizer "
                f"settings ({'; '.join(refused)}): the checkpoint's optimizer state keeps the "
                "values it was saved with, so the new ones would be silently ignored. Resume "
                "with the checkpoint's values, or start a new train.output_dir.")
        return applied

    def _check_checkpoint_shape(self, step: int) -> None:
        common = self.checkpointer.read_common(step)
        differ = _shape_fields_differ(common["config"], config_to_dict(self.cfg))
        if differ:
            raise ConfigError(
                f"cannot resume from {self.checkpointer.path(step)}: it holds another model ("
                + "; ".join(differ) + "). Use a new train.output_dir or the matching recipe.")

    # ------------------------------------------------------------------ one step

    def _train_step(self, step: int) -> dict:
        t = self.cfg.train
        batches = [{k: v.to(self.device) for k, v in batch.items()} for batch in batch_for_step(
            self.train_data, step, t.global_batch_size, t.micro_batch_size, self.dp_rank, self.dp_size)]
        self.engine.zero_grad()
        if self.pp_size > 1:
            result = pipeline_step(self.model, batches, step, self.autocast,
                                   backward_autocast=self.backward_autocast)
            objective, parts, stats = result.loss, result.parts, result.stats
            pass_slots, extra = result.pass_slots, {"pipeline_bubble": result.bubble_fraction}
        else:
            objective, parts, stats, pass_slots, extra = 0.0, {}, {}, [], {}
            for i, batch in enumerate(batches):
                with self.engine.micro_batch(last=i == len(batches) - 1):
                    with self.autocast():
                        out = self.engine.forward(batch["tokens"], step)
                    loss, loss_parts = self.model.loss(out, batch["labels"], batch["loss_mask"])
                    with self.backward_autocast():
                        self.engine.backward(loss / len(batches))
                objective += loss.item() / len(batches)
                for key, value in loss_parts.items():
                    parts[key] = parts.get(key, 0.0) + value.item() / len(batches)
                pass_slots.append(out.pass_slots)
                stats = self.model.statistics(out, batch["loss_mask"])
        flops = sum(batch["tokens"].shape[0] * self.model.method.training_flops(
            self.shape, slots, batch["tokens"].shape[1])
            for batch, slots in zip(batches, pass_slots))
        if self.cfg.parallel.sequence_parallel or (
                self.cfg.model.qk_norm and self.cfg.parallel.tensor_model_parallel_size > 1):
            allreduce_tensor_parallel_partial_grads(self.model)
        # Every data-parallel rank logs, and decides on skipping, from the same mean.
        objective, *means = data_parallel_mean([objective, *parts.values(), *stats.values()])
        parts, stats = dict(zip(parts, means)), dict(zip(stats, means[len(parts):]))
        # Skipping is decided on the objective (LM loss + penalty); "loss" is reported as the
        # LM loss alone, as validation reports it, and the penalty apart.
        norm = self.engine.step(loss_is_finite=math.isfinite(objective))
        bad = [name for name, value in (("loss", objective), ("grad_norm", norm))
               if not math.isfinite(value)]
        if bad:
            self.state.consecutive_skips += 1
            self.state.skipped_steps += 1
            # Step numbers count completed steps from 1, as the progress line does.
            if self.state.consecutive_skips > t.max_nonfinite_skips:
                raise NonFiniteError(
                    f"step {step + 1} (counted from 1, as in the progress line): {bad[0]} is "
                    f"not finite (loss {objective}, grad_norm {norm}) for "
                    f"{self.state.consecutive_skips} consecutive steps, more than "
                    f"train.max_nonfinite_skips={t.max_nonfinite_skips}; "
                    f"{self._resume_point()}")
            self.logger.print(f"step {step + 1} (counted from 1, as in the progress line): "
                              f"skipped, {bad[0]} is not finite")
        else:
            self.state.consecutive_skips = 0
        self.scheduler.step()
        penalty = {"penalty": parts["penalty"]} if "penalty" in parts else {}
        return {"loss": parts["lm_loss"], **penalty, "grad_norm": norm, "flops": flops,
                "jacobi": self.model.jacobi_for_step(step), "skipped": bool(bad), **stats, **extra}

    # ------------------------------------------------------------------ the loop

    def _resume_point(self) -> str:
        latest = self.checkpointer.latest_step()
        if latest is None:
            return f"no checkpoint in {self.checkpointer.directory} yet: a rerun starts afresh"
        return f"the newest good checkpoint, {self.checkpointer.path(latest)}, is the resume point"

    def save_unless_streak(self) -> None:
        """Save, unless a streak of non-finite steps is open: the weights that made the loss
        non-finite may have diverged, so the newest checkpoint saved before the streak stays
        the resume point (a resume repeats the steps since)."""
        if self.state.consecutive_skips:
            self.logger.print(
                f"not saving at step {self.state.step}: the last {self.state.consecutive_skips} "
                f"step(s) were not finite; {self._resume_point()}")
            return
        self.save()

    def save(self) -> None:
        start = time.perf_counter()
        path = self.checkpointer.save(self.state.step, self.engine, self.scheduler,
                                      asdict(self.state), config_to_dict(self.cfg))
        self.last_save_s = time.perf_counter() - start
        self.logger.print(f"saved {path} ({self.last_save_s:.1f}s)")

    def evaluate(self) -> dict:
        t = self.cfg.train
        if self.valid_data is None:
            return {}
        # Validation micro-batch i goes to data-parallel rank i % dp: the same samples in
        # every layout.
        batches = [batch_for_step(self.valid_data, i, t.micro_batch_size, t.micro_batch_size)[0]
                   for i in range(self.dp_rank, t.eval_batches, self.dp_size)]
        result = evaluate(self.model, batches, self.device, self.autocast)
        if result:
            self.logger.log(self.state.step, result, kind="valid")
            penalty = f"  penalty {result['penalty']:.4f}" if result.get("penalty") else ""
            self.logger.print(
                f"validation at step {self.state.step}: LM loss {result['loss']:.4f}  ppl "
                f"{result['ppl']:.2f}{penalty}  expected steps "
                f"{result.get('expected_steps', float('nan')):.2f}"
                f"  pruned {result.get('pruned_share', float('nan')):.1%}  inference FLOPs "
                f"{result['inference_flops_vs_vanilla']:.2f}x vanilla")
        return result

    def train(self) -> int:
        t = self.cfg.train
        tokens_per_step = t.global_batch_size * self.cfg.data.seq_length
        window: list[dict] = []
        step_s = 0.0
        start = time.perf_counter()
        first_step = self.state.step
        try:
            while self.state.step < t.steps:
                reason = agree_on_stop(self.stop.check(step_s + self.last_save_s))
                if reason:
                    return self._stop(reason)
                tic = time.perf_counter()
                result = self._train_step(self.state.step)
                step_s = time.perf_counter() - tic
                result.update(step_s=step_s, lr=self.scheduler.get_last_lr()[0])
                window.append(result)
                self.state.step += 1
                step = self.state.step
                if step % t.log_interval == 0 or step == t.steps:
                    self._log(window, tokens_per_step, start, first_step)
                    window = []
                if step % t.eval_interval == 0 and step < t.steps:
                    self.evaluate()
                if step % t.save_interval == 0 or step == t.steps:
                    self.save_unless_streak()
                if t.exit_interval and step % t.exit_interval == 0 and step < t.steps:
                    return self._stop(f"train.exit_interval={t.exit_interval}")
            if self.state.consecutive_skips:
                raise NonFiniteError(
                    f"the run ended in a streak of {self.state.consecutive_skips} non-finite "
                    f"steps (within train.max_nonfinite_skips={t.max_nonfinite_skips}), so its "
                    f"final state was not saved; {self._resume_point()}")
            final = self.evaluate()
            self.logger.log(self.state.step, {"final": True, **final}, kind="final")
            return EXIT_DONE
        finally:
            self.stop.restore()
            self.logger.close()
            if self.run_lock is not None:
                self.run_lock.release()

    def _stop(self, reason: str) -> int:
        self.logger.print(f"stopping at step {self.state.step}: {reason}")
        # Step 0 is the seed's initialisation: nothing to save (a signal during start-up).
        if self.state.step > 0 and self.checkpointer.latest_step() != self.state.step:
            self.save_unless_streak()
        self.logger.print(f"exit code {EXIT_REQUEUE}: run the same command to resume")
        return EXIT_REQUEUE

    def _log(self, window: list[dict], tokens_per_step: int, start: float, first_step: int) -> None:
        t = self.cfg.train
        n = len(window)
        seconds = sum(r["step_s"] for r in window)
        metrics = {
            "loss": sum(r["loss"] for r in window) / n,
            "lr": window[-1]["lr"],
            "grad_norm": window[-1]["grad_norm"],
            "tokens_per_s": tokens_per_step * n / seconds,
            "mfu": mfu(sum(r["flops"] for r in window), seconds, self.peak, self.model_parallel_size),
            "step_s": seconds / n,
            "jacobi": window[-1]["jacobi"],
            "skipped_steps": self.state.skipped_steps,
        }
        for key in ("penalty", "expected_steps", "router_entropy", "pruned_share", "pipeline_bubble"):
            if key in window[-1]:
                metrics[key] = sum(r[key] for r in window) / n
        self.logger.log(self.state.step, metrics)
        done = self.state.step - first_step
        eta = (time.perf_counter() - start) / max(done, 1) * (t.steps - self.state.step)
        ponder = (f" | E[steps] {metrics['expected_steps']:.2f} | entropy "
                  f"{metrics['router_entropy']:.3f}" if "expected_steps" in metrics else "")
        if "pipeline_bubble" in metrics:
            ponder += f" | bubble {metrics['pipeline_bubble']:.0%}"
        penalty = f" + penalty {metrics['penalty']:.4f}" if "penalty" in metrics else ""
        mfu_text = "n/a" if metrics["mfu"] is None else f"{metrics['mfu']:.1%}"  # unknown GPU
        self.logger.print(
            f"step {self.state.step:>6d}/{t.steps} | loss {metrics['loss']:.4f}{penalty} | lr "
            f"{metrics['lr']:.2e} | gnorm {metrics['grad_norm']:.3f} | "
            f"{metrics['tokens_per_s']:,.0f} tok/s | MFU {mfu_text} | J "
            f"{metrics['jacobi']}{ponder} | eta {eta / 60:.1f} min")
