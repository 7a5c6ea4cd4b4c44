"""EENet: a learned exit scheduler that meets an average-cost budget on any trained multi-exit network.

What it is for: given a trained multi-exit network and a budget (mean cost per sample), decide per
sample where to stop so that the average cost meets the budget and accuracy is as high as it can be,
learning the decision from the network's validation outputs rather than hand-setting confidence
thresholds. Ilhan, Liu, Chow, Wei, Wu, Lee, Kompella, Latapie, Liu, "EENet: Learning to early exit for
adaptive inference" (arXiv 2301.07099 v1, 2023; v2, WACV 2024: "Adaptive Deep Neural Network Inference
Optimization with EENet"); released code git-disl/EENet.

EENet takes a trained multi-exit network and fits, on the network's **validation** outputs only, a
tiny network per exit. Its linear part turns the exit's class probabilities, max probability,
normalised-entropy confidence and the earlier exits' scores into a **utility score** q_k trained
to predict whether exit k is right. Its MLP part gives assignment logits; a softmax over exits
turns them into a per-sample exit distribution that follows the utility scores (KL term) and
whose expected cost matches the budget (cost term). The mean distribution fixes the share of
samples per exit, and thresholds on q_k are validation quantiles that hand each exit its share.
A sample then leaves at the first exit with q_k >= t_k. The baselines use the same quantile
thresholds on max probability (MSDNet style) or entropy (BranchyNet style) with a geometric exit
distribution; patience (PABEE) is ``policies.Patience``, put to a budget by ``fit_patience`` (the most
accurate patience value within it on validation). The baselines live in ``methods.eenet_baselines``.

Every fitting function takes the trained run and reads ``run.outputs("val")`` itself: no function
here accepts outputs to fit on, so a scheduler cannot be fitted on test data by mistake. The
fitted rules are ``ExitPolicy`` objects, evaluated on test by ``evaluate.evaluate_policy`` or run
for real by ``MultiExitNet.early_exit``. Costs and budgets are normalised MACs: exit k's cumulative
MACs over the plain backbone's (``MacTable.exit_fractions``).

Use it on a network of your own: the fitting functions take a ``RunLike`` (a ``train.TrainedRun`` is
one), anything with ``macs`` (a ``MacTable``) and ``outputs(split, features=False)`` returning the
split's ``CachedOutputs`` ("val" to fit; "test" only to evaluate)::

    from earlyexit.evaluate import evaluate_policy
    from earlyexit.macs import mac_table
    from earlyexit.methods.eenet import budget_grid, fit_eenet
    from earlyexit.outputs import collect_outputs

    class MyRun:                                    # net: a trained MultiExitNet, loaders yield (x, y)
        def __init__(self, net, loaders):
            self.macs = mac_table(net)
            self.cached = {split: collect_outputs(net, loader) for split, loader in loaders.items()}

        def outputs(self, split, features=False):
            return self.cached[split]

    run = MyRun(net, {"val": val_loader, "test": test_loader})
    fit = fit_eenet(run, budget=budget_grid(run, 5)[2])   # -> BudgetedFit; reads "val" only
    print(evaluate_policy(run.outputs("test"), fit.policy, run.macs).summary())
    result = net.early_exit(x, fit.policy, run.macs.exit_macs)   # the real early exit on a batch x

Deviations from the released code (git-disl/EENet; functions of ``utils/predict_helpers.py`` unless
another file is named), each a named option where it changes results:
  scalar scores               q_k = w.P_k + v.[max, conf, q_<k] is a scalar per sample; ``ScoreNormalizer.forward``
                              adds an [N, 1] to an [N, 1, 1] tensor (an [N, N, 1] broadcast), while the shipped
                              schedulers (``outputs/*/ea_pkls``) hold weights that give the intended scalar
  kl_loss name                the KL term is returned under its own name (``ExitAssigner.compute_loss``
                              returns the undefined ``ce_loss``)
  zero_grad                   gradients are zeroed every step; ``zero_grad=False`` accumulates them across steps
                              and phases as ``fit_exit_assigner`` does
  assignment                  "softmax_logits" (default) drops the last Sigmoid of ``ScoreNormalizer.prob_out``;
                              the released "softmax_sigmoid" (a softmax of sigmoids) caps each exit's share at
                              e / (e + K - 1), 0.576 for K=3; "sequential" uses stopping probabilities
                              pi_k = r_k prod_{j<k}(1 - r_j)
  previous_scores             "clamped" (default) feeds clamp(q_<k) to later exits at fit and test time alike;
                              "unclamped_at_test" reproduces the released mismatch (``compute_loss`` clamps,
                              ``test_exit_assigner`` in ``utils/predict_utils.py`` does not)
  geometric budget            the baselines' geometric ratio is solved by bisection so the planned cost equals
                              the budget, instead of the first point of the grid over p that overshoots it
                              (``dynamic_evaluate`` in ``utils/predict_utils.py``)
  best snapshot               the kept state is a copy taken after the best epoch, judged by the epoch's mean
                              minibatch objective with all three terms whatever the phase (``fit_exit_assigner``
                              keeps a reference to the last state and compares losses of different phases)
  recipe                      optimiser (Adam with coupled L2 as released, or AdamW), learning rate and epochs are
                              chosen on validation by ``sweep_recipes`` (released: Adam, 3e-5, 1000 epochs)
  previous-score gradients    detached, as released (``detach_previous=True``); ``False`` lets a later exit's loss
                              train the earlier exits' scores through the scores it reads
  eps in rho                  rho = (clamp(q)^beta + 1e-8) / sum(...) (``compute_loss`` divides 0 by 0 when every
                              clamped score of a sample is 0); the entropy uses log-softmax (``prepare_input``
                              computes P log P, so log 0)
  seeds                       the minibatch permutation is seeded (``fit_exit_assigner`` draws it from NumPy
                              unseeded)
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import rehearsal
from ..evaluate import evaluate_policy
from ..macs import MacTable
from ..outputs import CachedOutputs
from ..paths import artifacts_root, atomic_save, config_hash, load_cached
from ..policies import ExitPolicy, normalised_entropy

__all__ = ["RunLike", "validation_outputs", "exit_features", "UtilityScheduler", "EENetPolicy", "quantile_thresholds",
           "OPTIMIZERS", "EENetConfig", "Recipe", "BudgetedFit", "fit_eenet_budgets", "fit_eenet", "budget_grid", "RecipeSweep", "recipe_grid", "sweep_recipes", "pool_sweeps",
           "sweep_budgets", "scheduler_macs", "auroc", "correctness_auroc"]


class RunLike(Protocol):
    """What the fitting functions need from a ``train.TrainedRun``: its cached outputs and MACs."""

    macs: MacTable

    def outputs(self, split: str, features: bool = False) -> CachedOutputs: ...


def validation_outputs(run: RunLike) -> CachedOutputs:
    """The one place EENet and its baselines (``methods.eenet_baselines``) read outputs to fit on: always
    the validation split."""
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

    def forward(self, features: torch.Tensor, detach_previous: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """[K, N, C+2] exit features -> (unclamped scores q [N, K], assignment logits [N, K]); later
        exits see the clamped scores of earlier ones, as in training. ``detach_previous``: those
        earlier scores carry no gradient into the later exits' losses, as in the released code
        (git-disl/EENet), so each q_k is trained by its own exit's loss alone."""
        q, a, previous = [], [], features.new_zeros(features.shape[1], 0)
        for k in range(self.num_exits):
            z = torch.cat([features[k], previous], dim=1)
            q.append(self.score[k](z).squeeze(1))
            a.append(self.assign[k](z).squeeze(1))
            carried = q[-1].clamp(0, 1)
            previous = torch.cat([previous, (carried.detach() if detach_previous else carried)[:, None]], dim=1)
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
    """Exit at the first k whose utility score reaches ``thresholds[k]``; the last exit takes the rest.
    The scheduler scores on its own device: on an accelerator, move it with the network."""

    def __init__(self, scheduler: UtilityScheduler, thresholds: Sequence[float], previous_scores: str = "clamped"):
        if previous_scores not in ("clamped", "unclamped_at_test"):
            raise ValueError(f"previous_scores must be clamped or unclamped_at_test, got {previous_scores!r}")
        if len(thresholds) != scheduler.num_exits - 1:
            raise ValueError(f"{len(thresholds)} thresholds given for {scheduler.num_exits} exits")
        self.scheduler = scheduler.eval()
        self.thresholds = tuple(float(t) for t in thresholds)
        # ``q >= t`` on a float32 score compares with float32(t): row_decider compares with these
        self._cuts = torch.tensor(self.thresholds, dtype=torch.float32).tolist()
        self.previous_scores = previous_scores

    @torch.no_grad()
    def decide(self, k, num_exits, logits, gate, state):
        previous = state["q"] if state else torch.zeros(len(logits), 0, device=logits.device)
        q = self.scheduler.score_at(k, exit_features(logits), previous)
        t = self.thresholds[k] if k < len(self.thresholds) else -math.inf
        return q >= t, logits.argmax(1), {"q": torch.cat([previous, self._carried(q)[:, None]], 1)}

    def row_decider(self, num_exits):
        """``decide`` on one row with fewer tensor operations: the same score (the same operations on the
        same values), compared as torch compares it (the threshold rounded to float32); no score at the
        last exit, which takes the row anyway; the prediction read only where the row stops."""
        early, score_at, cuts, carried = len(self.thresholds), self.scheduler.score_at, self._cuts, self._carried
        previous = None                        # the earlier exits' scores, made at the first exit

        def decide(k, logits, gate):          # in the batch-of-one forward's inference mode: no graph
            nonlocal previous
            if k < early:
                if previous is None:
                    previous = torch.zeros(1, 0, device=logits.device)
                q = score_at(k, exit_features(logits), previous)
                if q.item() < cuts[k]:
                    previous = torch.cat([previous, carried(q)[:, None]], 1)
                    return False, -1
            return True, logits.argmax(1).item()
        return decide

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


