"""What the command prints when a run ends: its counts, each split's files, rejections by
reason, what came from the cache of outcomes, and what changed against the output replaced
(examples, and the transform graph's label ids and mask class ids that moved)."""

from __future__ import annotations

from beam_etl import label_ids

_MB = 1 << 20


def summarize(manifest_dict: dict, seconds: float, cache: dict | None = None, replaced: dict | None = None) -> str:
    """The run's summary: counts, each split's files, rejections by reason; what came from the
    cache of outcomes (``cache``: the run's counters, None where the runner gives none); what
    changed against the output replaced, whose manifest is ``replaced``."""
    copies = manifest_dict["num_examples"] - manifest_dict["num_written"]
    augmented = f" (+{copies} augmented copies: {manifest_dict['num_examples']} examples)" if copies else ""
    lines = [f"beam-etl: {manifest_dict['num_inputs']:,} inputs -> {manifest_dict['num_written']:,} written"
             f"{augmented}, {manifest_dict['num_rejected']:,} rejected, in {seconds:.1f} s "
             f"({manifest_dict['num_inputs'] / max(seconds, 1e-9):.1f} images/s)"]
    for split, info in manifest_dict["splits"].items():
        lines.append(f"  {split:5s} {info['num_examples']:8d} examples in {len(info['files'])} files "
                     f"({info['bytes'] / _MB:.1f} MB)")
    for reason, count in manifest_dict["rejected"]["by_reason"].items():
        lines.append(f"  rejected {reason}: {count}")
    if cache is not None:
        damaged = cache.get("damaged", 0)
        among = f" ({damaged:,} damaged {'entry' if damaged == 1 else 'entries'} among them)" if damaged else ""
        computed = cache.get("misses", 0) + damaged
        lines.append(f"  cache: {cache.get('hits', 0):,} outcomes taken from it, {computed:,} computed{among}")
    changes = manifest_dict.get("changes")
    if changes:
        if "unknown" in changes:
            lines.append(f"  against the output replaced: not known: {changes['unknown']}")
        else:
            counts = ", ".join(f"{changes.get(what, 0):,} {what}"
                               for what in ("added", "removed", "changed", "unchanged"))
            lines.append(f"  against the output replaced: {counts} (the keys: {changes['file']})")
    for what, moved, note in label_ids.moves(replaced, manifest_dict) if replaced else ():
        lines.append(f"  note: the transform graph's {what} differ from the replaced output's: {moved} ({note})")
    return "\n".join(lines)


def cache_counts(result) -> dict | None:
    """``{"hits", "misses", "damaged"}``: the cache of outcomes' counters of a finished run
    (:mod:`beam_etl.beam.process_examples`), or None where its runner gives no counters."""
    from apache_beam.metrics.metric import MetricsFilter  # pylint: disable=import-outside-toplevel

    try:
        counters = result.metrics().query(MetricsFilter().with_namespace("beam_etl"))["counters"]
    except Exception:  # pylint: disable=broad-except  # (a runner without metrics: NotImplementedError, ...)
        return None
    counts = {}
    for counter in counters:
        name = counter.key.metric.name
        if name.startswith("cache_"):
            value = counter.committed if counter.committed is not None else counter.attempted
            counts[name.removeprefix("cache_")] = counts.get(name.removeprefix("cache_"), 0) + (value or 0)
    return counts or None
