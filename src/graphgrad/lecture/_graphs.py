"""The lecture's graph topics: the neuron as units, the computational-graph example with its
shared h2, granularity, the worked example, the D = 2, T = 2 classifier, path sums against
backpropagation, and the patterns of gradient flow."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._context import Context, draw_graphs
from ._page import Topic

__all__ = [
    "classifier_topic",
    "gradient_flow",
    "granularity",
    "graph_example",
    "neuron",
    "paths_vs_backprop",
    "worked_example",
]


def _f(v: float) -> str:
    return f"{v:.6g}"


# ------------------------------------------------------------------------------- neuron


def neuron(ctx: Context) -> Topic:
    """o = a(w·x + b) with D = 3 and a = ReLU, one node per unit, values and gradients."""
    from ..scalar import Scalar
    from ..viz import trace

    xs = [1.0, -2.0, 0.5]
    ws = [0.5, -0.25, 1.0]
    x = [Scalar(v, name=f"x{d + 1}", requires_grad=False) for d, v in enumerate(xs)]
    w = [Scalar(v, name=f"w{d + 1}") for d, v in enumerate(ws)]
    b = Scalar(-0.5, name="b")
    hs = []
    for d in range(3):
        h = w[d] * x[d]
        h.name = f"h{d + 1}"
        hs.append(h)
    s = hs[0] + hs[1]
    s = s + hs[2]
    v = s + b
    v.name = "v"
    o = v.relu()
    o.name = "o"
    o.backward()
    figures = draw_graphs(ctx, "neuron", [("o = a(w·x + b), a = ReLU, D = 3", trace(o))])
    grads = [wd.grad for wd in w]
    numbers = {
        "x": xs,
        "w": ws,
        "b": b.data,
        "v": v.data,
        "o": o.data,
        "do_dw": grads,
        "do_db": b.grad,
        "units": 3 + 2 + 1 + 1,
    }
    table = "\n".join(
        [
            "| quantity | value |",
            "|---|---:|",
            f"| v = w·x + b = Σ_d w_d x_d + b | {_f(v.data)} |",
            f"| o = ReLU(v) | {_f(o.data)} |",
            f"| ∂o/∂w = x (the unit fires: v > 0) | {', '.join(_f(g) for g in grads)} |",
            f"| ∂o/∂b | {_f(b.grad)} |",
        ]
    )
    return Topic(
        key="neuron",
        title="A neuron: o = a(w·x + b)",
        claim="We can model a neuron as o = a(w·x + b): x and w are all inputs and weights, "
        "b corresponds to the threshold, a(·) is an activation function that models the "
        "firing rate. Drawn here one node per unit (the products h_d = w_d x_d, their sum, "
        "+ b, ReLU), each with its value and its gradient.",
        commands=[
            'graphgrad graph "relu(w1*x1 + w2*x2 + w3*x3 + b)" '
            "--at w1=0.5,x1=1,w2=-0.25,x2=-2,w3=1,x3=0.5,b=-0.5"
        ],
        figures=figures,
        tables=[table],
        numbers=numbers,
        summary=f"v = {_f(v.data)}, o = {_f(o.data)}, do/dw = {grads}",
    )


# ------------------------------------------------------------------- the graph example


def _example_graph(shared: bool, x0: float) -> tuple[Any, Any]:
    """o = f(g1(h1(x), h2(x)), g2(h2(x), h3(x))) with h1 = tanh, h2 = exp, h3 = sigmoid,
    g1 = h1·h2, g2 = h2 + h3, f = g1·g2; h2 computed once (shared) or twice."""
    from ..scalar import Scalar

    x = Scalar(x0, name="x")
    h1 = x.tanh()
    h1.name = "h1"
    h2 = x.exp()
    h2.name = "h2"
    h2b = h2
    if not shared:
        h2b = x.exp()
        h2b.name = "h2'"
    h3 = x.sigmoid()
    h3.name = "h3"
    g1 = h1 * h2
    g1.name = "g1"
    g2 = h2b + h3
    g2.name = "g2"
    o = g1 * g2
    o.name = "o"
    return o, x


def graph_example(ctx: Context) -> Topic:
    """The lecture's example graph, h2 shared by g1 and g2; path sums and backprop agree."""
    from ..paths import backprop_grad, path_grad
    from ..viz import trace
    from ..viz.trace import collect

    x0 = 0.5
    o, x = _example_graph(True, x0)
    ps = path_grad(o, [x])
    bp = backprop_grad(o, [x])
    o.backward()
    graph = trace(o)
    o2, x2 = _example_graph(False, x0)
    o2.backward()
    graph2 = trace(o2)
    # central difference of the same function, in float64
    eps = 1e-6
    num = (_example_value(x0 + eps) - _example_value(x0 - eps)) / (2 * eps)
    nodes_shared = len(collect(o))
    nodes_dup = len(collect(o2))
    figures = draw_graphs(
        ctx,
        "graph_example",
        [("h2 shared (one node, two consumers)", graph), ("h2 computed twice", graph2)],
        title=f"o = f(g1(h1(x), h2(x)), g2(h2(x), h3(x))) at x = {x0:g}",
    )
    numbers = {
        "x": x0,
        "o": o.data,
        "do_dx_backprop": x.grad,
        "do_dx_path_sums": ps.grads[0],
        "do_dx_central_difference": num,
        "paths": ps.paths,
        "edges": bp.edges,
        "nodes_shared": nodes_shared,
        "nodes_duplicated": nodes_dup,
        "do_dx_duplicated_graph": x2.grad,
    }
    table = "\n".join(
        [
            "| | h2 shared | h2 computed twice |",
            "|---|---:|---:|",
            f"| nodes | {nodes_shared} | {nodes_dup} |",
            f"| paths from x to o | {ps.paths} | {sum(_count(o2, x2))} |",
            f"| ∂o/∂x by backprop | {_f(x.grad)} | {_f(x2.grad)} |",
            f"| ∂o/∂x by path sums | {_f(ps.grads[0])} | |",
            f"| ∂o/∂x by central differences | {_f(num)} | |",
        ]
    )
    return Topic(
        key="graph_example",
        title="Computational graphs: o = f(g1(h1(x), h2(x)), g2(h2(x), h3(x)))",
        claim="Modern neural networks are compositions of scalar sub-functions (units) that "
        "form a directed acyclic computational graph. Here h1 = tanh, h2 = exp, h3 = sigmoid, "
        "g1 = h1·h2, g2 = h2 + h3, f = g1·g2: h2 is one node with two consumers, and its "
        "gradient is the sum over both.",
        commands=['graphgrad graph "(tanh(x)*exp(x)) * (exp(x) + sigmoid(x))" --at x=0.5'],
        figures=figures,
        tables=[table],
        notes=[
            "The expression language computes exp(x) twice when it is written twice (right "
            "graph); the lecture's graph (left) computes it once. The paths are the same four, "
            "and so is the gradient."
        ],
        numbers=numbers,
        summary=f"{ps.paths} paths from x, do/dx = {_f(x.grad)} (path sums {_f(ps.grads[0])})",
    )


