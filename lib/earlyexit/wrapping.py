"""Early exit for a network of your own: cut a classifier into stages at named submodules.

    import torchvision
    from earlyexit import wrap
    model = torchvision.models.resnet18(num_classes=10)          # or a model you trained
    net = wrap(model, ["layer1", "layer2", "layer3"], input_shape=(3, 32, 32))
    net(x).logits            # [exit after layer1, after layer2, after layer3, the model's own output]

The result is a ``MultiExitNet``: the MAC table, every exit rule in ``policies`` and ``methods/``, the
offline evaluator and the real early-exit engine work on it as on the registry's backbones.

How: the model is traced with ``torch.fx`` with each named submodule kept as one call, and the graph is
cut right after each of those calls. Stage i is the part of the graph between two cuts, a
``GraphModule`` sharing the model's own parameters (nothing is copied); what follows the last cut (for a
ResNet: layer4, pooling, flatten, fc) is the backbone's classifier, the final exit. The final exit
therefore runs the very operations of the traced model, in the same order, so its output equals the
model's exactly. A cut is valid only where one tensor is live: a residual connection or a concatenation
reaching across it would have to be carried to the next stage, which a stage boundary cannot do; such a
name fails with the list of names that can be cut. Names follow ``model.named_modules()``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import fx, nn

from .backbones import StagedBackbone, register_backbone
from .multiexit import MultiExitNet

__all__ = ["wrap", "wrap_backbone", "cut_points", "torchvision_backbone"]


class _KeepWhole(fx.Tracer):
    """A tracer that records each module in ``whole`` as one call (besides torch's own leaf layers)."""

    def __init__(self, whole: set[str]):
        super().__init__()
        self.whole = whole

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return qualified_name in self.whole or super().is_leaf_module(m, qualified_name)


def _trace(model: nn.Module, whole: set[str]) -> fx.Graph:
    try:
        return _KeepWhole(whole).trace(model)
    except Exception as err:  # fx raises many types for data-dependent control flow
        raise ValueError(f"{type(model).__name__} cannot be traced by torch.fx ({type(err).__name__}: {err}); "
                         "wrap a traceable part of it, or build a StagedBackbone by hand") from err


def _valid_cuts(graph: fx.Graph, names: Sequence[str]) -> dict[str, str | None]:
    """For each name called once as a module in ``graph``: None if the graph can be cut right after that
    call (only its output is live there), else why not."""
    nodes = list(graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    calls: dict[str, list[fx.Node]] = {}
    for n in nodes:
        if n.op == "call_module" and n.target in names:
            calls.setdefault(n.target, []).append(n)
    reasons: dict[str, str | None] = {}
    for name in names:
        found = calls.get(name, [])
        if len(found) != 1:
            reasons[name] = "it is not called" if not found else f"it is called {len(found)} times"
            continue
        cut = position[found[0]]
        crossing = {a.name for later in nodes[cut + 1:] for a in later.all_input_nodes
                    if position[a] < cut and a.op != "get_attr"}
        reasons[name] = f"{', '.join(sorted(crossing))} also reach(es) past it" if crossing else None
    return reasons


def cut_points(model: nn.Module, depth: int = 2) -> list[str]:
    """The names of ``model``'s submodules, down to ``depth`` levels, after which it can be cut, in
    forward order (a container before its first child): the valid entries of ``exit_after`` for ``wrap``."""
    first_call: dict[str, int] = {}
    for i, n in enumerate(_trace(model, set()).nodes):
        if n.op == "call_module":
            parts = n.target.split(".")
            for d in range(1, len(parts) + 1):
                first_call.setdefault(".".join(parts[:d]), i)
    valid = []
    for level in range(depth):
        names = [n for n, _ in model.named_modules() if n and n.count(".") == level]
        graph = _trace(model, set(names))
        valid += [n for n, why in _valid_cuts(graph, names).items() if why is None and not _is_last(graph, n)]
    return sorted(valid, key=lambda n: (first_call.get(n, len(first_call)), n.count(".")))


def _is_last(graph: fx.Graph, name: str) -> bool:
    """True if nothing but the output follows the call of ``name`` (an exit there would be the final one)."""
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "get_attr")]
    return len(nodes) > 1 and nodes[-2].op == "call_module" and nodes[-2].target == name


def _segment(graph: fx.Graph, nodes: list[fx.Node], start: fx.Node | None, end: fx.Node | None) -> fx.Graph:
    """The part of ``graph`` made of ``nodes``, reading ``start``'s value (or the model's input) and
    returning ``end``'s (or the model's output)."""
    piece = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    originals = {n.target: n for n in graph.nodes if n.op == "get_attr"}

    def value(n: fx.Node) -> fx.Node:
        if n not in env and n.op == "get_attr":      # a constant or parameter read in more than one stage
            env[n] = piece.node_copy(originals[n.target])
        return env[n]

    if start is not None:
        env[start] = piece.placeholder("x")
    for n in nodes:
        if n.op == "placeholder":
            env[n] = piece.placeholder(n.name)
        elif n.op == "output":
            piece.output(value(n.args[0]) if isinstance(n.args[0], fx.Node) else fx.map_arg(n.args[0], value))
        else:
            env[n] = piece.node_copy(n, value)
    if end is not None:
        piece.output(env[end])
    for n in reversed(list(piece.nodes)):       # constants copied with a stage that does not read them
        if n.op == "get_attr" and not n.users:
            piece.erase_node(n)
    piece.lint()
    return piece