# ---------------------------------------------------------------- fitting
OPTIMIZERS = ("adam", "adamw")


@dataclass(frozen=True)
class EENetConfig:
    """Scheduler hyperparameters; the released CIFAR values are in comments. The recipe (optimizer, lr,
    epochs) is chosen on validation by ``sweep_recipes``; the defaults are only a starting point."""

    epochs: int = 200              # released 1000
    batch_size: int = 512
    lr: float = 1e-2               # released 3e-5
    optimizer: str = "adamw"       # released "adam" (weight decay coupled into the gradient, L2)
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
    detach_previous: bool = True   # earlier exits' scores enter later exits without gradient (released); False keeps it
    zero_grad: bool = True

    def __post_init__(self):
        _assignment(torch.zeros(1, 2), self.assignment)
        if self.previous_scores not in ("clamped", "unclamped_at_test"):
            raise ValueError(f"previous_scores must be clamped or unclamped_at_test, got {self.previous_scores!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.epochs < 1 or self.period < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, period, batch_size and lr must be positive")

    @property
    def recipe(self) -> "Recipe":
        return Recipe(self.optimizer, self.lr, self.epochs)


@dataclass(frozen=True)
class Recipe:
    """How a scheduler is trained: the choice ``sweep_recipes`` makes on validation."""

    optimizer: str
    lr: float
    epochs: int

    def label(self) -> str:
        return f"{self.optimizer} lr {self.lr:g}, {self.epochs} epochs"


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
    splits_read: tuple[str, ...] = ()  # every split the fitting read through the run (set by a study)


