"""Does compute follow the token? Per-token pondering steps of a PonderLM-3 checkpoint against
token frequency, token class, position and router entropy (tools/ponder_analysis.py).

Per scored position t (the token x_t whose slots ponder before predicting x_{t+1}):
- expected steps E[steps] = sum_{k>=1} w_{t,k} from the soft (training-style) forward,
- executed steps K_hat_t at each tau from the hard forward (what inference runs),
- the router's entropy H(s_t) (nats) and the next-token loss -log p(x_{t+1}).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
import torch

# piece_text: a sentencepiece piece as text (what Tokenizer.token_text gives for one).
from megatron_ponder.data.indexed import check_indexed_prefix
from megatron_ponder.data.tokenizer import piece_text  # noqa: F401
from megatron_ponder.inference.scoring import hard_forward
from megatron_ponder.ponder.loss import expected_steps_per_token

CLASSES = ("word start", "word continuation", "punctuation", "digits", "whitespace", "other")


@dataclass
class TokenSteps:
    """One entry per scored position (flattened [sequences x length])."""

    token: np.ndarray  # int64 token ids
    position: np.ndarray  # 0-based position in the sequence
    expected: np.ndarray  # E[steps], soft forward
    executed: dict[float, np.ndarray]  # tau -> K_hat_t, hard forward
    entropy: np.ndarray  # router entropy, nats
    loss: np.ndarray  # next-token NLL, soft forward


@torch.no_grad()
def token_steps(model, batches: list[dict], taus: list[float]) -> TokenSteps:
    parts = {key: [] for key in ("token", "position", "expected", "entropy", "loss")}
    executed = {tau: [] for tau in taus}
    # The method at each tau (taus checked by the caller, tools/ponder_analysis.py, once).
    methods = {tau: model.method.with_tau(tau) for tau in taus}
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            tokens, labels = batch["tokens"], batch["labels"]
            soft = model(tokens)
            log_s = soft.log_s
            parts["token"].append(tokens.flatten())
            parts["position"].append(torch.arange(tokens.shape[1]).expand_as(tokens).flatten())
            parts["expected"].append(expected_steps_per_token(soft.log_w).flatten())
            parts["entropy"].append(-(log_s.exp() * log_s).sum(-1).transpose(0, 1).flatten())
            parts["loss"].append(model.decoder.cross_entropy(soft.logits, labels).flatten())
            for tau, method in methods.items():
                output = hard_forward(model, tokens, method=method)
                executed[tau].append(output.kept_steps(method.tau).flatten())
    finally:
        model.train(was_training)
    as_numpy = {key: torch.cat(values).double().numpy() for key, values in parts.items()}
    return TokenSteps(as_numpy["token"].astype(np.int64), as_numpy["position"].astype(np.int64),
                      as_numpy["expected"], {t: torch.cat(v).numpy() for t, v in executed.items()},
                      as_numpy["entropy"], as_numpy["loss"])


def token_class(text: str, previous: str | None, special: bool = False) -> str:
    """One of CLASSES for a token's text, given the previous token's text (None at a
    sequence start). A letter-led token begins a word when it starts with a space or follows
    whitespace (a line start has no space piece)."""
    core = text.strip(" ")
    if special:
        return "other"
    if not core.strip():
        return "whitespace"
    if all(c.isdigit() for c in core):
        return "digits"
    if all(unicodedata.category(c)[0] in "PS" for c in core):
        return "punctuation"
    if core[0].isalpha():
        starts = text.startswith(" ") or previous is None or not previous.strip(" ") \
            or previous[-1].isspace()
        return "word start" if starts else "word continuation"
    return "other"


def classify(tokens: np.ndarray, position: np.ndarray, texts: list[str],
             specials: set[int]) -> np.ndarray:
    """Class of every position; tokens and position flattened in sequence order."""
    out = []
    for i, (token, pos) in enumerate(zip(tokens.tolist(), position.tolist())):
        previous = None if pos == 0 or tokens[i - 1] in specials else texts[tokens[i - 1]]
        out.append(token_class(texts[token], previous, token in specials))
    return np.array(out)


def corpus_frequency(prefixes: list[str], vocab_size: int, max_tokens: int = 20_000_000) -> np.ndarray:
    """Occurrences per million tokens of every id over the first max_tokens of each corpus."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for prefix in prefixes:
        info = check_indexed_prefix(prefix)
        tokens = np.memmap(f"{prefix}.bin", dtype=info.dtype, mode="r",
                           shape=(min(info.num_tokens, max_tokens),))
        counts += np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    return counts / max(counts.sum(), 1) * 1e6