def _example_value(x: float) -> float:
    import math

    h1, h2, h3 = math.tanh(x), math.exp(x), 1.0 / (1.0 + math.exp(-x))
    return (h1 * h2) * (h2 + h3)


def _count(o: Any, x: Any) -> list[int]:
    from ..paths import count_paths

    return count_paths(o, [x])


# -------------------------------------------------------------------------- granularity


def granularity(ctx: Context) -> Topic:
    """g(x) = w·x + b as one node (a Tensor op) and as units: the same gradients."""
    from ..tensor import Tensor, linear
    from ..units import units
    from ..viz import trace

    gen = np.random.default_rng(ctx.seed)
    d = 3
    x = Tensor(gen.normal(size=(1, d)), name="x")
    w = Tensor(gen.normal(size=(1, d)), requires_grad=True, name="w")
    b = Tensor(gen.normal(size=(1,)), requires_grad=True, name="b")
    g = linear(x, w, b).sum()
    g.name = "g"
    u = units(g)
    coarse = trace(g)
    g.backward(retain_graph=True)
    coarse = trace(g)
    u.backward()
    fine = trace(u.scalar)
    dw_units, db_units = u.grad(w), u.grad(b)
    diff = max(float(np.max(np.abs(dw_units - w.grad))), float(np.max(np.abs(db_units - b.grad))))
    figures = draw_graphs(
        ctx,
        "granularity",
        [("g(x) = w·x + b as one node", coarse), ("g(x) = h1(x1) + h2(x2) + h3(x3) + b", fine)],
        title="granularity can be chosen freely (D = 3)",
    )
    numbers = {
        "D": d,
        "dg_dw_tensor": w.grad.reshape(-1).tolist(),
        "dg_dw_units": dw_units.reshape(-1).tolist(),
        "dg_db_tensor": float(b.grad.reshape(-1)[0]),
        "dg_db_units": float(db_units.reshape(-1)[0]),
        "max_abs_diff": diff,
        "nodes_coarse": len(coarse.nodes),
        "nodes_units": len(fine.nodes),
        "units": u.count(),
    }
    rows = [
        "| gradient | one node w·x + b | units Σ_d w_d x_d + b |",
        "|---|---:|---:|",
    ]
    for k in range(d):
        rows.append(f"| ∂g/∂w{k + 1} | {_f(float(w.grad[0, k]))} | {_f(float(dw_units[0, k]))} |")
    rows.append(f"| ∂g/∂b | {_f(float(b.grad[0]))} | {_f(float(db_units[0]))} |")
    rows.append(f"| graph nodes | {len(coarse.nodes)} | {len(fine.nodes)} |")
    return Topic(
        key="granularity",
        title="Granularity can be chosen freely",
        claim="We might define g(x) = w·x + b, or g(x) = h_1(x_1) + ... + h_D(x_D) + b with "
        "h_d(x_d) = w_d x_d: more granularity helps understanding, implementations are less "
        "granular. Both graphs compute the same function and the same gradients.",
        commands=['python -c "import graphgrad as gg; help(gg.units)"'],
        figures=figures,
        tables=["\n".join(rows)],
        notes=[f"Largest difference between the two graphs' gradients: {diff:.1e} (float64)."],
        numbers=numbers,
        summary=f"max |grad(one node) - grad(units)| = {diff:.1e}",
    )