def _losses(scheduler: UtilityScheduler, features: torch.Tensor, correct: torch.Tensor, costs: torch.Tensor,
            budget: float | torch.Tensor, cfg: EENetConfig) -> dict[str, torch.Tensor]:
    """The three terms of EENet's objective on a batch: features [K, b, C+2], correct [b, K] (0/1)."""
    q, a = scheduler(features, cfg.detach_previous)
    pi, log_pi = _assignment(a, cfg.assignment)
    qc = q.clamp(0, 1)
    omega = (pi / pi.sum(0, keepdim=True)).detach()
    bce = F.binary_cross_entropy(qc, correct, reduction="none")
    util = (omega * bce).sum(0).mean()
    rho = qc.detach() ** cfg.beta + 1e-8
    rho = rho / rho.sum(1, keepdim=True)
    kl = (rho * (rho.log() - log_pi)).mean()  # KLDivLoss(reduction="mean") as in the released ``compute_loss``
    cost = ((pi * costs).sum(1).mean() - budget).abs() / budget
    return {"utility": util, "kl": kl, "cost": cost}


@dataclass(frozen=True)
class _Job:
    """One scheduler of a stacked fit: its seed (initialisation and minibatch order), budget and recipe."""

    seed: int
    budget: float
    optimizer: str
    lr: float


