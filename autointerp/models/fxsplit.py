"""Split any traceable ``nn.Module`` at a named layer into *head* (input → layer) and *tail*
(layer → output) with ``torch.fx``.

The requested layer is traced as a leaf so its output is one graph node. The head keeps only the
nodes the layer depends on (the forward pass stops there). The tail keeps everything after it and
must depend on nothing before it except parameters: otherwise the layer is not a clean cut point
(e.g. the inside of a residual block) and a :class:`~autointerp.errors.UserError` says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autointerp.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from torch import fx, nn


def _trace(module: nn.Module, layer: str) -> fx.GraphModule:
    import torch.fx as fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname == layer or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(module, concrete_args=_optional_inputs(module))
    except Exception as exc:
        raise UserError(
            f"cannot split model {type(module).__name__} at {layer!r}: torch.fx tracing failed ({exc}); "
            "give an adapter with explicit head/tail instead"
        ) from None
    return fx.GraphModule(module, graph)


def _optional_inputs(module: nn.Module) -> dict[str, object] | None:
    """``forward``'s parameters after the image that have defaults (e.g. timm's ``attn_mask=None``), fixed at
    those defaults: left as graph inputs they would reach the tail as inputs from before the cut."""
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    fixed = {
        p.name: p.default
        for p in params
        if p.default is not inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    return fixed or None


def _find_node(gm: fx.GraphModule, name: str) -> fx.Node:
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == name:
            return node
    for node in gm.graph.nodes:
        if node.name == name:
            return node
    raise UserError(f"layer {name!r} does not occur in the traced graph of {type(gm).__name__}")


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        cur = stack.pop()
        for inp in cur.all_input_nodes:
            if inp not in seen:
                seen.add(inp)
                stack.append(inp)
    return seen


def split_module(module: nn.Module, layer: str, output: str | None = None) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Return ``(head, tail)`` GraphModules for ``module`` cut at ``layer``.

    ``output`` optionally names the node whose value is the tail's output (e.g. the pre-softmax
    logits when the module itself returns probabilities).
    """
    import torch.fx as fx

    gm = _trace(module, layer)
    cut = _find_node(gm, layer)
    end = _find_node(gm, output) if output else next(n for n in gm.graph.nodes if n.op == "output").args[0]

    # head: the cut node and its ancestors, in original order
    keep = _ancestors(cut) | {cut}
    head_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node in keep:
            env[node] = head_graph.node_copy(node, lambda n: env[n])
    head_graph.output(env[cut])

    # tail: placeholder for the cut, then the nodes the output needs that come after the cut
    needed = _ancestors(end) | {end}
    order = list(gm.graph.nodes)
    after = order[order.index(cut) + 1 :]
    tail_graph = fx.Graph()
    tenv: dict[fx.Node, fx.Node] = {cut: tail_graph.placeholder("activation")}
    for node in after:
        if node not in needed or node.op == "output":
            continue
        for inp in node.all_input_nodes:
            if inp not in tenv:
                if inp.op == "get_attr":
                    tenv[inp] = tail_graph.node_copy(inp, lambda n: tenv[n])
                else:
                    raise UserError(
                        f"layer {layer!r} is not a clean cut point: {node.name!r} after it also needs "
                        f"{inp.name!r} from before it (e.g. a skip connection); choose a block output"
                    )
        tenv[node] = tail_graph.node_copy(node, lambda n: tenv[n])
    if end not in tenv:
        raise UserError(f"output {output!r} does not come after layer {layer!r}")
    tail_graph.output(tenv[end])
    head = fx.GraphModule(gm, head_graph)
    tail = fx.GraphModule(gm, tail_graph)
    head.eval()
    tail.eval()
    return head, tail


def layer_shapes(module: nn.Module, example: object, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Output shapes of the named submodules for one forward pass on ``example`` (via hooks)."""
    import torch

    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    mods = dict(module.named_modules())
    for name in names:
        mod = mods.get(name)
        if mod is None:
            continue

        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    return shapes