# ----------------------------------------------------------------------- worked example


def worked_example(ctx: Context) -> Topic:
    """e = (a+b)(b+1) at a = 2, b = 1: forward, local gradients, path sums, backprop."""
    from ..paths import backprop_grad, path_grad
    from ..scalar import Scalar
    from ..viz import trace

    a, b = Scalar(2.0, name="a"), Scalar(1.0, name="b")
    c = a + b
    c.name = "c"
    d = b + 1
    d.name = "d"
    e = c * d
    e.name = "e"
    ps = path_grad(e, [a, b])
    bp = backprop_grad(e, [a, b])
    e.backward()
    graph = trace(e)
    figures = draw_graphs(ctx, "worked_example", [("e = (a+b)(b+1) at a = 2, b = 1", graph)])
    numbers = {
        "a": a.data,
        "b": b.data,
        "c": c.data,
        "d": d.data,
        "e": e.data,
        "de_da": a.grad,
        "de_db": b.grad,
        "de_da_path_sums": ps.grads[0],
        "de_db_path_sums": ps.grads[1],
        "paths_from_a": ps.paths_per_input[0],
        "paths_from_b": ps.paths_per_input[1],
    }
    table = "\n".join(
        [
            "| | value | paths | by path sums | by backprop |",
            "|---|---:|---:|---|---:|",
            f"| e = c·d | {_f(e.data)} | | | |",
            f"| ∂e/∂a | | {ps.paths_per_input[0]} | c_a·e_c = 1·{_f(d.data)} = "
            f"{_f(ps.grads[0])} | {_f(a.grad)} |",
            f"| ∂e/∂b | | {ps.paths_per_input[1]} | c_b·e_c + d_b·e_d = 1·{_f(d.data)} + "
            f"1·{_f(c.data)} = {_f(ps.grads[1])} | {_f(b.grad)} |",
        ]
    )
    return Topic(
        key="worked_example",
        title="Derivatives in graphs: e(a, b) = (a + b)(b + 1)",
        claim="Forward pass with a = 2 and b = 1 gives c = 3, d = 2, e = 6. Multiplying local "
        "gradients along every path and summing: e_a(2,1) = c_a·e_c = 1·2 = 2 and "
        "e_b(2,1) = c_b·e_c + d_b·e_d = 2 + 3 = 5.",
        commands=[
            'graphgrad graph "(a+b)*(b+1)" --at a=2,b=1 --explain',
            'graphgrad paths "(a+b)*(b+1)" --at a=2,b=1',
        ],
        figures=figures,
        tables=[table],
        text=graph.explain(),
        numbers=numbers,
        summary=f"e = {_f(e.data)}, de/da = {_f(a.grad)}, de/db = {_f(b.grad)} "
        f"(paths: {ps.paths_per_input[0]} from a, {ps.paths_per_input[1]} from b; "
        f"backprop touched {bp.edges} edges)",
    )


