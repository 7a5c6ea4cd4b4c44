"""MultiExitNet: a staged backbone with exit heads after chosen stages.

Exit k (k < K-1) is head k applied to the output of stage ``exit_after[k]``; the last exit is the
backbone's own classifier. ``forward`` computes every exit (for training and for caching outputs);
``early_exit`` is the real inference path, which runs stage by stage and drops the rows a policy
lets go, so a sample that exits early costs only the stages and heads it went through.

Real inference knows nothing of MAC counting (this module does not import ``macs``): the cost of
each exit is data, passed as ``exit_costs`` or read from ``net.exit_costs``, which
``macs.mac_table(net)`` fills once (``train.train_cached`` calls it for every run).

How the real forward stays as cheap as its MACs (measured in ``benchmark.py``, ``make bench``):

- nothing moves at an exit where nobody leaves;
- compact-or-carry: when rows leave, compacting moves the rows that stay beyond the new batch size
  into the slots of rows that left (``compact_rows``, in place, at most as many rows as left, keeping
  the activation's memory format), while carrying the finished rows along costs their share of the
  remaining stages and heads. The batch is compacted when ``carried rows x MACs still ahead >
  COPY_MACS x rows moved at most x activation elements per row`` (with unknown costs: whenever a row
  leaves), which holds whenever a row's remaining convolutions cost more than copying it: nearly
  always. Rows carried along are computed and ignored.
- a batch of one runs a loop without bookkeeping (``BatchOfOne``, prepared once per network and rule
  by ``batch_of_one``): stage, head, decision, stop when it says so, answering with Python ints. What
  it still pays per exit is the head's and the decision's few eager calls (sum, matrix product, the
  rule's readout) and the rule's Python, each three to five times what it costs in a tight loop because
  the convolution before it has evicted the interpreter's working set from the caches (``make bench``
  with ``--breakdown`` prints it per exit).

``inference.inference_form(net)`` gives the same network with batch norm folded into the preceding
convolutions (and channels_last), the form to time; the policy driver is ``policies.run_exit_policy``,
shared with the offline evaluator, which is why both agree row for row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from .backbones import StagedBackbone
from .heads import build_head
from .policies import ExitPolicy, run_exit_policy

__all__ = ["MultiExitNet", "ExitOutputs", "EarlyExitResult", "BatchOfOne", "compact_rows", "COPY_MACS"]

# Moving one activation element (float32, from one row of the batch to another) takes about as long as
# this many conv MACs, one thread (`make bench` prints the ratio: 8-31 on the machines measured, 18-31 on
# an AMD EPYC, where a moved element is read twice: into a buffer, then into its slot). Erring either way
# hardly matters: at batch 256 on VGG-small x0.25, any value from 0 to 40 compacts at the same exits and
# times the same, while never compacting is 12-20% slower.
COPY_MACS = 8.0


@dataclass
class ExitOutputs:
    """Per-exit logits [B, C] and gate logits [B] (None for heads without a gate)."""

    logits: list[torch.Tensor]
    gates: list[torch.Tensor | None]

    @property
    def has_gates(self) -> bool:
        return any(g is not None for g in self.gates)

    def correct(self, labels: torch.Tensor) -> torch.Tensor:
        """Per exit, how many rows its argmax classifies right: [K] counts on the CPU."""
        return torch.stack([(z.argmax(1) == labels).sum() for z in self.logits]).cpu()


@dataclass
class EarlyExitResult:
    prediction: torch.Tensor   # [B] predicted class
    exit_index: torch.Tensor   # [B] exit taken, 0-based, K-1 is the final classifier
    macs: torch.Tensor | None  # [B] MACs spent on each sample (conv + linear, see macs.py); None if
                               # the network's exit costs are unknown (no mac_table, none passed)


class MultiExitNet(nn.Module):
    exit_costs: list[float] | None = None          # MACs of stopping at each exit, set by macs.mac_table
    input_format: torch.memory_format = torch.contiguous_format  # the layout early_exit gives its input

    def __init__(self, backbone: StagedBackbone, exit_after: Sequence[int] | None = None,
                 head: str = "linear", **head_options):
        super().__init__()
        exits = list(backbone.default_exits if exit_after is None else exit_after)
        n_stages = len(backbone.stages)
        if sorted(set(exits)) != exits or any(not 0 <= e < n_stages for e in exits):
            raise ValueError(f"exit_after must be increasing stage indices in [0, {n_stages - 1}], got {exits}")
        self.backbone = backbone
        self.exit_after = exits
        self.head_kind = head
        shapes = backbone.stage_shapes()
        self.heads = nn.ModuleList(
            build_head(head, shapes[e], backbone.num_classes, **head_options) for e in exits)

    @property
    def num_exits(self) -> int:
        return len(self.exit_after) + 1

    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    def exit_stage(self, k: int) -> int:
        """The backbone stage whose output exit k reads."""
        return self.exit_after[k] if k < len(self.exit_after) else len(self.backbone.stages) - 1

    def exit_output(self, k: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Exit k's (logits, gate logit or None) from the stage output it reads."""
        if k < len(self.heads):
            return self.heads[k](h)
        return self.backbone.classifier(h), None

    def stage_groups(self) -> list[list[nn.Module]]:
        """Per exit, the stages that run after the previous exit and up to the one it reads (the last
        group feeds the classifier), as plain lists: ``nn.ModuleList`` lookups cost a microsecond each
        at batch 1."""
        stages = list(self.backbone.stages)
        ends = self.exit_after + [len(stages) - 1]
        return [stages[start:end + 1] for start, end in zip([0] + [e + 1 for e in ends], ends)]

    def exit_inputs(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(k, the stage output exit k reads) for every exit in order, running each stage once: the one
        walk through the stages that every full forward shares."""
        for k, group in enumerate(self.stage_groups()):
            for stage in group:
                x = stage(x)
            yield k, x

    def forward(self, x: torch.Tensor) -> ExitOutputs:
        logits, gates = [], []
        for k, h in self.exit_inputs(x):
            out, gate = self.exit_output(k, h)
            logits.append(out)
            gates.append(gate)
        return ExitOutputs(logits, gates)

    def exit_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stage outputs that each exit reads (the last one feeds the classifier)."""
        return [h for _, h in self.exit_inputs(x)]

    def early_exit(self, x: torch.Tensor, policy: ExitPolicy,
                   exit_costs: Sequence[float] | torch.Tensor | None = None) -> EarlyExitResult:
        """Real early-exit inference on a batch: rows leave the batch as soon as they exit.

        ``exit_costs`` (MACs of stopping at each exit) default to ``self.exit_costs``; they price
        each row's exit and drive the compact-or-carry rule. Nothing is profiled here. Runs in
        inference mode (a microsecond less per tensor operation than no_grad, which counts at batch 1),
        entered here only if the caller is not already in it: the result's tensors are inference
        tensors, to be read or copied, not changed in place. For one input at a time, ``batch_of_one``
        answers with Python ints and builds no result tensors."""
        if not torch.is_inference_mode_enabled():
            with torch.inference_mode():
                return self.early_exit(x, policy, exit_costs)
        if self.training:
            raise RuntimeError("call net.eval() before early_exit: batch-norm must use running statistics")
        costs = self.exit_costs if exit_costs is None else exit_costs
        if costs is not None and len(costs) != self.num_exits:
            raise ValueError(f"{len(costs)} exit costs given for {self.num_exits} exits")
        if len(x) == 1:
            pred, k = BatchOfOne(self, policy)(x)
            both = torch.tensor([pred, k], device=x.device)   # one tensor for the two results, not two
            return EarlyExitResult(both[:1], both[1:], None if costs is None else
                                   torch.tensor([float(costs[k])], dtype=torch.float64, device=x.device))
        x = x.contiguous(memory_format=self.input_format) if x.dim() == 4 else x
        costs = None if costs is None else [float(c) for c in costs]
        prediction, exit_index = self._early_exit_batch(x, policy, costs)
        spent = None
        if costs is not None:
            spent = torch.tensor(costs, dtype=torch.float64, device=exit_index.device)[exit_index]
        return EarlyExitResult(prediction, exit_index, spent)

    def batch_of_one(self, policy: ExitPolicy) -> "BatchOfOne":
        """Real early exit for one input at a time, as a server answering one request at a time runs
        it: ``run = net.batch_of_one(policy)``, then ``prediction, exit = run(x)`` for each x [1, ...].
        Everything that does not depend on the input is prepared here once (see ``BatchOfOne``)."""
        return BatchOfOne(self, policy)

    def _early_exit_batch(self, x: torch.Tensor, policy: ExitPolicy,
                          costs: list[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
        # ``h`` holds the rows still computed: the active rows, plus finished rows carried along while
        # compacting would cost more than carrying them; ``pos`` = positions of the active rows in
        # ``h`` (None: all of them).
        run = {"h": x, "pos": None, "stage_done": -1}
        ahead = None if costs is None else [costs[-1] - c for c in costs]  # MACs a row still needs after k

        def outputs_at(k, active, keep):
            h, pos = run["h"], run["pos"]
            if keep is not None:
                pos = keep if pos is None else pos.index_select(0, keep)
                carried = len(h) - len(pos)                 # compacting moves at most this many rows
                if (ahead is None or carried * ahead[k - 1] > COPY_MACS * min(carried, len(pos)) * h[0].numel()) \
                        and h.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():  # never the input
                    h, pos = compact_rows(h, pos)
            for s in range(run["stage_done"] + 1, self.exit_stage(k) + 1):
                h = self.backbone.stages[s](h)
            run.update(h=h, pos=pos, stage_done=self.exit_stage(k))
            logits, gate = self.exit_output(k, h)
            if pos is not None:
                logits = logits.index_select(0, pos)
                gate = None if gate is None else gate.index_select(0, pos)
            return logits, gate

        return run_exit_policy(policy, self.num_exits, len(x), outputs_at)


class BatchOfOne:
    """Real early exit of one input: ``BatchOfOne(net, policy)(x)`` = (prediction, exit) as Python ints,
    deciding exactly as ``net.early_exit`` (which calls it for a batch of one row). Per exit only its
    stages, its head and the policy's ``row_decider`` (Python values, no masks) run: no gathers, no
    per-row bookkeeping, no result tensors. Everything else (the stage groups, the heads, the policy's
    methods) is looked up once, at construction, because after a convolution every Python step runs
    from cold caches: a fresh set-up per input cost 25-40 microseconds at batch 1 on VGG-small x0.25.
    So it is a snapshot: build a new one after changing the network's modules. Heads run through their
    ``forward`` (a module call's hook checks cost a few microseconds more per exit): hooks registered on
    the heads do not fire here."""

    def __init__(self, net: MultiExitNet, policy: ExitPolicy):
        if net.training:
            raise RuntimeError("call net.eval() before early exit: batch-norm must use running statistics")
        *groups, self.tail = net.stage_groups()
        self.num_exits = net.num_exits
        self.input_format = net.input_format
        self.exits = [(k, head.forward, group) for k, (head, group) in enumerate(zip(net.heads, groups))]
        self.classifier = net.backbone.classifier
        self.row_decider = policy.row_decider

    def __call__(self, x: torch.Tensor) -> tuple[int, int]:
        if not torch.is_inference_mode_enabled():
            with torch.inference_mode():
                return self(x)
        if len(x) != 1:
            raise ValueError(f"a batch of one takes one input, got {len(x)}: use early_exit")
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.input_format)
        last = self.num_exits - 1
        decide = self.row_decider(last + 1)
        for k, head, stages in self.exits:
            for stage in stages:
                x = stage(x)
            logits, gate = head(x)
            stop, pred = decide(k, logits, gate)
            if stop:
                return pred, k
        for stage in self.tail:
            x = stage(x)
        return decide(last, self.classifier(x), None)[1], last


def compact_rows(h: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep only the rows of ``h`` at positions ``pos`` by moving, in place, the kept rows that lie beyond
    the first ``len(pos)`` into the slots of rows that left: (h's first len(pos) rows, a view, and each
    kept row's new position). When one row in ten leaves, this moves at most that many rows, where a
    gather into a fresh tensor copies the nine that stay (at batch 256 on VGG-small x0.25 with rows
    leaving at every exit, the gathers took 7% of the network's time). The view keeps h's memory
    format. ``h`` must be the engine's own activation: its finished rows are overwritten. Counting the
    rows to move reads one number back from the device; on an accelerator, which copies fast and waits
    for such reads slowly, the kept rows are gathered instead (new positions None: in order)."""
    rows = _rows_outermost(h)
    if h.device.type != "cpu":
        gathered = rows.index_select(0, pos)
        return (gathered.permute(0, 3, 1, 2) if rows is not h else gathered), None
    n = len(pos)
    beyond = (pos >= n).nonzero().squeeze(1)          # kept rows outside the prefix, by their place in pos
    if len(beyond):
        taken = torch.zeros(len(h), dtype=torch.bool, device=h.device)
        taken[pos] = True
        holes = torch.nonzero_static(~taken[:n], size=len(beyond)).squeeze(1)   # prefix slots whose rows left
        rows.index_copy_(0, holes, rows.index_select(0, pos.index_select(0, beyond)))
        pos = pos.index_copy(0, beyond, holes)
    return h[:n], pos


def _rows_outermost(h: torch.Tensor) -> torch.Tensor:
    """h as a view whose rows are contiguous blocks (channels_last 4-d: NHWC), for copies along dim 0."""
    if h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last):
        return h.permute(0, 2, 3, 1)
    return h
