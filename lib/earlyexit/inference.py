"""The inference form of a multi-exit network: batch norm folded away, channels_last.

``inference_form(net)`` returns a copy of a trained ``MultiExitNet`` that computes the same function
with fewer operations: every BatchNorm that follows a convolution or linear layer (inside one
``nn.Sequential``, also across a max-pool when every channel's scale is positive, since max commutes
with an increasing affine map) is folded into that layer's weights and bias and replaced by an
identity; the backbone's stages and classifier are then flattened without those identities; 4-d
weights and activations use channels_last, which the CPU convolution kernels run faster at one
thread; every exit head becomes an ``InferenceHead`` (its feature layers without the identities,
global average pooling as a sum, then class and gate outputs from one weight matrix), and E2CM's
class-means heads an ``InferenceClassMeans``. All of this because at batch 1 each eager call after a
stage costs 5-20 microseconds whatever its MACs. Everything else (forward, early_exit,
collect_outputs) works unchanged on it, so the real-vs-offline agreement holds on the folded network
exactly as on the original, and the plain reference for speed is ``form.backbone`` (the same folding,
the same flattening, the same layout).

Folding changes float rounding slightly, so the folded network's outputs are not bit-identical to
the original's (``prediction_agreement`` counts the rows whose prediction moves). Cached outputs in
the notebooks keep coming from the unfolded float32 network.

torch.compile was tried twice and left out. Wrapping each stage and head unit compiles the shared
``nn.Sequential.forward`` once per unit, hits dynamo's recompilation limit (8) and falls back to eager,
after 150 s of compiling VGG-small, with no gain. Compiling the whole batch-1 forward as one graph, each
exit's stop as a ``torch.cond``, took 45 s to compile VGG-small x0.25 and kept 0.86 of the compiled plain
network's speed with no row leaving, against 0.78 in eager mode (1 thread, AMD EPYC): what remains per
exit is the call overhead of the conditional's branches, not the kernels.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .heads import ClassMeansHead, ExitHead, GlobalAvgPool, exit_feature
from .multiexit import MultiExitNet

__all__ = ["fold_batchnorm", "inference_form", "count_batchnorm", "prediction_agreement", "InferenceHead",
           "InferenceClassMeans"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """BN in eval mode as y = scale * x + shift, per channel, in float64."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    if not isinstance(bn, _BN) or not bn.track_running_stats or bn.running_var is None:
        return False
    if isinstance(layer, nn.Conv2d):
        return isinstance(bn, nn.BatchNorm2d) and layer.out_channels == bn.num_features
    if isinstance(layer, nn.Linear):
        return isinstance(bn, nn.BatchNorm1d) and layer.out_features == bn.num_features
    return False