# ------------------------------------------------------------- the D = 2, T = 2 classifier

#: The same classifier written in the expression language: every use of a score repeats it.
CLASSIFIER_EXPR = (
    "-log(exp(w11*x1 + w12*x2 + b1) / (exp(w11*x1 + w12*x2 + b1) + exp(w21*x1 + w22*x2 + b2)))"
)


def classifier_topic(ctx: Context) -> Topic:
    """The linear classifier with D = 2, T = 2, softmax and cross-entropy attached, as units."""
    from ..expr import evaluate, parse
    from ..paths import backprop_grad, count_paths, path_grad
    from ..tensor import Tensor, cross_entropy, linear
    from ..viz import trace
    from ..viz.trace import collect
    from .classifier import DEFAULTS, PARAMETERS, softmax_classifier

    loss, params = softmax_classifier()
    xs = [params[n] for n in PARAMETERS]
    ps = path_grad(loss, xs)
    bp = backprop_grad(loss, xs)
    loss.backward()
    graph = trace(loss)
    n_nodes = len(collect(loss))
    # the same loss as Tensors (the fused, vectorised ops): the same gradients
    v = DEFAULTS
    W = Tensor(np.array([[v["w11"], v["w12"]], [v["w21"], v["w22"]]]), requires_grad=True)
    B = Tensor(np.array([v["b1"], v["b2"]]), requires_grad=True)
    X = Tensor(np.array([[v["x1"], v["x2"]]]))
    ce = cross_entropy(linear(X, W, B), np.array([int(v["y"]) - 1]))
    ce.backward()
    tensor_grads = [*W.grad.reshape(-1).tolist(), *B.grad.tolist()]
    unit_grads = [params[n].grad for n in PARAMETERS]
    diff = max(abs(p - q) for p, q in zip(tensor_grads, unit_grads, strict=True))
    # the expression-language version: shared scores written out twice, x1, x2 as inputs
    root, leaves = evaluate(parse(CLASSIFIER_EXPR), {k: v[k] for k in v if k != "y"})
    expr_paths = count_paths(root, list(leaves.values()))
    expr_param_paths = count_paths(root, [leaves[n] for n in PARAMETERS])
    figures = draw_graphs(
        ctx,
        "softmax_classifier",
        [("H = -ln softmax(Wx + b)_y, D = 2, T = 2, as units", graph)],
    )
    numbers = {
        "values": dict(v),
        "H": loss.data,
        "paths": ps.paths,
        "paths_per_parameter": dict(zip(PARAMETERS, ps.paths_per_input, strict=True)),
        "backprop_edges": bp.edges,
        "path_sum_multiplications": ps.multiplications,
        "backprop_multiplications": bp.multiplications,
        "nodes": n_nodes,
        "grads_units": dict(zip(PARAMETERS, unit_grads, strict=True)),
        "grads_tensor": dict(zip(PARAMETERS, tensor_grads, strict=True)),
        "max_abs_diff_units_vs_tensor": diff,
        "expr_nodes": len(collect(root)),
        "expr_paths_all_names": sum(expr_paths),
        "expr_paths_parameters": sum(expr_param_paths),
    }
    rows = [
        "| parameter | paths to H | ∂H/∂θ (units) | ∂H/∂θ (fused Tensor ops) |",
        "|---|---:|---:|---:|",
    ]
    for n, k, gu, gt in zip(PARAMETERS, ps.paths_per_input, unit_grads, tensor_grads, strict=True):
        rows.append(f"| {n} | {k} | {_f(gu)} | {_f(gt)} |")
    rows.append(f"| **all six** | **{ps.paths}** | | |")
    compare = "\n".join(
        [
            "| the same classifier | nodes | paths counted | from |",
            "|---|---:|---:|---|",
            f"| `graphgrad graph --model softmax-classifier` (units, shared) | {n_nodes} | "
            f"{ps.paths} | the six parameters |",
            f"| the expression `{CLASSIFIER_EXPR}` | {len(collect(root))} | "
            f"{sum(expr_paths)} | all eight names (x1, x2 as inputs) |",
            f"| the same expression | {len(collect(root))} | {sum(expr_param_paths)} | "
            "the six parameters |",
        ]
    )
    return Topic(
        key="softmax_classifier",
        title="Linear classifier with D = 2 and T = 2, softmax and cross-entropy attached",
        claim="To calculate ∇H(θ) we decompose the network into simple functions (x1 + x2, "
        "x1·x2), do the same for softmax and cross-entropy (exp, ln, x1/x2), stack both into "
        "one graph and use the same algorithm. The graph is dense: we must sum over several "
        "paths per partial derivative.",
        commands=[
            "graphgrad graph --model softmax-classifier --format svg -o softmax_classifier.svg",
            "graphgrad paths --model softmax-classifier",
        ],
        figures=figures,
        tables=["\n".join(rows), compare],
        notes=[
            "Parameters of the true class's score reach H along 2 paths (through the numerator "
            "e_y and through the sum z), those of the other score along 1 (through z): "
            f"3·2 + 3·1 = {ps.paths}. Written as one expression, every use of a score repeats "
            "it; the paths are the same, the graph is larger, and counting x1 and x2 as inputs "
            f"adds their paths ({sum(expr_paths)} in all).",
            f"Units against the fused Tensor ops: largest gradient difference {diff:.1e}.",
        ],
        numbers=numbers,
        summary=f"{ps.paths} paths from the 6 parameters ({n_nodes} nodes); "
        f"expression form: {sum(expr_paths)} paths from all 8 names",
    )


