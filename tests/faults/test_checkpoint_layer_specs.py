"""Checkpoints across layer specs (issue 20, defect 6): a local-spec checkpoint (CPU runs, HF
imports, convert_checkpoint) resumes on Transformer Engine's spec and back. TE's modules carry
`_extra_state` (FP8 metadata) that the local ones lack, e.g. its SwiGLU op at
`mlp.activation_func`; here a stand-in SwiGLU with extra state plays that part on CPU, through
the trainer's resume and the tools' load path (megatron dist_checkpointing both)."""

from __future__ import annotations

import shutil

import pytest
import torch

from megatron_ponder.model import spec as layer_spec
from megatron_ponder.model.swiglu import SwiGLU

# Where Transformer Engine runs, the trainer builds its spec (no local SwiGLU to stand in for it):
# there bench/gpu_runs.py's te_load scenario resumes a CPU checkpoint on the real one.
pytestmark = pytest.mark.skipif(layer_spec.fused_kernels_available(torch.device("cuda")),
                                reason="Transformer Engine's own spec is used on this machine")


class SwiGLUWithExtraState(SwiGLU):
    """The local SwiGLU with extra state, as TE's activation op has (a tensor of its FP8 meta)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra = torch.tensor([0.0])
        self.loaded = []  # what set_extra_state was given, in order

    def get_extra_state(self):
        return self.extra

    def set_extra_state(self, state):
        self.loaded.append(state)
        self.extra = state


def extra_state_modules(model) -> list[SwiGLUWithExtraState]:
    return [m for m in model.modules() if isinstance(m, SwiGLUWithExtraState)]


def weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("_extra_state")}


def test_local_spec_checkpoint_resumes_on_a_spec_with_extra_state_and_back(
        trained, tiny_run, monkeypatch):
    from megatron_ponder.inference.model_loading import load_model
    from megatron_ponder.run.exit_codes import EXIT_DONE
    from megatron_ponder.training.trainer import Trainer

    out, _ = trained  # local spec, saved at step 3
    reference = out.parent / "reference"
    shutil.copytree(out, reference)
    assert Trainer(tiny_run(reference, steps=5, save_interval=5)).train() == EXIT_DONE

    with monkeypatch.context() as te_like:
        te_like.setattr(layer_spec, "SwiGLU", SwiGLUWithExtraState)
        trainer = Trainer(tiny_run(out, steps=5, save_interval=5))  # resumes from step 3
        assert trainer.state.step == 3
        modules = extra_state_modules(trainer.model)
        assert len(modules) == 2 and all(m.loaded == [] for m in modules)  # absent: kept fresh
        for m in modules:
            m.extra = torch.tensor([42.0])  # what a TE run would save
        assert trainer.train() == EXIT_DONE
        # The stand-in computes what SwiGLU does: the resumed run is the local one, bit for bit.
        te_model, _ = load_model(out / "checkpoints" / "step_0000005")
        assert [m.loaded for m in extra_state_modules(te_model)] == [[torch.tensor([42.0])]] * 2

    local_model, _ = load_model(reference / "checkpoints" / "step_0000005")
    back_on_local, _ = load_model(out / "checkpoints" / "step_0000005")  # its extra state ignored
    expected = weights(local_model)
    for model in (te_model, back_on_local):
        got = weights(model)
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


def test_a_required_key_the_checkpoint_lacks_is_still_an_error(trained, monkeypatch):
    """Tolerating `_extra_state` must not tolerate anything else: a new weight is refused."""
    from megatron_ponder.inference.model_loading import load_model
    from megatron_ponder.run.checkpoint_read import CheckpointError

    class SwiGLUWithAWeight(SwiGLU):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.gate_scale = torch.nn.Parameter(torch.ones(1))

    out, _ = trained
    monkeypatch.setattr(layer_spec, "SwiGLU", SwiGLUWithAWeight)
    with pytest.raises(CheckpointError, match="does not fit this model.*gate_scale"):
        load_model(out / "checkpoints" / "step_0000003")
