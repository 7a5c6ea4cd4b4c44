"""Exit rules, written once and used by both the offline evaluator and the real early-exit forward.

A policy looks at one exit's outputs for the rows that are still running and says which of them
stop there and what they predict. Per-row state (a patience counter, a set of remaining classes)
travels in a dict of tensors whose first dimension is the row; the driver drops exited rows from it.
Decisions depend on a row's own values only, which is why the real forward (which removes exited
rows from the batch) and the offline evaluator (which reads cached logits) agree exactly, with one
caveat: a row's logits can differ in the last bit between a batch of one and a bigger batch (BLAS rounds
a matrix-vector product differently from a matrix product), so at batch 1 a row whose score lies within
that rounding of a threshold could go either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["ExitPolicy", "RowDecider", "PerExitThresholds", "MaxProbability", "Entropy", "Patience", "GateThreshold",
           "NeverExit", "run_exit_policy", "normalised_entropy"]

State = dict[str, torch.Tensor]
RowDecider = Callable[[int, torch.Tensor, "torch.Tensor | None"], tuple[bool, int]]


class ExitPolicy:
    """Base class. Subclasses implement ``decide``; the last exit always takes every row. A rule that
    remembers earlier exits keeps that in ``state``, a dict of per-row tensors that starts empty and that
    the rule fills at the first exit, on the logits' device (the driver selects its rows as rows leave)."""

    def decide(self, k: int, num_exits: int, logits: torch.Tensor, gate: torch.Tensor | None,
               state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Return (exit here? bool [n], prediction long [n], new state) for the active rows."""
        raise NotImplementedError

    def row_decider(self, num_exits: int) -> RowDecider:
        """The rule for one row as a function ``decide(k, logits, gate) -> (stop, prediction)`` of
        Python values, called at exit k = 0, 1, ... in order, which keeps the row's state to itself.
        The batch-of-one forward calls it at every exit, right after a convolution, when every Python
        step and tensor call runs from cold caches: a rule may give one with fewer tensor operations,
        its constants bound once. It must decide exactly as ``decide`` does (the same comparisons on
        the same float values); the prediction counts only where the row stops or at the final exit
        (elsewhere a rule may skip reading it)."""
        state = {}

        def decide(k: int, logits: torch.Tensor, gate: torch.Tensor | None) -> tuple[bool, int]:
            nonlocal state
            stop, pred, state = self.decide(k, num_exits, logits, gate, state)
            return bool(stop[0]), int(pred[0])
        return decide


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) divided by log(C): 0 = certain, 1 = uniform."""
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1) / math.log(logits.shape[1])