def _fit_stacked(features: torch.Tensor, correct: torch.Tensor, costs: torch.Tensor, jobs: Sequence[_Job],
                 cfg: EENetConfig, horizons: Sequence[int]) -> list[list[tuple[dict, dict]]]:
    """Fit one scheduler per job in one stacked pass (``torch.func.vmap`` over their parameters) and return,
    per horizon and job, the state dict (and run info) of what the released loop keeps had it run for that
    many epochs: the state after the epoch of the lowest mean minibatch objective among the epochs whose
    mean cost term is within ``tolerance``, stopping after ``patience`` epochs without a lower one (the last
    state if no epoch was within tolerance).

    The jobs do not interact: each has its own initialisation, minibatch order, parameters and Adam
    moments (Adam and AdamW act element by element), so a job follows the same arithmetic as alone, up
    to the rounding of batched products (which Adam's normalisation amplifies over many steps). A job
    that has stopped leaves the stack. A fit of E epochs is the first E epochs of a longer one, so one
    pass of max(horizons) epochs gives every horizon."""
    from torch.func import functional_call, stack_module_state, vmap

    horizons = sorted({int(h) for h in horizons})
    n, r, k_exits, classes = features.shape[1], len(jobs), features.shape[0], features.shape[2] - 2
    models = []
    for job in jobs:
        torch.manual_seed(job.seed)
        models.append(UtilityScheduler(k_exits, classes, cfg.hidden_rate))
    store, _ = stack_module_state(models)
    # every job's parameters in one row of a flat [jobs, P] tensor: Adam's element-wise update is then a
    # handful of operations per step instead of a handful per parameter tensor (same arithmetic)
    names = list(store)
    shapes = [store[k].shape[1:] for k in names]
    sizes = [math.prod(shape) for shape in shapes]
    flat_store = torch.cat([store[k].detach().reshape(r, -1) for k in names], 1)
    base = copy.deepcopy(models[0]).to("meta")

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: part.view(len(flat), *shape) for k, shape, part in zip(names, shapes, flat.split(sizes, 1))}

    lr_all = torch.tensor([j.lr for j in jobs])
    coupled_all = torch.tensor([j.optimizer == "adam" for j in jobs], dtype=torch.float32)
    budget_all = torch.tensor([j.budget for j in jobs])
    perm_all = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(j.seed)) for j in jobs])
    m_all, v_all = torch.zeros_like(flat_store), torch.zeros_like(flat_store)
    acc_all = torch.zeros_like(flat_store)   # summed gradients when they are never zeroed
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def terms(p, feats, corr, budget):
        return _losses(lambda x, d: functional_call(base, p, (x, d)), feats, corr, costs, budget, cfg)

    batched = vmap(terms, in_dims=(0, 0, 0, 0))
    best = torch.full((r,), math.inf)
    best_epoch = torch.full((r,), -1, dtype=torch.long)
    ran = torch.zeros(r, dtype=torch.long)
    best_state = flat_store.clone()
    snapshots: dict[int, tuple] = {}
    active = torch.arange(r)
    step, epochs = 0, rehearsal.cap(horizons[-1], rehearsal.MAX_STEPS)  # a rehearsal fits for two epochs

    def load(rows):
        return (flat_store[rows].clone().requires_grad_(), m_all[rows].clone(), v_all[rows].clone(),
                acc_all[rows].clone())

    def save(rows, params, m, v, acc):
        flat_store[rows], m_all[rows], v_all[rows], acc_all[rows] = params.detach(), m, v, acc

    params, m, v, acc = load(active)
    for epoch in range(epochs):
        utility_phase = (epoch // cfg.period) % 2 == 0
        lr, coupled = lr_all[active, None], coupled_all[active, None]
        budgets, perms = budget_all[active], perm_all[active]
        total, cost_sum, batches = torch.zeros(len(active)), torch.zeros(len(active)), 0
        for start in range(0, n, cfg.batch_size):
            idx = perms[:, start:start + cfg.batch_size]
            out = batched(unflatten(params), features[:, idx].transpose(0, 1), correct[idx], budgets)
            loss = out["utility"] if utility_phase else cfg.alpha_kl * out["kl"] + cfg.alpha_cost * out["cost"]
            (g,) = torch.autograd.grad(loss.sum(), [params])
            step += 1
            with torch.no_grad():
                total += out["utility"] + cfg.alpha_kl * out["kl"] + cfg.alpha_cost * out["cost"]
                cost_sum += out["cost"]
                batches += 1
                if not cfg.zero_grad:  # the released loop never zeroes: gradients add up over steps
                    acc += g
                    g = acc.clone()
                g += (coupled * cfg.weight_decay) * params                  # Adam: L2 in the gradient
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v / (1 - beta2 ** step)).sqrt_().add_(eps)
                params.mul_(1 - (1 - coupled) * lr * cfg.weight_decay)      # AdamW: decoupled decay
                params.sub_(lr / (1 - beta1 ** step) * m / denom)
        with torch.no_grad():
            objective, cost = total / batches, cost_sum / batches
            better = (cost < cfg.tolerance) & (objective < best[active])
            rows = active[better]
            best[rows], best_epoch[rows] = objective[better], epoch + 1
            best_state[rows] = params[better]
            ran[active] = epoch + 1
            stop = ~better & (best_epoch[active] >= 0) & (epoch + 1 - best_epoch[active] >= cfg.patience)
            if epoch + 1 in horizons or epoch + 1 == epochs or bool(stop.any()):
                save(active, params, m, v, acc)
            if epoch + 1 in horizons or epoch + 1 == epochs:
                snapshots[epoch + 1] = (best_state.clone(), flat_store.clone(), best_epoch.clone(), ran.clone())
            if bool(stop.any()):
                active = active[~stop]
                if len(active) == 0:
                    break
                params, m, v, acc = load(active)
    last = snapshots.get(epoch + 1) or (best_state.clone(), flat_store, best_epoch, ran)
    result = []
    for h in horizons:
        state, final, chosen, runs = snapshots.get(h, last)
        per_job = []
        for i in range(r):
            row = (state if chosen[i] >= 0 else final)[i:i + 1]
            per_job.append(({k: x[0].clone() for k, x in unflatten(row).items()},
                            {"epochs_run": int(runs[i]), "best_epoch": int(chosen[i])}))
        result.append(per_job)
    return result


