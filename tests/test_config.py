"""Proof 8: bad configuration fails before any allocation, naming the field and what is valid."""

import pytest
import torch

from factories import tiny_config
from megatron_ponder.config import ConfigError, config_from_dict, load_config
from megatron_ponder.model import ponder_lm


@pytest.mark.parametrize("override, field, valid", [
    ("ponder.k=-1", "ponder.k", ">= 0"),
    ("ponder.tau=0", "ponder.tau", "strictly between 0 and 1"),
    ("ponder.tau=1.5", "ponder.tau", "strictly between 0 and 1"),
    ("ponder.method=ponderlm9", "ponder.method", "vanilla, ponderlm1, ponderlm2, loop, pause, ponderlm3"),
    ("ponder.attention_backend=cudnn", "ponder.attention_backend", "reference, augmented, flex"),
    ("parallel.tensor_model_parallel_size=3", "model.num_attention_heads",
     "divisible by parallel.tensor_model_parallel_size=3"),
    ("ponder.latent_init=zeros", "ponder.latent_init", "growth, copy"),
    ("ponder.jacobi_train=[]", "ponder.jacobi_train", "non-empty"),
    ("parallel.engine=fsdp", "parallel.engine", "megatron, deepspeed"),
    ("parallel.zero_stage=2", "parallel.zero_stage", "need parallel.engine=deepspeed"),
])
def test_bad_field_is_named_with_valid_values(override, field, valid, monkeypatch):
    built = []
    monkeypatch.setattr(ponder_lm.PonderLM, "__init__", lambda *a, **k: built.append(1))
    with pytest.raises(ConfigError) as err:
        tiny_config(overrides=[override])
    assert field in str(err.value) and valid in str(err.value)
    assert not built  # rejected while parsing: no model, no tensor was allocated


@pytest.mark.parametrize("stage", [0, 4])
def test_deepspeed_needs_a_zero_stage_from_1_to_3(stage):
    with pytest.raises(ConfigError, match="parallel.zero_stage.*must be 1, 2 or 3"):
        tiny_config(overrides=["parallel.engine=deepspeed", f"parallel.zero_stage={stage}"])
    assert tiny_config(overrides=["parallel.engine=deepspeed", "parallel.zero_stage=3"])
    with pytest.raises(ConfigError, match="parallel.pipeline_model_parallel_size=2.*must be 1"):
        tiny_config(overrides=["parallel.engine=deepspeed", "parallel.zero_stage=1",
                               "parallel.pipeline_model_parallel_size=2"])


def test_force_megatron_engine_is_a_switch_of_the_megatron_engine():
    with pytest.raises(ConfigError, match="parallel.force_megatron_engine='always' has the wrong "
                                          "type: expected bool"):
        tiny_config(overrides=["parallel.force_megatron_engine=always"])
    with pytest.raises(ConfigError, match="parallel.force_megatron_engine=True.*needs "
                                          "parallel.engine=megatron"):
        tiny_config(overrides=["parallel.force_megatron_engine=true", "parallel.engine=deepspeed",
                               "parallel.zero_stage=1"])
    assert tiny_config(overrides=["parallel.force_megatron_engine=true"]).parallel.force_megatron_engine


def test_compile_is_a_switch_that_refuses_zero_3():
    with pytest.raises(ConfigError, match="train.compile='fast' has the wrong type: expected bool"):
        tiny_config(overrides=["train.compile=fast"])
    with pytest.raises(ConfigError, match="train.compile=True.*parallel.zero_stage=3"):
        tiny_config(overrides=["train.compile=true", "parallel.engine=deepspeed",
                               "parallel.zero_stage=3"])
    assert tiny_config(overrides=["train.compile=true", "parallel.engine=deepspeed",
                                  "parallel.zero_stage=2"]).train.compile


def test_build_model_validates_before_touching_parallel_state_or_memory(monkeypatch):
    from megatron_ponder.model import build_model

    cfg = tiny_config()
    cfg.ponder.k = -2  # mutated after parsing: build_model must re-validate
    built = []
    monkeypatch.setattr(ponder_lm.PonderLM, "__init__", lambda *a, **k: built.append(1))
    with pytest.raises(ConfigError, match="ponder.k=-2"):
        build_model(cfg)
    assert not built


def test_sequence_longer_than_position_table_fails_before_the_forward(build, monkeypatch):
    model = build(tiny_config("ponderlm3"))
    embedded = []
    monkeypatch.setattr(model.decoder, "embed", lambda tokens: embedded.append(1))
    too_long = torch.zeros(1, model.cfg.model.max_position_embeddings + 1, dtype=torch.long)
    with pytest.raises(ConfigError, match="model.max_position_embeddings=32"):
        model(too_long)
    assert not embedded


