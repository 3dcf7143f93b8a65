"""Model transforms (model/transforms.py): the build reads no train.* field; recomputation and
compilation are applied to the built model, recomputation first, so a compiled layer is the
recomputed one. (Numbers: tests/model/test_recompute.py and test_compile.py run through the
same function and assert the losses and gradients.)"""

import ast
import dataclasses
import functools
from pathlib import Path

import pytest
from megatron.core.transformer.transformer_layer import TransformerLayer

import megatron_ponder.model.compile as compile_module
from factories import tiny_config
from megatron_ponder.config import Recompute, TrainConfig
from megatron_ponder.model import build_model
from megatron_ponder.model.recompute import RecomputedTransformerLayer
from megatron_ponder.model.transforms import apply_transforms
from megatron_ponder.parallel import initialize_parallel

MODEL = Path(__file__).resolve().parents[2] / "megatron_ponder" / "model"
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def built(overrides):
    cfg = tiny_config("ponderlm3", 2, overrides)
    initialize_parallel(cfg)
    return build_model(cfg), cfg


def layers(model):
    return list(model.decoder.decoder.layers)


def test_no_model_module_but_the_transforms_reads_a_train_field():
    """`x.train.<field>` anywhere in model/ outside transforms.py (docstrings do not count)."""
    reads = [f"{path.name}:{node.lineno} .train.{node.attr}"
             for path in sorted(MODEL.glob("*.py")) if path.name != "transforms.py"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in TRAIN_FIELDS
             and isinstance(node.value, ast.Attribute) and node.value.attr == "train"]
    assert reads == []


@pytest.mark.parametrize("recompute", [Recompute.LAYERS, Recompute.PASSES])
def test_the_build_is_the_same_for_every_recompute_mode(recompute):
    plain, _ = built([])
    model, cfg = built([f"train.recompute={recompute}", "train.compile=true"])
    assert [type(layer) for layer in layers(model)] == [TransformerLayer] * 2
    assert not model.decoder.recompute_passes
    assert "forward" not in vars(layers(model)[0])  # not compiled by the build
    assert model.state_dict().keys() == plain.state_dict().keys()
    apply_transforms(model, cfg.train)
    assert model.decoder.recompute_passes == (recompute == Recompute.PASSES)
    expected = RecomputedTransformerLayer if recompute == Recompute.LAYERS else TransformerLayer
    assert [type(layer) for layer in layers(model)] == [expected] * 2
    assert model.state_dict().keys() == plain.state_dict().keys()  # checkpoints do not notice


def test_recompute_comes_before_compile():
    """Each layer runs the compiled forward of its recomputed class: compiled first, it would
    run TransformerLayer's compiled forward and recompute nothing."""
    model, cfg = built(["train.recompute=layers", "train.compile=true"])
    apply_transforms(model, cfg.train)
    for layer in layers(model):
        forward = vars(layer)["forward"]
        assert isinstance(forward, functools.partial) and forward.args[1] is layer
        assert forward.args[0] is compile_module._compiled(RecomputedTransformerLayer)


def test_fused_kernels_are_not_compiled_but_recomputed():
    model, cfg = built(["train.recompute=layers", "train.compile=true"])
    apply_transforms(model, cfg.train, fused_kernels=True)
    assert all("forward" not in vars(layer) for layer in layers(model))
    assert all(type(layer) is RecomputedTransformerLayer for layer in layers(model))