def _fit_stacked_cached(features: torch.Tensor, correct: torch.Tensor, costs: torch.Tensor, jobs: Sequence[_Job],
                        cfg: EENetConfig, horizons: Sequence[int]) -> list[list[tuple[UtilityScheduler, dict]]]:
    """``_fit_stacked`` through a cache in ``artifacts/eenet_fits/`` keyed by everything it reads, so a
    notebook that fits the same stack again (05 repeats 04's recipe sweep and per-network fits) loads it.
    A stack is cached whole: a job's result can depend on the other jobs of its stack by rounding."""
    digest = hashlib.sha256()
    for t in (features, correct, costs):
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    key = config_hash({"tensors": digest.hexdigest(), "jobs": [asdict(j) for j in jobs], "config": asdict(cfg),
                       "horizons": sorted({int(h) for h in horizons}), "rehearsal": rehearsal.active()})
    path = artifacts_root() / "eenet_fits" / f"{key}.pt"
    stored = load_cached(path)
    if stored is None:
        stored = _fit_stacked(features, correct, costs, jobs, cfg, horizons)
        atomic_save(stored, path)
    result = []
    for per_job in stored:
        models = []
        for state, info in per_job:
            model = UtilityScheduler(features.shape[0], features.shape[2] - 2, cfg.hidden_rate)
            model.load_state_dict(state)
            models.append((model.eval(), info))
        result.append(models)
    return result


