"""The plotting tool on a fixture of records: valid PNG/SVG, the frontier, the fit, and
refusal of records that cannot be compared."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image
import pytest
from sweep_files import fake_record, fixture_records, modified

from megatron_ponder.sweeps.matching import matches
from megatron_ponder.sweeps.pareto import aggregate, fit_scaling_law, pareto_frontier
from megatron_ponder.sweeps.plots import markdown_table
from megatron_ponder.sweeps.records import SCHEMA, RecordError, check_record

REPO = Path(__file__).resolve().parents[2]
PLOT = [sys.executable, str(REPO / "tools" / "plot_pareto.py")]


def _write(directory: Path, records: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for record in records:
        (directory / f"{record['run_id']}.json").write_text(json.dumps(record))
    return directory


def test_plot_tool_writes_valid_png_svg_table_and_fit(tmp_path):
    records = _write(tmp_path / "records", fixture_records())
    result = subprocess.run(PLOT + [str(records), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "read 14 records" in result.stdout
    for stem in ("pareto", "scaling"):
        png = tmp_path / "out" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 300 and image.shape[1] > 300
        root = ET.parse(tmp_path / "out" / f"{stem}.svg").getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    table = (tmp_path / "out" / "table.md").read_text()
    # vanilla s2 at seeds 1, 2: loss 3.5 -+ 0.01 -> ppl mean and half range
    ppl = [math.exp(3.49), math.exp(3.51)]
    assert (f"| s2 | vanilla | 0 | 0 | - | - | {sum(ppl) / 2:.2f} +- {(ppl[1] - ppl[0]) / 2:.2f} |"
            in table)
    assert len(table.splitlines()) == 2 + 4 + 2 + 3  # header + vanilla, ponderlm2, ponderlm3
    (fit,) = json.loads((tmp_path / "out" / "scaling_fit.json").read_text())
    # The fixture is L = 2 + 3 (N / 1e4)^-0.5 with +-0.01 seed offsets that cancel per size.
    assert fit["e"] == pytest.approx(2.0, abs=1e-3)
    assert fit["alpha"] == pytest.approx(0.5, abs=1e-3)
    assert fit["x_scale"] == 5_000 and fit["a"] == pytest.approx(3.0, rel=1e-3)  # x = N / 2
    assert max(abs(r) for r in fit["residuals"]) == pytest.approx(0.01, abs=1e-3)


def test_frontier_keeps_only_undominated_points():
    points = aggregate(fixture_records())
    frontier = pareto_frontier(points)
    for point in points:
        dominated = any(f.flops_per_token <= point.flops_per_token and f.ppl < point.ppl
                        for f in frontier)
        assert dominated or point in frontier
    assert [p.flops_per_token for p in frontier] == sorted(p.flops_per_token for p in frontier)
    assert all(a.ppl > b.ppl for a, b in zip(frontier, frontier[1:]))


def test_fit_needs_three_sizes():
    records = [r for r in fixture_records() if r["point"]["size"] in ("s1", "s2")]
    assert fit_scaling_law(records) == []


@pytest.mark.parametrize("change, field", [
    (dict(validation__ppl=99.0), "validation.ppl"),
    (dict(inference__0__flops_vs_vanilla=3.0), "inference[0].flops_vs_vanilla"),
    (dict(inference__0__executed_steps=7.0), "inference[0].executed_steps"),
    (dict(training__tokens=5), "training.tokens"),
    (dict(sweep="other"), "sweep="),
    (dict(schema=SCHEMA + 1), "schema"),
    (dict(schema=1), "upgrade_schema_1"),
])
def test_plot_tool_refuses_inconsistent_records(tmp_path, change, field):
    records = fixture_records()
    records[3] = modified(records[3], **change)
    directory = _write(tmp_path / "records", records)
    result = subprocess.run(PLOT + [str(directory), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {directory / records[3]['run_id']}.json")
    assert field in result.stderr
    assert not (tmp_path / "out" / "pareto.png").exists()


def test_seeds_with_different_taus_and_repeated_runs_are_refused():
    records = fixture_records()
    ponderlm3 = [i for i, r in enumerate(records) if r["point"]["method"] == "ponderlm3"]
    records[ponderlm3[1]] = fake_record("s2", "ponderlm3", 2, 0.0, 2, 3.0, 240_000.0, 40_100,
                                        taus=(1e-4, 0.2, 0.5))
    with pytest.raises(RecordError, match=r"inference\[\]\.tau"):
        aggregate(records)
    with pytest.raises(RecordError, match="repeats"):
        aggregate(fixture_records() + [fixture_records()[0]])
    with pytest.raises(RecordError, match="ppl"):
        check_record(modified(fixture_records()[0], validation__ppl=1.0), "r.json")


def test_table_rows_follow_model_size_not_the_size_name():
    records = [fake_record(size, "vanilla", 0, 0.0, 1, 3.0, 2.0 * params, params)
               for size, params in (("h128", 500_000), ("h32", 60_000), ("h64", 170_000))]
    rows = markdown_table(aggregate(records)).splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == ["h32", "h64", "h128"]


def test_matching_ponderlm3_to_ponderlm2_by_hand():
    """The fixture's PonderLM-3 (K 2, tau entries at 2, 1, 0 steps: FLOPs 240k, 160k, 80k,
    loss 3.05 / 3.10 / 3.15 + seed offset -+0.01) against PonderLM-2 K1 (loss 3.2, 160k)
    and K2 (3.1, 240k); vanilla over four sizes."""
    e = math.exp
    rows = {m.k: m for m in matches(fixture_records())}
    k1, k2 = rows[1], rows[2]
    assert k1.target_ppl == pytest.approx((e(3.19) + e(3.21)) / 2, rel=1e-12)
    # Even PonderLM-3's cheapest point (0 steps, 80k) beats K1's ppl: an upper bound.
    assert k1.ratios == [pytest.approx(0.5, rel=1e-12)] * 2 and k1.bound
    target = (e(3.09) + e(3.11)) / 2
    seed1 = 80e3 + 80e3 * (e(3.14) - target) / (e(3.14) - e(3.09))
    seed2 = 160e3 + 80e3 * (e(3.11) - target) / (e(3.11) - e(3.06))
    assert k2.ratios == [pytest.approx(seed1 / 240e3, rel=1e-12),
                         pytest.approx(seed2 / 240e3, rel=1e-12)] and not k2.bound
    # Vanilla (seed means): s2 at 80k, ppl e^3.5 (+-0.01); s3 at 320k, e^2.75.
    v2, v3 = (e(3.49) + e(3.51)) / 2, (e(2.74) + e(2.76)) / 2
    vanilla = 80e3 + 240e3 * (v2 - target) / (v2 - v3)
    assert k2.vanilla_ratio == pytest.approx(vanilla / 240e3, rel=1e-12)
    assert k2.config == "lambda 0" and k2.best_ppl == pytest.approx((e(3.04) + e(3.06)) / 2)
