"""The schema of a paper spec (``oodbench/conf/paper/<name>.yaml``, key ``paper:``), checked when the spec is loaded: a
misspelt or missing key is one line naming the spec, the block and the keys it allows — never a ``KeyError`` deep in
the engine or a column that silently disappears."""

from __future__ import annotations

from typing import Any

from oodbench.errors import OodbenchError

# per level: (required keys, optional keys)
TOP = ({"title", "blocks"}, {"cells", "no_comparison", "training_logs", "checkpoint_methods", "experiment"})
BLOCKS: dict[str, tuple[set[str], set[str]]] = {
    "compare": ({"keys", "metrics"}, {"heading", "intro", "label", "map", "match", "mean_over", "missing",
                                     "missing_none", "not_run", "published", "rows", "show", "status_label"}),
    "grid": ({"checkpoints", "detectors", "metrics"}, {"checkpoint_labels", "extra_keys", "intro", "heading",
                                                       "more_detectors", "per_checkpoint", "row_head", "row_label",
                                                       "show_params", "significance", "sets", "mean_columns",
                                                       "not_run"}),
    "stored_rows": ({"methods"}, {"heading"}),
    "versus": ({"checkpoints", "detectors", "metric", "reference", "sets"}, {"heading", "intro", "lower_is_better"}),
    "python": ({"hook"}, set()),  # the hook defines the rest
}
GRID_METRIC = ({"ours", "heading"}, {"lower_is_better", "complement", "name"})
GRID_NOT_RUN = ({"checkpoints", "detectors", "reason"}, set())  # grid rows that cannot run here, and why
GRID_MEAN = ({"name", "sets"}, {"label"})  # a grid's mean column over some of its sets (e.g. far / near OOD)
COMPARE_METRIC = (set(), {"label", "ours", "complement", "published", "std"})  # ours / published null: one side only
PUBLISHED = ({"csv"}, {"where"})
MEAN_OVER = ({"column", "values"}, {"require", "when"})


def _check(node: Any, allowed: tuple[set[str], set[str]], where: str, open_ended: bool = False) -> None:
    if not isinstance(node, dict):
        raise OodbenchError(f"{where} must be a mapping, got {type(node).__name__}")
    required, optional = allowed
    missing = sorted(required - set(node))
    unknown = [] if open_ended else sorted(set(node) - required - optional - {"kind"})
    if missing or unknown:
        what = "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                     f"unknown {', '.join(unknown)}" if unknown else "") if x)
        raise OodbenchError(f"{where}: {what} (allowed: {', '.join(sorted(required | optional))}; required: "
                            f"{', '.join(sorted(required)) or 'none'})")


def validate(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """``spec`` (the ``paper:`` mapping of ``oodbench/conf/paper/<name>.yaml``) if it follows the schema, else one
    :class:`~oodbench.errors.OodbenchError` line."""
    where = f"oodbench/conf/paper/{name}.yaml paper"
    _check(spec, TOP, where)
    if not isinstance(spec["blocks"], list) or not spec["blocks"]:
        raise OodbenchError(f"{where}.blocks must be a non-empty list of blocks")
    for i, block in enumerate(spec["blocks"]):
        at = f"{where}.blocks[{i}]"
        kind = block.get("kind") if isinstance(block, dict) else None
        if kind not in BLOCKS:
            raise OodbenchError(f"{at}: kind {kind!r} is not a block kind; choose from {', '.join(BLOCKS)}")
        _check(block, BLOCKS[kind], f"{at} ({kind})", open_ended=kind == "python")
        if kind == "grid":
            for j, m in enumerate(block["metrics"]):
                _check(m, GRID_METRIC, f"{at}.metrics[{j}]")
            for j, m in enumerate(block.get("mean_columns") or []):
                _check(m, GRID_MEAN, f"{at}.mean_columns[{j}]")
            for j, m in enumerate(block.get("not_run") or []):
                _check(m, GRID_NOT_RUN, f"{at}.not_run[{j}]")
        if kind == "compare":
            for m, v in block["metrics"].items():
                if isinstance(v, dict):
                    _check(v, COMPARE_METRIC, f"{at}.metrics.{m}")
            for j, src in enumerate(block.get("published") or []):
                _check(src, PUBLISHED, f"{at}.published[{j}]")
            if block.get("mean_over") is not None:
                _check(block["mean_over"], MEAN_OVER, f"{at}.mean_over")
            if "published" not in block and "rows" not in block:
                raise OodbenchError(f"{at} (compare): give `published` (CSV files) or `rows` (declared rows)")
            if "match" not in block and "not_run" not in block:
                raise OodbenchError(f"{at} (compare): missing match (how a published row finds our rows)")
    return spec