def _finish(scheduler: UtilityScheduler, val: CachedOutputs, features: torch.Tensor, costs: torch.Tensor,
            budget: float, config: EENetConfig, macs: MacTable) -> tuple[EENetPolicy, list[float], float, object]:
    """Quantile thresholds on validation from a fitted scheduler's mean exit distribution."""
    with torch.no_grad():
        _, a = scheduler(features)
        shares = _assignment(a, config.assignment)[0].mean(0)
    unset = EENetPolicy(scheduler, (math.inf,) * (len(costs) - 1), config.previous_scores)
    thresholds = quantile_thresholds(unset.scores(val).T, shares.tolist())
    policy = EENetPolicy(scheduler, thresholds, config.previous_scores)
    return policy, shares.tolist(), float((shares * costs).sum()), evaluate_policy(val, policy, macs)


def _val_tensors(run: RunLike) -> tuple[CachedOutputs, torch.Tensor, torch.Tensor, torch.Tensor]:
    val = validation_outputs(run)
    costs = torch.tensor(run.macs.exit_fractions, dtype=torch.float32)
    features = torch.stack([exit_features(z) for z in val.logits])
    correct = (val.logits.argmax(2) == val.labels).float().T.contiguous()
    return val, features, correct, costs


def fit_eenet_budgets(run: RunLike, budgets: Sequence[float], config: EENetConfig = EENetConfig(),
                      seeds: Sequence[int] = (0, 1, 2)) -> dict[float, BudgetedFit]:
    """At every budget, fit one scheduler per seed on the run's validation outputs (all in one stacked
    pass) and keep, among the fits whose expected cost is within ``config.tolerance`` of the budget,
    the one with the best validation accuracy (the last seed's fit if none qualifies, as released)."""
    val, features, correct, costs = _val_tensors(run)
    jobs = [_Job(seed, float(b), config.optimizer, config.lr) for b in budgets for seed in seeds]
    fitted = _fit_stacked_cached(features, correct, costs, jobs, config, [config.epochs])[0]
    fits = {}
    for b_i, budget in enumerate(budgets):
        attempts, candidates = [], []
        for s_i, seed in enumerate(seeds):
            scheduler, info = fitted[b_i * len(seeds) + s_i]
            policy, shares, expected, result = _finish(scheduler, val, features, costs, budget, config, run.macs)
            accepted = abs(expected - budget) / budget <= config.tolerance
            attempts.append({"seed": seed, **info, "expected_cost": expected, "val_accuracy": result.accuracy,
                             "val_cost": result.mean_fraction, "accepted": accepted})
            candidates.append((accepted, result.accuracy, policy, shares, expected, result))
        accepted = [c for c in candidates if c[0]]
        _, _, policy, shares, expected, result = max(accepted, key=lambda c: c[1]) if accepted else candidates[-1]
        fits[budget] = BudgetedFit("EENet", budget, policy, shares, expected, result.accuracy, result.mean_fraction,
                                   attempts)
    return fits