def wrap_backbone(model: nn.Module, exit_after: Sequence[str], input_shape: tuple[int, int, int]) -> StagedBackbone:
    """``model`` as a ``StagedBackbone`` whose stages end after the submodules ``exit_after`` (forward
    order) and whose classifier is the rest of the model. Raises ValueError naming the valid cuts."""
    names = list(exit_after)
    if not names:
        raise ValueError("exit_after names no submodule: give at least one, e.g. " + ", ".join(cut_points(model)[:3]))
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"input_shape must be (channels, size, size) with a square image, got {tuple(input_shape)}")
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules or not n]
    if missing:
        raise ValueError(f"{type(model).__name__} has no submodule {missing[0]!r}; valid exits: "
                         f"{', '.join(cut_points(model))}")
    graph = _trace(model, set(names))
    nodes = list(graph.nodes)
    reasons = _valid_cuts(graph, names)
    bad = next((n for n in names if reasons[n] is not None), None)
    if bad is not None:
        raise ValueError(f"cannot cut {type(model).__name__} after {bad!r} ({reasons[bad]}); valid exits: "
                         f"{', '.join(cut_points(model))}")
    cut_at = {n.target: i for i, n in enumerate(nodes) if n.op == "call_module" and n.target in names}
    if [cut_at[n] for n in names] != sorted(cut_at[n] for n in names) or len(set(names)) != len(names):
        order = sorted(set(names), key=cut_at.get)
        raise ValueError(f"exit_after must follow the forward order without repeats: {', '.join(order)} "
                         f"(valid exits in order: {', '.join(cut_points(model))})")
    last = next((n for n in names if _is_last(graph, n)), None)
    if last is not None:
        raise ValueError(f"{last!r} ends the model: its output is the final exit already; valid exits: "
                         f"{', '.join(cut_points(model))}")
    bounds = [-1] + [cut_at[n] for n in names] + [len(nodes) - 1]
    pieces = []
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        start = nodes[lo] if lo >= 0 else None
        end = nodes[hi] if i < len(names) else None
        inside = [n for n in nodes[lo + 1:hi + 1] if not (n.op == "placeholder" and start is not None)]
        pieces.append(fx.GraphModule(model, _segment(graph, inside, start, end), class_name=f"Stage{i + 1}"))
    stages, classifier = pieces[:-1], pieces[-1]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probe = model(torch.zeros(1, *input_shape, dtype=next(model.parameters()).dtype))
    model.train(was_training)
    if not isinstance(probe, torch.Tensor) or probe.dim() != 2:
        raise ValueError(f"{type(model).__name__} must return class logits [batch, classes], got "
                         f"{type(probe).__name__}{tuple(probe.shape) if isinstance(probe, torch.Tensor) else ''}")
    return StagedBackbone(stages, classifier, default_exits=list(range(len(stages))), in_channels=input_shape[0],
                          image_size=input_shape[1], num_classes=probe.shape[1])


def wrap(model: nn.Module, exit_after: Sequence[str], input_shape: tuple[int, int, int] = (3, 32, 32),
         head: str = "linear", **head_options) -> MultiExitNet:
    """``model`` with an exit head (``heads.build_head(head, ...)``) after each submodule named in
    ``exit_after`` and its own output as the final exit. The model's parameters are shared, not copied."""
    return MultiExitNet(wrap_backbone(model, exit_after, input_shape), head=head, **head_options)


@register_backbone("torchvision", "a torchvision classification model (``model``: its builder name, random "
                   "weights) cut after the submodules ``cut_after``; ``width`` is the family's width_mult",
                   in_channels=3, image_size=32, model="mobilenet_v3_small", cut_after=("features.3", "features.8"))
def torchvision_backbone(num_classes: int, width: float, in_channels: int, image_size: int, model: str,
                         cut_after: Sequence[str]) -> StagedBackbone:
    """The registry's entry for torchvision models, so that a RunSpec can train and cache one like any
    backbone here. Only families with a ``width_mult`` option (MobileNet, MNASNet's ``alpha``) take a
    width other than 1."""
    import torchvision
    options = {}
    if width != 1.0:
        import inspect
        builder = torchvision.models.get_model_builder(model)
        accepted = set(inspect.signature(builder).parameters) | _width_options(model)
        name = next((n for n in ("width_mult", "alpha") if n in accepted), None)
        if name is None:
            raise ValueError(f"torchvision {model!r} has no width option; use width=1.0")
        options[name] = width
    if in_channels != 3:
        raise ValueError(f"torchvision models read 3-channel images, got in_channels={in_channels}")
    net = torchvision.models.get_model(model, weights=None, num_classes=num_classes, **options)
    return wrap_backbone(net, list(cut_after), (in_channels, image_size, image_size))


def _width_options(model: str) -> set[str]:
    """Width options passed through ``**kwargs`` by torchvision's builders (not in their signature)."""
    return {"width_mult"} if model.startswith("mobilenet_v3") else {"alpha"} if model.startswith("mnasnet") else set()
