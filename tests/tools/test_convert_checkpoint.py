"""tools/convert_checkpoint.py: HF import round trip (exact), TP x PP resharding (exact)."""

import sys
from pathlib import Path

import pytest
import torch

from checkpoints import make_checkpoint, tiny_tool_config
from megatron_ponder.inference.model_loading import load_model
from megatron_ponder.model import build_model
from megatron_ponder.parallel import initialize_parallel
from megatron_ponder.run.checkpoint_read import checkpoint_config

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))
import convert_checkpoint as convert_tool  # noqa: E402
import export_hf as export_tool  # noqa: E402


def parameters(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", ["ponderlm3", "vanilla"])
def test_hf_export_imports_back_exactly(tmp_path, tool_tokenizer, method):
    run, model = make_checkpoint(tmp_path, tool_tokenizer, method=method, k=0 if method == "vanilla" else 3)
    before = parameters(model)
    assert export_tool.main([str(run), str(tmp_path / "hf")]) == 0
    assert convert_tool.main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "back"), "--step", "4"]) == 0
    back, cfg = load_model(tmp_path / "back", device="cpu")
    assert cfg == checkpoint_config(run)
    after = parameters(back)
    assert before.keys() == after.keys()
    for name in before:
        if method == "vanilla" and name == "decoder.embedding.weight":
            # Llama has no embedding multiplier: the export folds sqrt(2.5 H) in; one rounding.
            assert torch.allclose(before[name], after[name], rtol=2.5e-7, atol=0)
        else:
            assert torch.equal(before[name], after[name]), name
    # And it is a trainer checkpoint: the data position and schedule travel with it.
    from megatron.core import dist_checkpointing
    common = dist_checkpointing.load_common_state_dict(str(tmp_path / "back/checkpoints/step_0000004"))
    assert common["train_state"]["step"] == 4


def test_import_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    assert convert_tool.main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert "not written by tools/export_hf.py" in capsys.readouterr().err


def trained_run(root: Path, tokenizer: str) -> Path:
    """A TP-1 run at step 2 whose AdamW moments and schedule have moved (two real steps), so
    the round trip is checked on non-trivial optimizer state too."""
    from megatron_ponder.config import config_to_dict
    from megatron_ponder.run.checkpoint_write import Checkpointer
    from megatron_ponder.training.engines import build_engine
    from megatron_ponder.training.optim import build_scheduler

    cfg = tiny_tool_config(tokenizer)
    initialize_parallel(cfg)
    model = build_model(cfg)
    engine = build_engine(cfg, model)
    scheduler = build_scheduler(engine.optimizer, cfg.train)
    tokens = torch.randint(0, 512, (2, 17), generator=torch.Generator().manual_seed(0))
    for step in range(2):
        loss, _ = model.loss(model(tokens[:, :-1], step=step), tokens[:, 1:])
        engine.backward(loss)
        engine.step(loss_is_finite=True)
        scheduler.step()
        engine.zero_grad()
    Checkpointer(root / "checkpoints", keep=1).save(2, engine, scheduler,
                                                    {"step": 2, "consecutive_skips": 0,
                                                     "skipped_steps": 0}, config_to_dict(cfg))
    return root


def contents(run: Path) -> dict[str, torch.Tensor]:
    """Everything a resume restores, loaded in this process (TP 1): parameters, AdamW moments
    per parameter, AdamW's step, the schedule position and the train state."""
    from megatron_ponder.run.checkpoint_read import resolve_checkpoint
    from megatron_ponder.run.checkpoint_write import Checkpointer
    from megatron_ponder.training.engines import build_engine
    from megatron_ponder.training.optim import build_scheduler

    cfg = checkpoint_config(run)
    initialize_parallel(cfg)
    model = build_model(cfg)
    engine = build_engine(cfg, model)
    scheduler = build_scheduler(engine.optimizer, cfg.train)
    path = resolve_checkpoint(run)
    common = Checkpointer(path.parent, keep=1).load(int(path.name.split("_")[1]), engine, scheduler)
    out = parameters(model)
    for name, param in model.named_parameters():
        for moment in ("exp_avg", "exp_avg_sq"):
            out[f"{moment}.{name}"] = engine.optimizer.state[param][moment].clone()
        out[f"adam_step.{name}"] = engine.optimizer.state[param]["step"].clone()
    out["scheduler_epoch"] = torch.tensor(scheduler.last_epoch)
    out["train_step"] = torch.tensor(common["train_state"]["step"])
    return out


def test_reshard_tp2_pp2_to_tp1_and_back_is_exact(tmp_path, tool_tokenizer):
    from megatron.core import dist_checkpointing

    original = contents(trained_run(tmp_path / "tp1_original", tool_tokenizer))
    assert original["exp_avg_sq.decoder.router.net.weight"].abs().max() > 0  # moments moved
    layouts = [("tp2pp2", 2, 2), ("tp1", 1, 1), ("tp2pp2_again", 2, 2)]
    source = tmp_path / "tp1_original"
    for name, tp, pp in layouts:
        assert convert_tool.main(["reshard", str(source), str(tmp_path / name), "--tensor-parallel",
                                  str(tp), "--pipeline-parallel", str(pp)]) == 0
        common = dist_checkpointing.load_common_state_dict(str(tmp_path / name / "checkpoints/step_0000002"))
        assert common["world_size"] == tp * pp  # written by that many ranks
        assert (common["config"]["parallel"]["tensor_model_parallel_size"],
                common["config"]["parallel"]["pipeline_model_parallel_size"]) == (tp, pp)
        back = contents(tmp_path / name)
        assert back.keys() == original.keys()
        for key in original:
            assert torch.equal(original[key], back[key]), (name, key)
        source = tmp_path / name


def test_reshard_refuses_a_layout_the_model_does_not_divide(tmp_path, tool_tokenizer, capsys):
    run, _ = make_checkpoint(tmp_path, tool_tokenizer)  # 2 layers, 2 query groups
    assert convert_tool.main(["reshard", str(run), str(tmp_path / "pp4"), "--tensor-parallel", "1",
                              "--pipeline-parallel", "4"]) == 2
    assert "model.num_layers" in capsys.readouterr().err
    assert not (tmp_path / "pp4").exists()