def fit_eenet(run: RunLike, budget: float, config: EENetConfig = EENetConfig(),
              seeds: Sequence[int] = (0, 1, 2)) -> BudgetedFit:
    """``fit_eenet_budgets`` at one budget."""
    return fit_eenet_budgets(run, [budget], config, seeds)[budget]


# ---------------------------------------------------------------- budgets
def budget_grid(run: RunLike, count: int = 9) -> list[float]:
    """``count`` budgets evenly inside (c_1, c_K), the first and last exit's normalised cost."""
    c = run.macs.exit_fractions
    return [c[0] + (c[-1] - c[0]) * (i + 1) / (count + 1) for i in range(count)]


# ---------------------------------------------------------------- the scheduler's training recipe
@dataclass
class RecipeSweep:
    """Every (recipe, scheduler seed, budget) fit of ``sweep_recipes`` on validation and the recipe chosen."""

    rows: list[dict]          # one per fit
    summary: list[dict]       # one per recipe: in-budget fits, their mean validation accuracy
    chosen: Recipe
    budgets: list[float]      # every budget swept (``pool_sweeps``: over all networks; each row names its own)
    seeds: list[int]
    rule: str = ("the recipe with the most fits whose expected cost is within the tolerance of the budget on "
                 "validation; among those, the highest mean validation accuracy of its in-budget fits")
    networks: list[str] = field(default_factory=list)   # the networks whose validation outputs were swept

    def config(self, base: EENetConfig) -> EENetConfig:
        """``base`` trained with the chosen recipe."""
        return replace(base, optimizer=self.chosen.optimizer, lr=self.chosen.lr, epochs=self.chosen.epochs)

    def protocol(self) -> dict:
        return {"grid": [vars(r) for r in map(lambda x: x["recipe"], self.summary)], "seeds": self.seeds,
                "budgets": self.budgets, "networks": self.networks, "chosen": vars(self.chosen),
                "chosen_on": "validation", "rule": self.rule, "fits": len(self.rows)}


def recipe_grid(optimizers: Sequence[str], lrs: Sequence[float], epochs: Sequence[int]) -> list[Recipe]:
    """Every optimiser x learning rate x epoch count."""
    return [Recipe(o, float(lr), int(e)) for o in optimizers for lr in lrs for e in epochs]


def sweep_recipes(run: RunLike, budgets: Sequence[float], recipes: Sequence[Recipe],
                  config: EENetConfig = EENetConfig(), seeds: Sequence[int] = (0, 1, 2)) -> RecipeSweep:
    """Fit every recipe with every seed at every budget on the run's validation outputs (one stacked
    pass; recipes that differ only in epochs share it, a shorter fit being the start of a longer one)
    and choose the recipe by ``RecipeSweep.rule``. Reads validation only."""
    if not recipes:
        raise ValueError("give at least one recipe")
    val, features, correct, costs = _val_tensors(run)
    heads = sorted({(r.optimizer, r.lr) for r in recipes})
    jobs = [_Job(seed, float(b), o, lr) for o, lr in heads for b in budgets for seed in seeds]
    horizons = sorted({r.epochs for r in recipes})
    fitted = dict(zip(horizons, _fit_stacked_cached(features, correct, costs, jobs, config, horizons)))
    rows = []
    for recipe in recipes:
        cfg = replace(config, optimizer=recipe.optimizer, lr=recipe.lr, epochs=recipe.epochs)
        for i, job in enumerate(jobs):
            if (job.optimizer, job.lr) != (recipe.optimizer, recipe.lr):
                continue
            scheduler, info = fitted[recipe.epochs][i]
            _, _, expected, result = _finish(scheduler, val, features, costs, job.budget, cfg, run.macs)
            rows.append({"optimizer": recipe.optimizer, "lr": recipe.lr, "epochs": recipe.epochs, "seed": job.seed,
                         "budget": job.budget, **info, "expected_cost": expected, "val_accuracy": result.accuracy,
                         "accepted": abs(expected - job.budget) / job.budget <= config.tolerance})
    summary, chosen = _choose(rows, recipes)
    return RecipeSweep(rows, summary, chosen, [float(b) for b in budgets], list(seeds))


