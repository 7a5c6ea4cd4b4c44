"""EENet (Ilhan et al., WACV 2024): a learned exit scheduler that meets an average-cost budget.

EENet takes a trained multi-exit network and fits, on the network's **validation** outputs only, a
tiny network per exit. Its linear part turns the exit's class probabilities, max probability,
normalised-entropy confidence and the earlier exits' scores into a **utility score** q_k trained
to predict whether exit k is right. Its MLP part gives assignment logits; a softmax over exits
turns them into a per-sample exit distribution that follows the utility scores (KL term) and
whose expected cost matches the budget (cost term). The mean distribution fixes the share of
samples per exit, and thresholds on q_k are validation quantiles that hand each exit its share.
A sample then leaves at the first exit with q_k >= t_k. The baselines use the same quantile
thresholds on max probability (MSDNet style) or entropy (BranchyNet style) with a geometric exit
distribution; patience (PABEE) is ``policies.Patience``.

Every fitting function takes the trained run and reads ``run.outputs("val")`` itself: no function
here accepts outputs to fit on, so a scheduler cannot be fitted on test data by mistake. The
fitted rules are ``ExitPolicy`` objects, evaluated on test by ``evaluate.evaluate_policy`` or run
for real by ``MultiExitNet.early_exit``. Costs and budgets are normalised MACs: exit k's cumulative
MACs over the plain backbone's (``MacTable.exit_fractions``).

Deviations from the released code (spec part B7), each a named option where it changes results:
  scalar scores (B7-1)        q_k = w.P_k + v.[max, conf, q_<k] is a scalar per sample (shape bug fixed)
  kl_loss name (B7-2)         the KL term is returned under its own name (the code returned ``ce_loss``)
  zero_grad (B7-3)            gradients are zeroed every step; ``zero_grad=False`` accumulates as released
  assignment (B7-4)           "softmax_logits" (default, option a) drops the last sigmoid; the released
                              "softmax_sigmoid" caps each exit's share (0.576 for K=3); "sequential"
                              is option b, pi_k = r_k prod_{j<k}(1 - r_j)
  previous_scores (B7-9)      "clamped" (default) feeds clamp(q_<k) to later exits at fit and test time
                              alike; "unclamped_at_test" reproduces the released train/test mismatch
  geometric budget (B7-11)    the baselines' geometric ratio is solved by bisection so the planned cost
                              equals the budget, instead of the first grid point that overshoots it
  best snapshot (B7-13)       the kept state is a copy taken at the best epoch, judged by the full
                              objective on all validation samples (the code kept the last state and
                              compared losses of different phases)
  eps in rho (B7-19)          rho = (clamp(q)^beta + 1e-8) / sum(...); the entropy uses log-softmax
  seeds                       the minibatch permutation is seeded (it was not)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import evaluate_policy
from .macs import MacTable
from .outputs import CachedOutputs
from .policies import Entropy, ExitPolicy, MaxProbability, normalised_entropy

__all__ = ["EENetConfig", "BudgetedFit", "UtilityScheduler", "EENetPolicy", "exit_features", "quantile_thresholds",
           "geometric_shares", "fit_eenet", "fit_geometric", "budget_grid", "compare_at_budgets", "auroc",
           "correctness_auroc"]


class RunLike(Protocol):
    """What the fitting functions need from a ``train.TrainedRun``: its cached outputs and MACs."""

    macs: MacTable

    def outputs(self, split: str, features: bool = False) -> CachedOutputs: ...


def _validation(run: RunLike) -> CachedOutputs:
    """The one place this module reads outputs to fit on: always the validation split."""
    return run.outputs("val")


# ---------------------------------------------------------------- features
def exit_features(logits: torch.Tensor) -> torch.Tensor:
    """[N, C] logits of one exit -> [N, C + 2]: class probabilities, max probability and the
    normalised-entropy confidence 1 - H(P)/log C (computed from log-softmax, so no log 0)."""
    p = torch.softmax(logits.float(), dim=1)
    return torch.cat([p, p.max(1, keepdim=True).values, 1 - normalised_entropy(logits)[:, None]], dim=1)


# ---------------------------------------------------------------- the scheduler network
class UtilityScheduler(nn.Module):
    """Per exit k: a bias-free linear utility score over [P_k, max, conf, q_<k] and an MLP
    (Linear, Sigmoid, Linear) giving the exit's assignment logit from the same inputs."""

    def __init__(self, num_exits: int, num_classes: int, hidden_rate: float = 0.5):
        super().__init__()
        dims = [num_classes + 2 + k for k in range(num_exits)]
        hidden = [max(1, int(d * hidden_rate)) for d in dims]
        self.score = nn.ModuleList(nn.Linear(d, 1, bias=False) for d in dims)
        self.assign = nn.ModuleList(nn.Sequential(nn.Linear(d, h), nn.Sigmoid(), nn.Linear(h, 1))
                                    for d, h in zip(dims, hidden))

    @property
    def num_exits(self) -> int:
        return len(self.score)

    def score_at(self, k: int, features: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Unclamped utility score of exit k [n] from its ``exit_features`` [n, C+2] and earlier scores [n, k]."""
        return self.score[k](torch.cat([features, previous], dim=1)).squeeze(1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[K, N, C+2] exit features -> (unclamped scores q [N, K], assignment logits [N, K]); later
        exits see the clamped scores of earlier ones, as in training."""
        q, a, previous = [], [], features.new_zeros(features.shape[1], 0)
        for k in range(self.num_exits):
            z = torch.cat([features[k], previous], dim=1)
            q.append(self.score[k](z).squeeze(1))
            a.append(self.assign[k](z).squeeze(1))
            previous = torch.cat([previous, q[-1].clamp(0, 1)[:, None]], dim=1)
        return torch.stack(q, 1), torch.stack(a, 1)


def _assignment(logits: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample exit distribution pi [N, K] and its log, from assignment logits."""
    if kind == "softmax_logits":
        return torch.softmax(logits, 1), torch.log_softmax(logits, 1)
    if kind == "softmax_sigmoid":
        pi = torch.softmax(torch.sigmoid(logits), 1)
    elif kind == "sequential":
        r = torch.sigmoid(logits[:, :-1])
        survive = torch.cumprod(1 - r, 1)
        pi = torch.cat([r[:, :1], r[:, 1:] * survive[:, :-1], survive[:, -1:]], 1)
    else:
        raise ValueError(f"assignment must be softmax_logits, softmax_sigmoid or sequential, got {kind!r}")
    return pi, torch.log(pi.clamp_min(1e-12))


# ---------------------------------------------------------------- the fitted rule
class EENetPolicy(ExitPolicy):
    """Exit at the first k whose utility score reaches ``thresholds[k]``; the last exit takes the rest."""

    def __init__(self, scheduler: UtilityScheduler, thresholds: Sequence[float], previous_scores: str = "clamped"):
        if previous_scores not in ("clamped", "unclamped_at_test"):
            raise ValueError(f"previous_scores must be clamped or unclamped_at_test, got {previous_scores!r}")
        if len(thresholds) != scheduler.num_exits - 1:
            raise ValueError(f"{len(thresholds)} thresholds given for {scheduler.num_exits} exits")
        self.scheduler = scheduler.eval()
        self.thresholds = tuple(float(t) for t in thresholds)
        self.previous_scores = previous_scores

    def init_state(self, n):
        return {"q": torch.zeros(n, 0)}

    @torch.no_grad()
    def decide(self, k, num_exits, logits, gate, state):
        q = self.scheduler.score_at(k, exit_features(logits), state["q"])
        t = self.thresholds[k] if k < len(self.thresholds) else -math.inf
        return q >= t, logits.argmax(1), {"q": torch.cat([state["q"], self._carried(q)[:, None]], 1)}

    def _carried(self, q: torch.Tensor) -> torch.Tensor:
        return q.clamp(0, 1) if self.previous_scores == "clamped" else q

    @torch.no_grad()
    def scores(self, outputs: CachedOutputs) -> torch.Tensor:
        """Unclamped utility score of every exit for every sample [N, K], as ``decide`` computes them."""
        previous, raw = torch.zeros(len(outputs), 0), []
        for k in range(outputs.num_exits):
            raw.append(self.scheduler.score_at(k, exit_features(outputs.logits[k]), previous))
            previous = torch.cat([previous, self._carried(raw[-1])[:, None]], 1)
        return torch.stack(raw, 1)


# ---------------------------------------------------------------- quantile thresholds
def quantile_thresholds(scores: torch.Tensor, shares: Sequence[float]) -> tuple[float, ...]:
    """Thresholds t_1..t_{K-1} on scores [K, N] (higher = readier to exit) so that, walking the exits
    in order, the floor(share_k * N) highest-scoring remaining samples leave at exit k."""
    k_exits, n = scores.shape
    remaining = torch.ones(n, dtype=torch.bool)
    thresholds = []
    for k in range(k_exits - 1):
        count = int(math.floor(shares[k] * n + 1e-9))
        left = scores[k, remaining]
        if count == 0 or len(left) == 0:
            t = math.inf
        else:
            t = torch.topk(left, min(count, len(left))).values[-1].item()
        thresholds.append(t)
        remaining &= ~(scores[k] >= t)
    return tuple(thresholds)


def geometric_shares(costs: Sequence[float], budget: float) -> list[float]:
    """Exit shares P_k proportional to gamma^k with planned cost sum_k P_k c_k = budget, gamma found by
    bisection on log gamma (MSDNet's budgeted protocol without its one-step overshoot, B7-11)."""
    c = torch.tensor(costs, dtype=torch.float64)
    if not c[0] <= budget <= c[-1]:
        raise ValueError(f"budget {budget:.4f} outside [{c[0]:.4f}, {c[-1]:.4f}], the first and last exit's cost")
    k = torch.arange(len(c), dtype=torch.float64)

    def shares(log_gamma: float) -> torch.Tensor:
        return torch.softmax(k * log_gamma, 0)

    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (shares(mid) * c).sum() < budget else (lo, mid)
    return shares((lo + hi) / 2).tolist()


# ---------------------------------------------------------------- fitting
@dataclass(frozen=True)
class EENetConfig:
    """Scheduler hyperparameters; the released CIFAR values are in comments."""

    epochs: int = 200              # released 1000
    batch_size: int = 512
    lr: float = 1e-2               # released 3e-5, far too slow for the cost term to converge (spec B6)
    weight_decay: float = 1e-2
    hidden_rate: float = 0.5       # MLP width = int(input dim * rate); 2 for BERT
    alpha_kl: float = 1e-3         # weight of the KL term (the code's alpha_ce)
    alpha_cost: float = 1e-2
    beta: float = 1.0              # sharpening of the KL target rho
    period: int = 10               # epochs per phase: utility (BCE) first, then assignment (KL + cost)
    patience: int = 100            # epochs without a better in-budget objective before stopping
    tolerance: float = 0.1         # in-budget band |expected cost - B| / B, for model selection and acceptance
    assignment: str = "softmax_logits"
    previous_scores: str = "clamped"
    zero_grad: bool = True
    decoupled_weight_decay: bool = True  # AdamW; released Adam's L2 outweighs the 1e-2-scaled r-phase loss

    def __post_init__(self):
        _assignment(torch.zeros(1, 2), self.assignment)
        if self.previous_scores not in ("clamped", "unclamped_at_test"):
            raise ValueError(f"previous_scores must be clamped or unclamped_at_test, got {self.previous_scores!r}")
        if self.epochs < 1 or self.period < 1 or self.batch_size < 1:
            raise ValueError("epochs, period and batch_size must be positive")


@dataclass
class BudgetedFit:
    """A rule fitted on validation for one budget; ``policy`` is what gets evaluated on test."""

    method: str
    budget: float
    policy: ExitPolicy
    planned_shares: list[float]     # exit shares the thresholds were set to give on validation
    expected_cost: float            # sum_k planned_share_k * c_k
    val_accuracy: float
    val_cost: float                 # realised on validation
    attempts: list[dict] = field(default_factory=list)  # EENet: one row per fit (seed)


def _losses(scheduler: UtilityScheduler, features: torch.Tensor, correct: torch.Tensor, costs: torch.Tensor,
            budget: float, cfg: EENetConfig) -> dict[str, torch.Tensor]:
    """The three terms of EENet's objective on a batch: features [K, b, C+2], correct [b, K] (0/1)."""
    q, a = scheduler(features)
    pi, log_pi = _assignment(a, cfg.assignment)
    qc = q.clamp(0, 1)
    omega = (pi / pi.sum(0, keepdim=True)).detach()
    bce = F.binary_cross_entropy(qc, correct, reduction="none")
    util = (omega * bce).sum(0).mean()
    rho = qc.detach() ** cfg.beta + 1e-8
    rho = rho / rho.sum(1, keepdim=True)
    kl = (rho * (rho.log() - log_pi)).mean()  # KLDivLoss(reduction="mean") as released (B7-14)
    cost = ((pi * costs).sum(1).mean() - budget).abs() / budget
    return {"utility": util, "kl": kl, "cost": cost}


def _fit_once(features: torch.Tensor, correct: torch.Tensor, costs: torch.Tensor, budget: float,
              cfg: EENetConfig, seed: int) -> tuple[UtilityScheduler, dict]:
    torch.manual_seed(seed)
    n = features.shape[1]
    scheduler = UtilityScheduler(features.shape[0], features.shape[2] - 2, cfg.hidden_rate)
    adam = torch.optim.AdamW if cfg.decoupled_weight_decay else torch.optim.Adam
    opt = adam(scheduler.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # drawn once, as released
    best, best_state, best_epoch, last = math.inf, None, -1, {}
    for epoch in range(cfg.epochs):
        utility_phase = (epoch // cfg.period) % 2 == 0
        scheduler.train()
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            terms = _losses(scheduler, features[:, idx], correct[idx], costs, budget, cfg)
            loss = terms["utility"] if utility_phase else cfg.alpha_kl * terms["kl"] + cfg.alpha_cost * terms["cost"]
            if cfg.zero_grad:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            scheduler.eval()
            full = _losses(scheduler, features, correct, costs, budget, cfg)
        objective = (full["utility"] + cfg.alpha_kl * full["kl"] + cfg.alpha_cost * full["cost"]).item()
        last = {"epoch": epoch + 1, "cost_loss": full["cost"].item(), "objective": objective}
        if full["cost"].item() < cfg.tolerance and objective < best:
            best, best_state, best_epoch = objective, copy.deepcopy(scheduler.state_dict()), epoch + 1
        elif best_state is not None and epoch + 1 - best_epoch >= cfg.patience:
            break
    if best_state is not None:
        scheduler.load_state_dict(best_state)
    return scheduler.eval(), {"epochs_run": last.get("epoch", 0), "best_epoch": best_epoch}


def fit_eenet(run: RunLike, budget: float, config: EENetConfig = EENetConfig(),
              seeds: Sequence[int] = (0, 1, 2)) -> BudgetedFit:
    """Fit one scheduler per seed on the run's validation outputs and keep, among the fits whose
    expected cost is within ``config.tolerance`` of the budget, the one with the best validation
    accuracy (the last fit if none qualifies, as released)."""
    val = _validation(run)
    costs = torch.tensor(run.macs.exit_fractions, dtype=torch.float32)
    features = torch.stack([exit_features(z) for z in val.logits])
    correct = (val.logits.argmax(2) == val.labels).float().T.contiguous()
    attempts, candidates = [], []
    for seed in seeds:
        scheduler, info = _fit_once(features, correct, costs, budget, config, seed)
        with torch.no_grad():
            _, a = scheduler(features)
            shares = _assignment(a, config.assignment)[0].mean(0)
        unset = EENetPolicy(scheduler, (math.inf,) * (len(costs) - 1), config.previous_scores)
        thresholds = quantile_thresholds(unset.scores(val).T, shares.tolist())
        policy = EENetPolicy(scheduler, thresholds, config.previous_scores)
        expected = float((shares * costs).sum())
        result = evaluate_policy(val, policy, run.macs)
        accepted = abs(expected - budget) / budget <= config.tolerance
        attempts.append({"seed": seed, **info, "expected_cost": expected, "val_accuracy": result.accuracy,
                         "val_cost": result.mean_fraction, "accepted": accepted})
        candidates.append((accepted, result.accuracy, policy, shares.tolist(), expected, result))
    accepted = [c for c in candidates if c[0]]
    _, _, policy, shares, expected, result = max(accepted, key=lambda c: c[1]) if accepted else candidates[-1]
    return BudgetedFit("EENet", budget, policy, shares, expected, result.accuracy, result.mean_fraction, attempts)


_CONFIDENCE = {
    "maxprob": (lambda z: torch.softmax(z.float(), 1).max(1).values, MaxProbability, 1.0),
    "entropy": (lambda z: -normalised_entropy(z), Entropy, -1.0),
}


def fit_geometric(run: RunLike, budget: float, score: str = "maxprob") -> BudgetedFit:
    """Baseline: a geometric exit distribution planned to cost ``budget``, handed out by validation
    quantiles of max probability (MSDNet style) or of negative normalised entropy (BranchyNet style)."""
    if score not in _CONFIDENCE:
        raise ValueError(f"score must be one of {sorted(_CONFIDENCE)}, got {score!r}")
    val = _validation(run)
    costs = run.macs.exit_fractions
    shares = geometric_shares(costs, budget)
    measure, policy_cls, sign = _CONFIDENCE[score]
    conf = torch.stack([measure(z) for z in val.logits])
    # Entropy exits when H <= t, i.e. -H >= -t: negating is exact, so val assignments match the policy.
    policy = policy_cls([sign * t for t in quantile_thresholds(conf, shares)])
    result = evaluate_policy(val, policy, run.macs)
    name = {"maxprob": "max-prob (MSDNet)", "entropy": "entropy (BranchyNet)"}[score]
    return BudgetedFit(name, budget, policy, shares, sum(s * c for s, c in zip(shares, costs)),
                       result.accuracy, result.mean_fraction)


# ---------------------------------------------------------------- sweeps and diagnostics
def budget_grid(run: RunLike, count: int = 9) -> list[float]:
    """``count`` budgets evenly inside (c_1, c_K), the first and last exit's normalised cost."""
    c = run.macs.exit_fractions
    return [c[0] + (c[-1] - c[0]) * (i + 1) / (count + 1) for i in range(count)]


def compare_at_budgets(run: RunLike, budgets: Sequence[float], config: EENetConfig = EENetConfig(),
                       seeds: Sequence[int] = (0, 1, 2)) -> tuple[list[dict], dict[tuple[str, float], BudgetedFit]]:
    """Fit EENet and both geometric baselines on validation at every budget; report each on test.
    Returns one row per (budget, method) and the fits keyed by (method, budget)."""
    test = run.outputs("test")
    rows, fits = [], {}
    for budget in budgets:
        for fit in (fit_eenet(run, budget, config, seeds), fit_geometric(run, budget, "maxprob"),
                    fit_geometric(run, budget, "entropy")):
            r = evaluate_policy(test, fit.policy, run.macs)
            fits[(fit.method, budget)] = fit
            rows.append({"budget": budget, "method": fit.method, "val_expected_cost": fit.expected_cost,
                         "val_cost": fit.val_cost, "val_accuracy": fit.val_accuracy, "test_cost": r.mean_fraction,
                         "test_accuracy": r.accuracy, "cost_error": (r.mean_fraction - budget) / budget,
                         "test_exit_shares": r.exit_shares, "planned_shares": fit.planned_shares})
    return rows, fits


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve: P(score of a random positive > that of a random negative), ties
    counting 1/2 (the Mann-Whitney statistic over average ranks)."""
    positive = positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(score.double(), return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def correctness_auroc(policy: EENetPolicy, outputs: CachedOutputs) -> list[dict]:
    """Per exit, how well each score ranks right above wrong predictions of that exit: the utility
    score q_k against max probability and the normalised-entropy confidence."""
    q = policy.scores(outputs)
    rows = []
    for k in range(outputs.num_exits):
        z = outputs.logits[k]
        correct = z.argmax(1) == outputs.labels
        feats = exit_features(z)
        rows.append({"exit": k + 1, "accuracy": correct.float().mean().item(), "utility score": auroc(q[:, k], correct),
                     "max probability": auroc(feats[:, -2], correct), "entropy confidence": auroc(feats[:, -1], correct)})
    return rows

