"""Reference log-probabilities for DPO, computed once and cached on disk (TRL users ask for this: trl#3985).

DPO compares the policy with a frozen reference on every pair. The reference never changes, so its
log-probabilities are computed once, before training, with TRL's own ``DPOTrainer.compute_ref_log_probs``
(with LoRA the reference is the model with the adapter disabled; with full fine-tuning, the model before
training). They are stored under ``$MIPO_CACHE/ref_logps/<key>.json``, the key hashing the reference model,
the pairs file's content, the tokens TRL made of it (chat template included), the truncation settings and
the dtype, so a second run or epoch reuses them and any change to those recomputes them.

Why not TRL's own ``precompute_ref_log_probs`` (TRL 1.16)? It computes the same numbers, but inside
``DPOTrainer.__init__`` (before mipo can look in its cache), in dataset order (more padding than longest
first), and it caches them in the ``datasets`` cache under a hash of every weight of the model, LoRA
adapter included (freshly initialised, so a new seed misses), or, for a dataset built in memory as mipo's is,
in a temporary folder deleted at exit: a second run never reuses them. So mipo computes them itself with
TRL's public ``compute_ref_log_probs`` and keeps them on disk; ``mipo.engine.trl_internals`` then tells the
trainer they are there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from mipo.core.files import atomic_write_json
from mipo.engine.models import cache_dir
from mipo.engine.trl_internals import release_reference_model, use_precomputed_reference

log = logging.getLogger(__name__)

ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def token_digest(dataset: Any) -> str:
    """sha256 of the token ids TRL made of the pairs: covers the text, chat template and tokenizer."""
    h = hashlib.sha256()
    for column in ID_COLUMNS:
        for ids in dataset[column]:
            h.update(json.dumps(ids).encode())
        h.update(b"|")
    return h.hexdigest()


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cache_path(key: str) -> Path:
    return cache_dir() / "ref_logps" / f"{key}.json"


def _compute(trainer: Any, batch_size: int) -> tuple[list[float], list[float]]:
    """Run the reference over the pairs, longest first (little padding), each process taking its share."""
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    dataset = trainer.train_dataset.select_columns(list(ID_COLUMNS))
    lengths = [
        len(p) + max(len(c), len(r)) for p, c, r in zip(*(dataset[col] for col in ID_COLUMNS), strict=True)
    ]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    accelerator = trainer.accelerator
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    model = trainer.model  # before step 0 the policy is the reference (with LoRA: the adapter is disabled)
    found: dict[int, tuple[float, float]] = {}
    tokens = 0
    bar = tqdm(mine, desc="reference log-probs", unit="batch", disable=not accelerator.is_main_process)
    for indices in bar:
        batch = trainer.data_collator([dataset[i] for i in indices])
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        chosen, rejected = trainer.compute_ref_log_probs(model, batch)
        found.update(
            zip(indices, zip(chosen.float().tolist(), rejected.float().tolist(), strict=True), strict=True)
        )
        tokens += int(batch["attention_mask"].sum())
        bar.set_postfix(tokens_per_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}")
    merged: dict[int, tuple[float, float]] = {}
    for part in gather_object([found]):
        merged.update(part)
    return [merged[i][0] for i in range(len(lengths))], [merged[i][1] for i in range(len(lengths))]


def _read_on_main_process(accelerator: Any, path: Path, rows: int) -> tuple[list, list] | None:
    """The cached log-probs as the main process finds them, sent to every process: processes that decided on
    their own (another node's cache, a file written in between) would disagree, and the ones that compute
    would wait forever in ``_compute``'s gather for the ones that did not."""
    found = None
    if accelerator.is_main_process and path.is_file():
        stored = json.loads(path.read_text())
        if len(stored["ref_chosen_logps"]) == rows:
            found = (stored["ref_chosen_logps"], stored["ref_rejected_logps"])
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        found = broadcast_object_list([found])[0]
    return found


def attach_reference_logps(
    trainer: Any, fields: dict[str, Any], *, batch_size: int, use_cache: bool = True
) -> dict:
    """Give ``trainer`` precomputed reference log-probs (from the cache, or computed now and cached).

    Afterwards the trainer reads them from each batch instead of running the reference at every step, as
    with ``precompute_ref_log_probs=True``; a full fine-tuning reference copy is released.
    """
    fields = {
        **fields,
        "tokens": token_digest(trainer.train_dataset),
        "pairs_count": len(trainer.train_dataset),
    }
    key = cache_key(fields)
    path = cache_path(key)
    release_reference_model(trainer)  # a full fine-tune's reference copy: the policy serves before step 0
    cached = (
        _read_on_main_process(trainer.accelerator, path, len(trainer.train_dataset)) if use_cache else None
    )
    hit = cached is not None
    if hit:
        chosen, rejected = cached
    else:
        chosen, rejected = _compute(trainer, batch_size)
        if use_cache and trainer.accelerator.is_main_process:
            atomic_write_json(
                path, {"fields": fields, "ref_chosen_logps": chosen, "ref_rejected_logps": rejected}
            )
    log.info(
        "reference log-probs: %s %s", "reused" if hit else "computed", path if use_cache else "(not cached)"
    )
    dataset = trainer.train_dataset
    for name, values in (("ref_chosen_logps", chosen), ("ref_rejected_logps", rejected)):
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
        dataset = dataset.add_column(name, values)
    trainer.train_dataset = dataset
    use_precomputed_reference(trainer)
    return {"cache": str(path) if use_cache else None, "key": key, "hit": hit, "fields": fields}
