"""tools/show_ponder.py: HTML spans carry the hard rule's steps; a PNG is written."""

import re
import sys
from pathlib import Path

import torch

from checkpoints import make_checkpoint
from megatron_ponder.data.tokenizer import Tokenizer
from megatron_ponder.inference.scoring import hard_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import show_ponder as show_tool  # noqa: E402


def test_html_and_png_show_the_steps(tmp_path, tool_tokenizer, capsys):
    run, model = make_checkpoint(tmp_path, tool_tokenizer)
    text = "The river flows past the old mill.\nIt was a small town & <quiet>."
    assert show_tool.main([str(run), "--text", text, "--output", str(tmp_path / "view")]) == 0
    page = (tmp_path / "view.html").read_text()
    shown = [int(s) for s in re.findall(r'<span title="(\d+) steps?"', page)]
    tok = Tokenizer.load(tool_tokenizer)
    ids = [tok.eod_id] + tok.encode(text)
    expected = hard_forward(model, torch.tensor([ids])).kept_steps(0.05)[0, 1:].tolist()
    assert shown == expected and len(set(shown)) >= 2
    assert "<quiet" not in page and "&lt;" in page and "&amp;" in page  # escaped, not injected
    png = (tmp_path / "view.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert show_tool.main([str(run), "--text", "x", "--output", str(tmp_path / "v2"), "--tau", "0"]) == 2
    assert "tau=0.0 is invalid" in capsys.readouterr().err