def _group_rows(labels: np.ndarray, order: list, steps: TokenSteps, describe=str) -> list[dict]:
    rows = []
    for label in order:
        mask = labels == label
        if not mask.any():
            continue
        rows.append({"group": describe(label), "count": int(mask.sum()),
                     "expected_steps": float(steps.expected[mask].mean()),
                     **{f"executed@{tau:g}": float(v[mask].mean()) for tau, v in steps.executed.items()},
                     "router_entropy": float(steps.entropy[mask].mean()),
                     "loss": float(steps.loss[mask].mean())})
    return rows


def _quantile_bins(values: np.ndarray, bins: int) -> tuple[np.ndarray, list[str]]:
    """Equal-count bins of values (ties stay together); labels give each bin's range."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    names = [f"{edges[i]:.3g}-{edges[i + 1]:.3g}" for i in range(len(edges) - 1)]
    return index, names


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def identity_share(token: np.ndarray, values: np.ndarray) -> float:
    """Share of the variance of values explained by the token id (eta squared): 1 if every
    occurrence of a token gets the same steps, 0 if the token says nothing."""
    total = values.var()
    if total == 0:
        return float("nan")
    ids, inverse = np.unique(token, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return float(((means[inverse] - values.mean()) ** 2).mean() / total)


def summarize(steps: TokenSteps, texts: list[str], specials: set[int], frequency: np.ndarray,
              k: int, seq_length: int, top: int = 12, min_count: int = 20) -> dict:
    """The tables of the analysis (JSON-ready)."""
    classes = classify(steps.token, steps.position, texts, specials)
    log_freq = np.log10(frequency[steps.token] + 1e-9)
    freq_bin, freq_names = _quantile_bins(log_freq, 10)
    entropy_bin, entropy_names = _quantile_bins(steps.entropy, 5)
    loss_bin, loss_names = _quantile_bins(steps.loss, 5)
    width = max(seq_length // 8, 1)
    position_bin = steps.position // width
    per_token = []
    for token in np.unique(steps.token):
        mask = steps.token == token
        if mask.sum() >= min_count:
            per_token.append({"token": int(token), "text": texts[token], "count": int(mask.sum()),
                              "per_million": float(frequency[token]),
                              "expected_steps": float(steps.expected[mask].mean())})
    per_token.sort(key=lambda r: r["expected_steps"])
    executed_hist = {f"{tau:g}": np.bincount(v.astype(np.int64), minlength=k + 1).tolist()
                     for tau, v in steps.executed.items()}
    return {
        "positions": int(steps.token.size), "k": k,
        "overall": {
            "expected_steps_mean": float(steps.expected.mean()),
            "expected_steps_std": float(steps.expected.std()),
            "expected_steps_p05_p50_p95": np.quantile(steps.expected, [0.05, 0.5, 0.95]).tolist(),
            "executed_steps_mean": {f"{t:g}": float(v.mean()) for t, v in steps.executed.items()},
            "executed_steps_histogram": executed_hist,
            "router_entropy_mean": float(steps.entropy.mean()),
            "token_identity_share_of_variance": identity_share(steps.token, steps.expected),
            "spearman_expected_steps_vs": {
                "log_frequency": _spearman(steps.expected, log_freq),
                "router_entropy": _spearman(steps.expected, steps.entropy),
                "next_token_loss": _spearman(steps.expected, steps.loss),
                "position": _spearman(steps.expected, steps.position.astype(float)),
            },
        },
        "by_frequency_decile": _group_rows(freq_bin, list(range(len(freq_names))), steps,
                                           lambda i: f"{i + 1} (10^{freq_names[i]} per M)"),
        "by_class": _group_rows(classes, list(CLASSES), steps),
        "by_position": _group_rows(position_bin, sorted(set(position_bin.tolist())), steps,
                                   lambda i: f"{i * width}-{i * width + width - 1}"),
        "by_router_entropy": _group_rows(entropy_bin, list(range(len(entropy_names))), steps,
                                         lambda i: entropy_names[i]),
        "by_next_token_loss": _group_rows(loss_bin, list(range(len(loss_names))), steps,
                                          lambda i: loss_names[i]),
        "fewest_steps": per_token[:top], "most_steps": per_token[::-1][:top],
    }
