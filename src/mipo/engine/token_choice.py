"""The next token of each row: greedy, or a top-p sample driven by the row's own random stream."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TOP_K_CANDIDATES = 64  # top-p is taken from these first; the full sort runs only where they do not cover p


def pick_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor | None
) -> torch.Tensor:
    """Greedy at ``temperature <= 0``; otherwise a sample from the top-p nucleus of ``softmax(logits / T)``,
    by inverting each row's nucleus CDF at that row's own uniform draw (``uniforms``, shape (B,))."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    # softmax, not exp(x - logsumexp(x)): at low temperature most exp() results are subnormal, which takes
    # logsumexp's exp ~10x longer on a CPU; softmax's fused kernel does not slow down.
    probs = torch.softmax(logits / temperature, dim=-1)  # (B, V)
    k = min(TOP_K_CANDIDATES, probs.shape[-1]) if top_p < 1.0 else probs.shape[-1]
    top_probs, top_ids = probs.topk(k, dim=-1)  # (B, k), sorted high to low
    covered = top_probs.sum(-1) >= top_p
    if not bool(covered.all()):
        # The nucleus is wider than k for some rows: take those rows' full sorted vocabulary.
        wide = (~covered).nonzero().squeeze(-1)
        full_probs, full_ids = probs[wide].sort(dim=-1, descending=True)
        picked = _sample_nucleus(full_probs, full_ids, top_p, uniforms[wide])
        narrow = covered.nonzero().squeeze(-1)
        out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
        out[wide] = picked
        if len(narrow):
            out[narrow] = _sample_nucleus(top_probs[narrow], top_ids[narrow], top_p, uniforms[narrow])
        return out
    return _sample_nucleus(top_probs, top_ids, top_p, uniforms)


def _sample_nucleus(
    sorted_probs: torch.Tensor, sorted_ids: torch.Tensor, top_p: float, uniforms: torch.Tensor
) -> torch.Tensor:
    """Keep the most likely tokens until their mass reaches ``top_p`` (at least one), and pick the token
    where each row's cumulative kept mass first reaches its uniform draw times the kept total."""
    import torch

    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    kept = sorted_probs.masked_fill(mass_before >= top_p, 0.0).double()  # (B, k)
    cumulative = kept.cumsum(-1)
    target = uniforms.to(cumulative.device).unsqueeze(-1) * cumulative[:, -1:]  # (B, 1)
    choice = (cumulative <= target).sum(-1)  # the first bin whose upper edge passes the draw
    last_kept = (kept > 0).sum(-1) - 1  # rounding at the top edge never picks a token outside the nucleus
    choice = torch.minimum(choice, last_kept)
    return sorted_ids.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