# --------------------------------------------------------------- path sums vs backprop


def paths_vs_backprop(ctx: Context) -> Topic:
    """Paths and their multiplications against backprop's edges, measured on the lecture's
    graphs and on dense layered graphs of growing depth."""
    from ..paths import backprop_grad, layered_table, path_grad
    from ..scalar import Scalar
    from .classifier import PARAMETERS, softmax_classifier

    rows = [
        "| graph | paths (path sums) | multiplications (path sums) | additions (path sums) "
        "| edges touched (backprop) | multiplications (backprop) | additions (backprop) "
        "| max abs difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured: list[dict[str, Any]] = []

    def add(name: str, out: Any, xs: list[Any]) -> None:
        ps = path_grad(out, xs)
        bp = backprop_grad(out, xs)
        diff = max(abs(p - q) for p, q in zip(ps.grads, bp.grads, strict=True))
        measured.append(
            {
                "graph": name,
                "paths": ps.paths,
                "path_multiplications": ps.multiplications,
                "path_additions": ps.additions,
                "backprop_edges": bp.edges,
                "backprop_multiplications": bp.multiplications,
                "backprop_additions": bp.additions,
                "max_abs_diff": diff,
            }
        )
        rows.append(
            f"| {name} | {ps.paths:,} | {ps.multiplications:,} | {ps.additions:,} | "
            f"{bp.edges:,} | {bp.multiplications:,} | {bp.additions:,} | {diff:.1e} |"
        )

    a, b = Scalar(2.0, name="a"), Scalar(1.0, name="b")
    add("e = (a+b)(b+1)", (a + b) * (b + 1), [a, b])
    o, x = _example_graph(True, 0.5)
    add("o = f(g1(h1, h2), g2(h2, h3))", o, [x])
    loss, params = softmax_classifier()
    add("softmax classifier D = 2, T = 2", loss, [params[n] for n in PARAMETERS])

    width, depth = 3, (5 if ctx.quick else 8)
    lay = layered_table(width, depth, limit=10_000_000)
    lrows = [
        f"| depth d | paths ({width}^d per input · {width} inputs) | multiplications (path "
        f"sums) | edges touched (backprop) | multiplications (backprop) | {width}²·d "
        "| max abs difference |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in lay:
        pm = f"{r.path_multiplications:,}" if r.path_multiplications is not None else "refused"
        md = f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "-"
        lrows.append(
            f"| {r.depth} | {r.paths:,} | {pm} | {r.backprop_edges:,} | "
            f"{r.backprop_multiplications:,} | {width * width * r.depth:,} | {md} |"
        )
    figures = _plot_paths(ctx, lay, width)
    numbers = {
        "graphs": measured,
        "layered_width": width,
        "layered": [
            {
                "depth": r.depth,
                "paths": r.paths,
                "path_multiplications": r.path_multiplications,
                "backprop_edges": r.backprop_edges,
                "backprop_multiplications": r.backprop_multiplications,
                "max_abs_diff": r.max_abs_diff,
            }
            for r in lay
        ],
    }
    last = lay[-1]
    return Topic(
        key="paths_vs_backprop",
        title="Path sums vs backpropagation",
        claim="The number of paths grows exponentially with graph complexity, so summing over "
        "paths is not efficient enough for large networks. Reverse-mode differentiation "
        "(backpropagation) computes the derivatives of the output with respect to all nodes, "
        "touching every edge only once.",
        commands=[
            "graphgrad paths --layered 3 8",
            'graphgrad paths "(a+b)*(b+1)" --at a=2,b=1',
            "graphgrad paths --model softmax-classifier",
        ],
        figures=figures,
        tables=["\n".join(rows), "\n".join(lrows)],
        notes=[
            "Path sums multiply the local gradients along each path from scratch (a path of L "
            "edges costs L − 1 multiplications) and add the products; backprop multiplies once "
            "per edge and adds once per extra consumer. Both columns are counted while the "
            "algorithms run, and both give the same gradients (last column)."
        ],
        numbers=numbers,
        summary=f"layered width {width}, depth {last.depth}: {last.paths:,} paths vs "
        f"{last.backprop_edges:,} edges",
    )


def _plot_paths(ctx: Context, lay: list[Any], width: int) -> list[str]:
    from ._context import figure, save

    fig = figure(6.5, 4.2)
    ax = fig.subplots()
    d = [r.depth for r in lay]
    ax.semilogy(d, [r.paths for r in lay], "o-", color="C3", label="paths (path sums)")
    pm = [(r.depth, r.path_multiplications) for r in lay if r.path_multiplications]
    if pm:
        ax.semilogy(
            *zip(*pm, strict=True),
            "s--",
            color="C3",
            alpha=0.6,
            label="multiplications (path sums)",
        )
    ax.semilogy(
        d,
        [r.backprop_edges for r in lay],
        "o-",
        color="C0",
        label="edges touched = multiplications (backprop)",
    )
    ax.set_xlabel("depth d of a dense layered graph")
    ax.set_ylabel("count")
    ax.set_title(f"width {width}: paths grow as {width}^d, edges as {width}²·d")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return [save(ctx, fig, "paths_vs_backprop.png")]


# ---------------------------------------------------------------------- gradient flow


def gradient_flow(ctx: Context) -> Topic:
    """add distributes, max routes, multiply switches: L = 2·gate(x, y) at x = 3, y = −1."""
    from ..scalar import Scalar
    from ..viz import trace

    gates = [
        ("add distributes", "z = x + y", lambda x, y: x + y),
        ("max routes", "z = max(x, y)", lambda x, y: x.maximum(y)),
        ("multiply switches", "z = x · y", lambda x, y: x * y),
    ]
    graphs = []
    rows = ["| gate | ∂L/∂z arriving | ∂L/∂x | ∂L/∂y | pattern |", "|---|---:|---:|---:|---|"]
    numbers: dict[str, Any] = {"x": 3.0, "y": -1.0, "upstream": 2.0}
    for title, formula, fn in gates:
        x, y = Scalar(3.0, name="x"), Scalar(-1.0, name="y")
        z = fn(x, y)
        z.name = "z"
        loss = 2 * z
        loss.name = "L"
        loss.backward()
        graphs.append((f"{title}: {formula}", trace(loss)))
        key = title.split()[0]
        numbers[key] = {"dL_dx": x.grad, "dL_dy": y.grad}
        rows.append(f"| {formula} | {_f(z.grad)} | {_f(x.grad)} | {_f(y.grad)} | {title} |")
    figures = draw_graphs(
        ctx, "gradient_flow", graphs, title="gradient flow at x = 3, y = -1, upstream ∂L/∂z = 2"
    )
    return Topic(
        key="gradient_flow",
        title="Patterns in gradient flow",
        claim="Add distributes gradients unchanged to all inputs; max routes the gradient "
        "unchanged to the largest input; multiply multiplies with the switched inputs.",
        commands=["python examples/gradient_flow.py"],
        figures=figures,
        tables=["\n".join(rows)],
        numbers=numbers,
        summary="add (2, 2), max (2, 0), mul (-2, 6)",
    )