@torch.no_grad()
def _fold_into(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    w = layer.weight
    shape = (-1,) + (1,) * (w.dim() - 1)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    new_w = (w.double() * scale.view(shape)).to(w.dtype)
    new_b = (bias * scale + shift).to(w.dtype)
    layer.weight = nn.Parameter(new_w, requires_grad=False)
    layer.bias = nn.Parameter(new_b, requires_grad=False)


def _fold_sequential(seq: nn.Sequential) -> int:
    names = list(seq._modules)
    folded = 0
    for i, name in enumerate(names):
        bn = seq._modules[name]
        if not isinstance(bn, _BN) or i == 0:
            continue
        layer, between = seq._modules[names[i - 1]], None
        if isinstance(layer, nn.MaxPool2d) and i >= 2:
            between, layer = layer, seq._modules[names[i - 2]]
        if not _foldable(layer, bn):
            continue
        scale, shift = _affine(bn)
        if between is not None and not bool((scale > 0).all()):
            continue  # max(a x + b) = a max(x) + b only for a > 0
        _fold_into(layer, scale, shift)
        seq._modules[name] = nn.Identity()
        folded += 1
    return folded


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (eval mode) with every foldable BatchNorm folded into the layer before it."""
    net = copy.deepcopy(net).eval()
    for module in list(net.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    return net


def count_batchnorm(net: nn.Module) -> int:
    return sum(isinstance(m, _BN) for m in net.modules())


def _flat(module: nn.Module) -> list[nn.Module]:
    """The layers of nested ``nn.Sequential`` containers, in order."""
    if not isinstance(module, nn.Sequential):
        return [module]
    return [layer for child in module for layer in _flat(child)]


class InferenceHead(nn.Module):
    """An ``ExitHead`` with as few eager calls as it allows: the feature layers as one flat list
    (identities dropped), global average pooling as a bare sum with 1 / (H W) folded into the weights
    (a sum is half the cost of a mean at batch 1), and the class logits and the gate logit (if any) from
    one weight matrix, stored transposed for ``addmm`` (``F.linear`` transposes it at every call, 3
    microseconds more per exit at batch 1). Same function up to float rounding, same MACs
    (``count_macs`` counts the layers and the one linear map, as ``mac_table`` counts the original)."""

    def __init__(self, head: ExitHead, in_shape: tuple[int, ...]):
        super().__init__()
        layers = _flat(head.features)
        self.pool_sum = isinstance(layers[-1], GlobalAvgPool)
        self.layers = nn.ModuleList(m for m in layers[:len(layers) - self.pool_sum] if not isinstance(m, nn.Identity))
        self.has_layers = len(self.layers) > 0
        pooled_pixels = _pixels(self.layers, in_shape) if self.pool_sum else 1
        outputs = [head.fc] + ([head.gate] if head.has_gate else [])
        weight = torch.cat([o.weight.detach() for o in outputs]).double() / pooled_pixels
        self.weight_t = nn.Parameter(weight.t().contiguous().to(head.fc.weight.dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.cat([o.bias.detach() for o in outputs]), requires_grad=False)
        self.num_classes = head.fc.out_features
        self.has_gate = head.has_gate

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.has_layers:
            for layer in self.layers:
                x = layer(x)
        if self.pool_sum:
            x = x.sum((2, 3))
        params = self._parameters   # a plain dict: nn.Module's attribute lookup costs ~0.6 us per name
        out = torch.addmm(params["bias"], x, params["weight_t"])
        if self.has_gate:
            return out[:, :self.num_classes], out[:, self.num_classes]
        return out, None

    @staticmethod
    def count_macs(module: "InferenceHead", inputs, output) -> None:
        """thop's rule: the linear map's MACs per row plus the feature layers' (thop's own rules count
        those in their ``total_ops`` as the layers run, but it reads no further than this head's rule)."""
        layers = sum(m.total_ops for m in module.layers if hasattr(m, "total_ops"))   # flat: leaves only
        module.total_ops += layers + len(inputs[0]) * module.weight_t.numel()


class InferenceClassMeans(nn.Module):
    """A ``ClassMeansHead`` (E2CM) in six eager calls instead of about twenty: the exit feature, its
    float64 distances to the class means by ``torch.cdist`` in direct mode (no matrix product, so a
    row's distances do not depend on its batch), and the normalised negative distance as one product
    with -1 / s. Same function up to float rounding, same MACs (the paper's K(3D-1)/2 per row)."""

    def __init__(self, head: ClassMeansHead):
        super().__init__()
        self.feature = head.feature
        self.register_buffer("means", head.means.double())
        self.register_buffer("neg_inv_scale", (-1.0 / head.scale.double()).to(head.scale.dtype))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = exit_feature(h, self.feature).to(self.means.dtype)   # float64 (float32 in the copy thop counts)
        d = torch.cdist(x, self.means, compute_mode="donot_use_mm_for_euclid_dist")
        return d.float() * self.neg_inv_scale, None

    distance_macs = ClassMeansHead.distance_macs             # the paper's count, from the means' shape
    count_macs = staticmethod(ClassMeansHead.count_macs)


def _pixels(layers: nn.ModuleList, in_shape: tuple[int, ...]) -> int:
    """H x W of what ``layers`` make of an input of shape ``in_shape`` (C, H, W)."""
    if not len(layers):
        return in_shape[1] * in_shape[2]
    weight = next(layers.parameters(), None)
    x = torch.zeros(1, *in_shape, dtype=torch.float32 if weight is None else weight.dtype)
    with torch.no_grad():
        for layer in layers:
            x = layer(x)
    return x.shape[2] * x.shape[3]


def _without_identities(module: nn.Module) -> nn.Module:
    """A nested ``nn.Sequential`` as one flat ``nn.Sequential`` without the identities that folding left:
    at batch 1 every module call costs a few microseconds whatever it computes."""
    if not isinstance(module, nn.Sequential):
        return module
    return nn.Sequential(*(m for m in _flat(module) if not isinstance(m, nn.Identity)))


def _inference_head(head: nn.Module, in_shape: tuple[int, ...]) -> nn.Module:
    if isinstance(head, ExitHead):
        return InferenceHead(head, in_shape)
    if type(head) is ClassMeansHead:      # not E2CM+SDN's head, which adds a linear layer on the distances
        return InferenceClassMeans(head)
    return head


def inference_form(net: MultiExitNet, fold_bn: bool = True, channels_last: bool = True) -> MultiExitNet:
    """A copy of ``net`` for timing real inference: BN folded, the backbone's stages and classifier as
    flat sequences without identities, channels_last weights and input layout, ``InferenceHead`` exits
    (``InferenceClassMeans`` for E2CM's).
    It keeps ``net.exit_costs`` (folding changes no MAC count)."""
    form = fold_batchnorm(net) if fold_bn else copy.deepcopy(net).eval()
    form.backbone.stages = nn.ModuleList(_without_identities(s) for s in form.backbone.stages)
    form.backbone.classifier = _without_identities(form.backbone.classifier)
    if channels_last:
        form = form.to(memory_format=torch.channels_last)
        form.input_format = torch.channels_last
    shapes = form.backbone.stage_shapes()
    form.heads = nn.ModuleList(_inference_head(h, shapes[s]) for h, s in zip(form.heads, form.exit_after))
    return form.eval()


@torch.no_grad()
def prediction_agreement(net: MultiExitNet, form: MultiExitNet, x: torch.Tensor, batch: int = 256) -> dict:
    """How many rows get the same argmax at every exit from ``net`` and its inference form, and the
    largest absolute logit difference."""
    same, diff = None, 0.0
    for i in range(0, len(x), batch):
        a, b = net(x[i:i + batch]).logits, form(x[i:i + batch].contiguous(memory_format=form.input_format)).logits
        agree = torch.stack([za.argmax(1) == zb.argmax(1) for za, zb in zip(a, b)]).all(0)
        same = agree if same is None else torch.cat([same, agree])
        diff = max(diff, max((za.float() - zb.float()).abs().max().item() for za, zb in zip(a, b)))
    return {"rows": len(x), "same_prediction_every_exit": int(same.sum()), "max_abs_logit_diff": diff}
