"""lm-evaluation-harness runs the export (`lm_eval --model hf ... trust_remote_code=True`) on a
local multiple-choice task; its log-likelihoods equal the project model's hard-masked ones."""

import sys
from pathlib import Path

import torch

from checkpoints import make_checkpoint
from lm_eval_runs import run_lm_eval
from megatron_ponder.inference.scoring import hard_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import export_hf as export_tool  # noqa: E402

TASK_DIR = Path(__file__).with_name("lm_eval_task")
TOL = 1e-4  # fp32 log-likelihood sums over a few tokens


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """As lm-eval splits it: encode context+continuation, the continuation is the tail."""
    whole = tokenizer(context + continuation).input_ids  # BOS (</s>) first
    prefix = len(tokenizer(context).input_ids)
    tokens = torch.tensor([whole[:-1]])
    logp = hard_forward(model, tokens).logits[:, 0].float().log_softmax(-1)
    return sum(logp[i - 1, whole[i]].item() for i in range(prefix, len(whole)))


def arguments(sample) -> list:
    """The (context, continuation) requests lm-eval made for one document, in choice order."""
    args = sample["arguments"]
    return list(args.values()) if isinstance(args, dict) else args


def request_args(arg) -> tuple[str, str]:
    return tuple(arg.values())[:2] if isinstance(arg, dict) else tuple(arg[:2])


def test_lm_eval_harness_scores_the_export(tmp_path, tool_tokenizer):
    run, model = make_checkpoint(tmp_path, tool_tokenizer)
    export = tmp_path / "hf"
    assert export_tool.main([str(run), str(export)]) == 0
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    template = (TASK_DIR / "ponder_tiny_mc.yaml.in").read_text()
    (tasks / "ponder_tiny_mc.yaml").write_text(
        template.replace("__DATA_FILE__", str(TASK_DIR / "ponder_tiny_mc.jsonl")))
    out = tmp_path / "results"
    samples, results = run_lm_eval(export, "ponder_tiny_mc", tasks, out, add_bos_token=True)
    assert len(samples) == 6
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export)
    correct = 0
    for sample in samples:
        doc = sample["doc"]
        expected = [continuation_logprob(model, tokenizer, *request_args(a)) for a in arguments(sample)]
        got = [float(r[0][0]) for r in sample["resps"]]
        assert max(abs(a - b) for a, b in zip(got, expected)) <= TOL, (got, expected)
        correct += int(max(range(len(expected)), key=expected.__getitem__) == doc["answer"])
    assert abs(results["acc,none"] - correct / len(samples)) < 1e-9