@dataclass(frozen=True)
class PerExitThresholds(ExitPolicy):
    """One threshold per early exit on a per-row confidence: a row leaves at the first exit whose
    confidence reaches (>=) the threshold; the final exit takes every row that is left.

    Subclasses give ``confidence`` (higher = readier to leave) and ``prediction``; a rule whose natural
    threshold runs the other way (entropy: leave when *low*) converts in ``cut``. The vectorised
    sweeps of ``evaluate`` use exactly these three methods, so a sweep and ``decide`` cannot disagree.
    """

    thresholds: tuple[float, ...]

    def __post_init__(self):
        values = tuple(float(t) for t in self.thresholds)
        if not values:
            raise ValueError("give one threshold per early exit (at least one)")
        object.__setattr__(self, "thresholds", values)

    def confidence(self, k: int, logits: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def prediction(self, k: int, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1)

    def cut(self, thresholds: torch.Tensor) -> torch.Tensor:
        """Thresholds in the rule's own unit -> thresholds on ``confidence``."""
        return thresholds

    def threshold_of(self, cuts: torch.Tensor) -> torch.Tensor:
        """The inverse of ``cut``: thresholds on ``confidence`` -> the rule's own unit."""
        return cuts

    def _cuts(self) -> list[torch.Tensor]:
        """Each exit's threshold on ``confidence`` (float32, as every sweep compares), made once."""
        cuts = self.__dict__.get("_cut_cache")
        if cuts is None:
            cuts = [self.cut(torch.tensor(t, dtype=torch.float32)) for t in self.thresholds]
            object.__setattr__(self, "_cut_cache", cuts)
        return cuts

    def decide(self, k, num_exits, logits, gate, state):
        pred = self.prediction(k, logits)
        if k >= len(self.thresholds):  # the final exit: the driver takes every row there
            return torch.zeros(len(logits), dtype=torch.bool, device=logits.device), pred, state
        return self.confidence(k, logits, gate) >= self._cuts()[k], pred, state

    def _cut_values(self) -> list[float]:
        """``_cuts`` as Python floats (exact: float32 values), made once."""
        values = self.__dict__.get("_cut_value_cache")
        if values is None:
            values = [c.item() for c in self._cuts()]
            object.__setattr__(self, "_cut_value_cache", values)
        return values

    def row_decider(self, num_exits):
        # a float32 (or float64) confidence and a float32 cut compare exactly as Python floats; the
        # prediction is read only where the row stops (one readout less at every exit it passes)
        cuts, early, confidence, prediction = self._cut_values(), len(self.thresholds), self.confidence, self.prediction

        def decide(k, logits, gate):
            if k < early and confidence(k, logits, gate).item() < cuts[k]:
                return False, -1
            return True, prediction(k, logits).item()
        return decide


class MaxProbability(PerExitThresholds):
    """Exit at k when the largest softmax probability reaches ``thresholds[k]``."""

    def confidence(self, k, logits, gate):
        return torch.softmax(logits.float(), dim=1).amax(1)


class Entropy(PerExitThresholds):
    """Exit at k when the normalised entropy is at most ``thresholds[k]`` (BranchyNet's rule); the
    confidence is the negated entropy, so the rule reads "-H >= -t" like every other threshold."""

    def confidence(self, k, logits, gate):
        return -normalised_entropy(logits)

    def cut(self, thresholds):
        return -thresholds

    def threshold_of(self, cuts):
        return -cuts


@dataclass(frozen=True)
class Patience(ExitPolicy):
    """Exit once the argmax has stayed the same for ``patience`` consecutive exits (PABEE)."""

    patience: int

    def __post_init__(self):
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1, got {self.patience}")

    def decide(self, k, num_exits, logits, gate, state):
        # state (the previous argmax and its run length) starts at the first exit, on the logits' device
        pred = logits.argmax(1)
        count = torch.ones_like(pred)
        if state:
            count = torch.where(pred == state["last"], state["count"] + 1, count)
        return count >= self.patience, pred, {"last": pred, "count": count}


class GateThreshold(PerExitThresholds):
    """Exit at the first branch whose gate probability sigmoid(g) reaches ``thresholds[k]``
    (differentiable branching's hard exits). The final classifier has no gate and takes the rest."""

    def confidence(self, k, logits, gate):
        if gate is None:
            raise ValueError("GateThreshold needs gated heads")
        return torch.sigmoid(gate.float())


class NeverExit(ExitPolicy):
    """Every row runs to the final exit: the plain backbone as a reference."""

    def decide(self, k, num_exits, logits, gate, state):
        return torch.zeros(len(logits), dtype=torch.bool, device=logits.device), logits.argmax(1), state


OutputsAt = Callable[[int, torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, "torch.Tensor | None"]]


def run_exit_policy(policy: ExitPolicy, num_exits: int, n: int,
                    outputs_at: OutputsAt) -> tuple[torch.Tensor, torch.Tensor]:
    """Walk the exits in order, asking ``policy`` which active rows stop.

    ``outputs_at(k, active, keep)`` returns exit k's (logits, gate) for the rows ``active`` (indices
    into the original batch). ``keep`` says how ``active`` changed since the previous call: None when
    no row left (always at the first call), else the positions, among the previous call's rows, of
    the rows still running. Returns (prediction, exit index) per row.

    The only host synchronisation per exit is reading how many rows stop (one ``nonzero``); an exit
    where nobody stops costs the decision and nothing else, and the bookkeeping stays on the
    device of the logits.
    """
    active = keep = prediction = exit_index = None
    state = {}
    for k in range(num_exits):
        if active is None:  # first exit: the batch's device is known once outputs arrive
            logits, gate = outputs_at(k, torch.arange(n), None)
            active = torch.arange(n, device=logits.device)
            prediction = torch.zeros(n, dtype=torch.long, device=logits.device)
            exit_index = torch.full((n,), num_exits - 1, dtype=torch.long, device=logits.device)
        else:
            logits, gate = outputs_at(k, active, keep)
        stop, pred, state = policy.decide(k, num_exits, logits, gate, state)
        if k == num_exits - 1:
            prediction[active] = pred
            break
        left = stop.nonzero().squeeze(1)
        if len(left) == 0:
            keep = None
            continue
        rows = active.index_select(0, left)
        prediction[rows] = pred.index_select(0, left)
        exit_index[rows] = k
        if len(left) == len(active):
            break
        keep = (~stop).nonzero().squeeze(1)
        active = active.index_select(0, keep)
        state = {name: value.index_select(0, keep) for name, value in state.items()}
    return prediction, exit_index
