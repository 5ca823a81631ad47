"""``gg.ops_table()``: the lecture's table of local derivatives, generated from the registry."""

from __future__ import annotations

from .ops import REGISTRY


def ops_table(fmt: str = "text") -> str:
    """Every registered op: forward formula, local derivative per argument, kink convention.

    Args:
        fmt: ``"text"`` (aligned columns) or ``"markdown"``.
    """
    if fmt not in ("text", "markdown"):
        raise ValueError(f"ops_table: fmt must be 'text' or 'markdown', got {fmt!r}")
    header = ["op", "category", "f", "df/d(argument)", "differentiable in", "at kinks / notes"]
    rows = []
    for op in REGISTRY.values():
        derivs = ", ".join(f"{a}: {d}" for a, d in zip(op.arg_names, op.derivatives, strict=False))
        diff = [a for i, a in enumerate(op.arg_names) if op.differentiable_in(i)]
        notes = "; ".join(x for x in (op.kinks, op.note) if x)
        rows.append(
            [
                op.name,
                op.category,
                op.formula,
                derivs if op.differentiable else "not differentiable",
                ", ".join(diff) if diff else "none",
                notes,
            ]
        )
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt_row.format(*header).rstrip(), fmt_row.format(*("-" * w for w in widths))]
    lines += [fmt_row.format(*r).rstrip() for r in rows]
    return "\n".join(lines)
