"""Contrastive losses of the NAR encoder and of the GNN baselines.

* :func:`supcon_loss` -- graph level, supervised contrastive over family labels (the encoder's
  graph-level loss and the GCN/GAT baselines' only loss).
* :func:`motif_info_nce` -- motif level: a motif embedding against its own context embedding
  (positive) and the other motifs' contexts in the batch (negatives). Negatives with the same
  motif pattern (``type_ids``) are masked out: two copies of a ResNet bottleneck in one batch
  are not a contrast the encoder should learn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["motif_info_nce", "supcon_loss"]


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, found {temperature}")


def supcon_loss(emb: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the "L_out" form).

    For each anchor ``i`` with at least one positive (another row with the same label):
    ``-mean_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) )``; averaged over
    those anchors. Rows are L2-normalised inside.

    Args:
        emb: ``[B, D]`` embeddings.
        labels: ``[B]`` integer labels.
        temperature: softmax temperature ``T`` (> 0).

    Returns:
        Scalar tensor; ``0`` (still attached to the graph) when no anchor has a positive.

    Raises:
        ValueError: shapes disagree or ``temperature`` <= 0.
    """
    if emb.dim() != 2 or labels.shape != (emb.shape[0],):
        raise ValueError(f"expected emb [B, D] and labels [B], found {tuple(emb.shape)} and "
                         f"{tuple(labels.shape)}")
    _check_temperature(temperature)
    z = F.normalize(emb, dim=1)
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(dim=1)
    valid = n_pos > 0
    if not bool(valid.any()):
        return emb.sum() * 0.0
    per_anchor = -log_prob.masked_fill(~pos, 0.0).sum(dim=1) / n_pos.clamp(min=1)
    return per_anchor[valid].mean()


def motif_info_nce(
    motif: torch.Tensor,
    context: torch.Tensor,
    temperature: float = 0.2,
    type_ids: torch.Tensor | None = None,
    max_items: int | None = 1024,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE: ``motif[i]`` should match ``context[i]`` against every other
    ``context[j]`` (in-batch negatives), and the other way round. Rows are L2-normalised inside.

    Args:
        motif: ``[C, D]`` motif embeddings (Fs).
        context: ``[C, D]`` context embeddings (Fc), row-aligned with ``motif``.
        temperature: softmax temperature (> 0).
        type_ids: ``[C]`` pattern ids; off-diagonal pairs with equal ids are not negatives.
        max_items: subsample at most this many rows (the logits matrix is ``C x C``).
        generator: generator for the subsample (deterministic training).

    Returns:
        Scalar tensor (mean of the two cross-entropies); ``0`` attached to the graph when
        ``C < 2``.

    Raises:
        ValueError: shapes disagree or ``temperature`` <= 0.
    """
    if motif.dim() != 2 or motif.shape != context.shape:
        raise ValueError(f"expected two [C, D] tensors of one shape, found {tuple(motif.shape)} "
                         f"and {tuple(context.shape)}")
    _check_temperature(temperature)
    c = motif.shape[0]
    if c < 2:
        return motif.sum() * 0.0 + context.sum() * 0.0
    if max_items is not None and c > max_items:
        keep = torch.randperm(c, generator=generator)[:max_items].to(motif.device)
        motif, context = motif[keep], context[keep]
        type_ids = type_ids[keep] if type_ids is not None else None
        c = max_items
    logits = F.normalize(motif, dim=1) @ F.normalize(context, dim=1).T / temperature
    if type_ids is not None:
        same = type_ids[:, None] == type_ids[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(c, device=motif.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