def test_unknown_keys_and_wrong_types_are_named():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) ponder.kk .*valid keys: .*k,"):
        config_from_dict({"ponder": {"kk": 3}})
    with pytest.raises(ConfigError, match=r"model.hidden_size='64' has the wrong type: expected int"):
        config_from_dict({"model": {"hidden_size": "64"}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/recipe.yaml")


def test_dotted_overrides_and_int_to_float():
    cfg = config_from_dict({}, ["ponder.tau=0.01", "model.num_layers=3", "ponder.compute_penalty=1"])
    assert cfg.ponder.tau == 0.01 and cfg.model.num_layers == 3
    assert isinstance(cfg.ponder.compute_penalty, float)


def test_scientific_notation_without_a_dot_is_a_float():
    cfg = config_from_dict({"ponder": {"tau": "1e-3"}}, ["train.lr=3e-4"])
    assert cfg.ponder.tau == 1e-3 and cfg.train.lr == 3e-4
    with pytest.raises(ConfigError, match="ponder.tau='1e-3x' has the wrong type"):
        config_from_dict({"ponder": {"tau": "1e-3x"}})


def test_a_recipe_overrides_its_base_key_by_key(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "root.yaml").write_text(
        "model: {hidden_size: 64, num_layers: 3}\nponder: {jacobi_train: [2, 3], k: 2}\nseed: 9\n")
    (tmp_path / "shared" / "size.yaml").write_text("base: root.yaml\nmodel: {num_layers: 4}\n")
    (tmp_path / "run.yaml").write_text(
        "base: shared/size.yaml\nponder: {jacobi_train: [3], method: vanilla}\n")
    cfg = load_config(tmp_path / "run.yaml", ["model.hidden_size=32"])
    assert (cfg.model.hidden_size, cfg.model.num_layers) == (32, 4)  # override, then the nearest base
    assert (cfg.ponder.k, cfg.ponder.jacobi_train, cfg.ponder.method) == (2, [3], "vanilla")
    assert cfg.seed == 9  # from the root base, two files up the chain


@pytest.mark.parametrize("files, match", [
    ({"run.yaml": "base: missing.yaml\n"}, r"recipe file .*missing.yaml does not exist \(the base of"),
    ({"run.yaml": "base: other.yaml\n", "other.yaml": "base: run.yaml\n"}, "cycle of recipe bases"),
    ({"run.yaml": "base: [a.yaml]\n"}, r"run.yaml: base=\['a.yaml'\] must be the path"),
    ({"run.yaml": "base: b.yaml\n", "b.yaml": "model: {hidden_size: x}\n"},
     r"run.yaml: model.hidden_size='x' has the wrong type"),
])
def test_bad_recipe_bases_are_named(tmp_path, files, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "run.yaml")


def test_every_rope_scaling_the_config_accepts_has_a_frequency_formula():
    from megatron_ponder.config import ROPE_SCALINGS
    from megatron_ponder.model.rope import _FREQUENCY_SCALINGS

    assert set(ROPE_SCALINGS) == set(_FREQUENCY_SCALINGS)


def test_enumerated_settings_are_compared_by_member():
    """No `x.precision == "bf16"`, `recompute != "layers"`, `engine in ("deepspeed", ...)` in
    the package, tools or bench: each choice is one enum (config/choices.py), compared by its
    members, so a value cannot be misspelt in one place and a new value is found by grep."""
    import ast
    from pathlib import Path

    from megatron_ponder.config import Engine, Precision, Recompute, WandbMode

    root = Path(__file__).resolve().parents[1]
    settings = {"precision", "recompute", "engine", "wandb"}
    values = {v for choice in (Precision, Recompute, Engine, WandbMode) for v in choice.values()}

    def name(node):
        return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)

    def literals(node):
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return {item.value for item in items if isinstance(item, ast.Constant)}

    found = [f"{path.relative_to(root)}:{node.lineno}"
             for folder in ("megatron_ponder", "tools", "bench")
             for path in (root / folder).rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Compare)
             if {name(o) for o in (node.left, *node.comparators)} & settings
             and set().union(*(literals(o) for o in (node.left, *node.comparators))) & values]
    assert found == []


def test_every_config_function_is_at_most_25_lines():
    """Issue 24: each section validates itself, split by topic, none in one long function."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "megatron_ponder" / "config"
    long = [f"{path.name}:{node.name} {node.end_lineno - node.lineno + 1} lines"
            for path in sorted(package.glob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 25]
    assert long == []