def _choose(rows: Sequence[dict], recipes: Sequence[Recipe]) -> tuple[list[dict], Recipe]:
    """``RecipeSweep.rule`` over the fits ``rows``: one summary row per recipe and the recipe chosen."""
    summary = []
    for recipe in recipes:
        mine = [r for r in rows if (r["optimizer"], r["lr"], r["epochs"]) == (recipe.optimizer, recipe.lr, recipe.epochs)]
        ok = [r["val_accuracy"] for r in mine if r["accepted"]]
        summary.append({"recipe": recipe, "fits": len(mine), "in budget": len(ok),
                        "mean val accuracy in budget": sum(ok) / len(ok) if ok else float("nan")})
    best = max(summary, key=lambda r: (r["in budget"], r["mean val accuracy in budget"] if r["in budget"] else -1.0))
    return summary, best["recipe"]


def pool_sweeps(sweeps: Sequence[RecipeSweep], networks: Sequence[str]) -> RecipeSweep:
    """One choice of recipe from the sweeps of several networks (each ``sweep_recipes`` on its own
    validation outputs, with the same grid and seeds): their fits pooled, each row naming its network,
    and the recipe chosen by the same rule over all of them."""
    if not sweeps or len(sweeps) != len(networks):
        raise ValueError("give one network name per sweep, at least one")
    recipes = [r["recipe"] for r in sweeps[0].summary]
    rows = [{"network": name, **row} for name, sweep in zip(networks, sweeps) for row in sweep.rows]
    summary, chosen = _choose(rows, recipes)
    budgets = sorted({b for sweep in sweeps for b in sweep.budgets})
    return RecipeSweep(rows, summary, chosen, budgets, sweeps[0].seeds, networks=list(networks))


def sweep_budgets(budgets: Sequence[float], count: int) -> list[float]:
    """``count`` budgets of the grid, evenly spread through its interior, at which recipes are swept
    (1: the middle budget)."""
    if not 1 <= count <= len(budgets):
        raise ValueError(f"sweep at 1..{len(budgets)} budgets, got {count}")
    return [budgets[(i + 1) * len(budgets) // (count + 1)] for i in range(count)]


# ---------------------------------------------------------------- the scheduler's own cost
def scheduler_macs(num_exits: int, num_classes: int, hidden_rate: float = 0.5) -> list[int]:
    """MACs the scheduler adds per sample up to and including exit k (cumulative, [K]): at each exit the
    utility score (one dot product) and, counted although only training needs it, the assignment MLP.
    Softmax, max and entropy of the exit's C logits are not multiply-accumulates of a layer (the
    library's MAC convention counts convolutions and linear layers only); they add about 3C operations."""
    s = UtilityScheduler(num_exits, num_classes, hidden_rate)
    per_exit = [sum(m.weight.numel() for m in (s.score[k], s.assign[k][0], s.assign[k][2])) for k in range(num_exits)]
    return [sum(per_exit[:k + 1]) for k in range(num_exits)]


# ---------------------------------------------------------------- how well a score ranks right above wrong
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
