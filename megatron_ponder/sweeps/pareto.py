"""From run records to what a sweep shows: per-configuration means over seeds, the
perplexity-vs-inference-FLOPs Pareto frontier, and a saturating power-law fit.

Spread over seeds is half the range, (max - min) / 2: with two seeds that is the
distance of each seed from the mean, and nothing subtler can be said of two numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from megatron_ponder.ponder.registry import method_class
from megatron_ponder.sweeps.records import RecordError


@dataclass
class Point:
    """One configuration at one tau, aggregated over its seeds."""

    size: str
    method: str
    k: int
    lam: float
    tau: float | None
    seeds: int
    ppl: float
    ppl_spread: float
    soft_ppl: float
    flops_per_token: float
    flops_vs_vanilla: float
    expected_steps: float
    executed_steps: float
    parameters: int
    variant: str | None = None  # the sweep file's named overlay, if any

    @property
    def label(self) -> str:
        tau = "" if self.tau is None else f" tau {self.tau:g}"
        lam = f" lambda {self.lam:g}" if method_class(self.method).uses_router else ""
        return f"{self.size} {self.method} K{self.k}{lam}{self._variant_text}{tau}"

    @property
    def _variant_text(self) -> str:
        return f" {self.variant}" if self.variant else ""

    @property
    def series(self) -> str:
        """One curve per series: a method with a router, over tau at one size, K, lambda and
        variant; a fixed-step method over K at one size (vanilla: over its sizes)."""
        method = method_class(self.method)
        if method.uses_router:
            return f"{self.size} {self.method} K{self.k} lambda {self.lam:g}{self._variant_text}"
        if not method(k=self.k).latent_steps:
            return self.method + self._variant_text
        return f"{self.size} {self.method}{self._variant_text}"


def _config_key(record: dict) -> tuple:
    """(size, method, k, lambda, variant): a configuration, whose seeds are aggregated."""
    p = record["point"]
    return (p["size"], p["method"], p["k"], float(p["lambda"]), p.get("variant"))


def _mean_spread(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), (max(values) - min(values)) / 2


def check_consistent(records: list[dict]) -> None:
    """Refuse records that cannot be compared; name the file and the field."""
    seen: dict[tuple, str] = {}
    first = records[0]
    tokens_of_size: dict[str, tuple[int, str]] = {}
    for record in records:
        source = record.get("_source", record["run_id"])
        key = _config_key(record) + (record["point"]["seed"],)
        if key in seen:
            raise RecordError(f"{source}: point {record['point']} repeats {seen[key]}")
        seen[key] = source
        if record["sweep"] != first["sweep"]:
            raise RecordError(f"{source}: sweep={record['sweep']!r} differs from "
                              f"{first['sweep']!r} of {first.get('_source')}; plot one sweep at "
                              "a time")
        tokens = record["training"]["tokens"]
        if tokens != first["training"]["tokens"]:
            raise RecordError(f"{source}: training.tokens={tokens} differs from "
                              f"{first['training']['tokens']} of {first.get('_source')}: runs "
                              "must see equal training tokens to be compared")
        size = record["point"]["size"]
        vanilla = record["vanilla_flops_per_token"]
        if size in tokens_of_size and not math.isclose(vanilla, tokens_of_size[size][0],
                                                       rel_tol=1e-9):
            raise RecordError(f"{source}: vanilla_flops_per_token={vanilla} differs from "
                              f"{tokens_of_size[size][0]} of {tokens_of_size[size][1]} at the "
                              f"same size {size!r}")
        tokens_of_size.setdefault(size, (vanilla, source))


def aggregate(records: list[dict]) -> list[Point]:
    """One Point per (configuration, tau), means over seeds; seeds must share their taus."""
    check_consistent(records)
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(_config_key(record), []).append(record)
    points = []
    for (size, method, k, lam, variant), group in groups.items():
        taus = [tuple(e["tau"] for e in r["inference"]) for r in group]
        for record, record_taus in zip(group, taus):
            if record_taus != taus[0]:
                raise RecordError(f"{record.get('_source')}: inference[].tau={list(record_taus)} "
                                  f"differs from {list(taus[0])} of {group[0].get('_source')} "
                                  "(another seed of the same configuration)")
        for i, tau in enumerate(taus[0]):
            entries = [r["inference"][i] for r in group]
            ppl, spread = _mean_spread([e["ppl"] for e in entries])
            points.append(Point(
                size, method, k, lam, tau, len(group), ppl, spread,
                float(np.mean([r["validation"]["ppl"] for r in group])),
                float(np.mean([e["flops_per_token"] for e in entries])),
                float(np.mean([e["flops_vs_vanilla"] for e in entries])),
                float(np.mean([e["expected_steps"] for e in entries])),
                float(np.mean([e["executed_steps"] for e in entries])),
                group[0]["parameters"], variant))
    return sorted(points, key=lambda p: (p.flops_per_token, p.ppl))


def pareto_frontier(points: list[Point]) -> list[Point]:
    """Points no other point beats on both inference FLOPs and perplexity (lower is better)."""
    frontier: list[Point] = []
    for point in sorted(points, key=lambda p: (p.flops_per_token, p.ppl)):
        if not frontier or point.ppl < frontier[-1].ppl:
            frontier.append(point)
    return frontier


def saturating_power_law(x, e, a, alpha):
    """L(x) = E + A x^-alpha; x is scaled to its smallest value before fitting."""
    return e + a * np.power(x, -alpha)


@dataclass
class Fit:
    series: str
    x_name: str
    x_scale: float  # x was divided by this before fitting
    e: float
    a: float
    alpha: float
    stderr: tuple[float, float, float]
    x: list[float]
    loss: list[float]
    residuals: list[float]

    def predict(self, x):
        return saturating_power_law(np.asarray(x, dtype=float) / self.x_scale, self.e, self.a,
                                    self.alpha)


def fit_scaling_law(records: list[dict], x_name: str = "non_embedding_parameters",
                    min_sizes: int = 3) -> list[Fit]:
    """Fit L = E + A (x / x_min)^-alpha (scipy.optimize.curve_fit, least squares on every
    seed's validation loss) for each configuration that was trained at >= min_sizes sizes."""
    from scipy.optimize import curve_fit  # defer: scipy, only when fitting

    series: dict[tuple, list[dict]] = {}
    for record in records:
        method, k, lam, variant = _config_key(record)[1:]
        series.setdefault((method, k, lam, variant), []).append(record)
    fits = []
    for (method, k, lam, variant), group in series.items():
        if len({r["point"]["size"] for r in group}) < min_sizes:
            continue
        x = np.array([_x_value(r, x_name) for r in group], dtype=float)
        loss = np.array([r["validation"]["loss"] for r in group], dtype=float)
        scale = float(x.min())
        guess = (max(loss.min() - 0.5, 0.0), float(loss.max() - loss.min()) + 0.5, 0.5)
        params, cov = curve_fit(saturating_power_law, x / scale, loss, p0=guess,
                                bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, 5.0]), maxfev=20000)
        stderr = tuple(float(s) for s in np.sqrt(np.clip(np.diag(cov), 0, None)))
        residuals = loss - saturating_power_law(x / scale, *params)
        steps = method_class(method)(k=k).latent_steps
        name = f"{method} K{k} lambda {lam:g}" if steps else method
        name += f" {variant}" if variant else ""
        fits.append(Fit(name, x_name, scale, *(float(p) for p in params), stderr,
                        x.tolist(), loss.tolist(), residuals.tolist()))
    return fits


def _x_value(record: dict, x_name: str) -> float:
    if x_name == "training_flops":
        return float(record["training"]["flops"])
    return float(record[x_name])
