"""Hostile devices: how likely a forged transaction is to be committed, how many forgeries
an attacker's colluding devices get before they are spent, and what lying costs a device.

Longer than our other modules on purpose: each closed formula sits beside the Monte Carlo
that checks it, so that a change to one is seen next to the other.

    compute_outcomes(pmf, model)            one attempt: committed, caught (and how many banned)
    compute_commit_probability(c, model)    P(c, k, q, a), registry as D -> infinity
    compute_campaign(devices, colluders, model)   forgeries before the colluders are spent
    compute_device_income(pmf, model, life) an honest device's rewards against a liar's
    compute_grinding(pmf_2k, model, tries)  a Byzantine issuer trying seq after seq
    compute_tally_decision(arrivals, model) the tally over verdicts in arrival order
    simulate_*                              the same quantities, by a seeded Monte Carlo

    python -m micromine.security_model --table      the tables of docs/SECURITY.md section 6
    python -m micromine.security_model --check      formula against simulation, defaults

docs/SECURITY.md section 6 derives every formula; tests/test_security_model.py checks
them against the simulation.  This module models the mechanisms of issue 4 as they are
being built; of the ledger it imports only defaults (ChainParams, ASSIGN_TRIES) and the
ranking function.

The process.  One *attempt* is one forged transaction (its signature does not verify)
that the attacker submits:

1. The registry holds D devices, C of them colluding (c = C / D).  Honest devices always
   judge correctly; a colluder judges honestly except on the attacker's forgeries.
2. An honest issuer ranks the registry for the batch (SHA-256 rendezvous: a uniformly
   random order), the first 2k are entitled, and it gives the batch to the first k
   (every device available, so a uniform k-subset of the registry).  X, the colluders
   among the k, is hypergeometric (binomial as D -> infinity).
3. Honest devices answer "invalid".  A colluder answers "valid" (it *vouches*): NAIVE,
   always; STRATEGIC, only when the X colluders among the k are enough for the tally to
   accept (X = k under WAIT_ALL, X >= q under FIRST_Q), and "invalid" otherwise.  The
   colluders know X: they tell each other what they were given.
4. The verdicts reach the tally in an order: COLLUDERS_FIRST (they verify nothing, so
   they can always answer first: the worst case) or RANDOM (uniformly random order).
5. The tally.  WAIT_ALL decides once all k verdicts are in: k "valid" accept, all
   "invalid" reject, a mix makes the ledger verify the transaction itself.  FIRST_Q
   decides at the q-th "valid" (accept) or the q-th "invalid" (reject), and makes the
   ledger verify as soon as it has seen both before deciding.  A verified forgery is
   *caught*.
6. An accepted transaction is audited (verified by the ledger) with probability a
   before it is committed: caught.  Otherwise it is committed: a *success*.
7. Caught: every device that vouched for it is banned by fraud proofs, forfeits its
   unvested rewards and leaves the registry.
"""

import argparse
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from micromine.ledger_node.core.dispatch import ASSIGN_TRIES
from micromine.protocol.assignment import ENTITLED_PER_K, compute_entitled
from micromine.protocol.crypto import sha256
from micromine.protocol.genesis import ChainParams

DEFAULT_PARAMS = ChainParams()  # k = 3, q = 2
DEFAULT_AUDIT_RATE = 0.05  # a: the share of accepted transactions the ledger verifies


class Tally(StrEnum):
    FIRST_Q = "first-q"  # decide at the q-th agreeing verdict (ledger_node/core/tally.py today)
    WAIT_ALL = "wait-all"  # decide when all k verdicts are in


class Race(StrEnum):
    COLLUDERS_FIRST = "colluders-first"  # their verdicts arrive before any honest one
    RANDOM = "random"  # the k verdicts arrive in a uniformly random order


class Strategy(StrEnum):
    NAIVE = "naive"  # every colluder given the forgery vouches for it
    STRATEGIC = "strategic"  # they vouch only when the tally can accept it


@dataclass(frozen=True, slots=True)
class Model:
    """The rules one attempt runs under (module docstring, steps 3 to 7)."""

    k: int = DEFAULT_PARAMS.k
    q: int = DEFAULT_PARAMS.q
    audit: float = DEFAULT_AUDIT_RATE
    tally: Tally = Tally.FIRST_Q
    race: Race = Race.COLLUDERS_FIRST
    strategy: Strategy = Strategy.NAIVE

    def __post_init__(self) -> None:
        if not 1 <= self.q <= self.k:
            raise ValueError(f"need 1 <= q <= k, got k={self.k} q={self.q}")
        if not 0.0 <= self.audit <= 1.0:
            raise ValueError(f"the audit rate must be in [0, 1], got {self.audit}")

    @property
    def min_colluders(self) -> int:
        """The fewest colluders among the k with which the tally can accept a forgery."""
        return self.k if self.tally is Tally.WAIT_ALL else self.q


# ---- formulas ---------------------------------------------------------------------------


def compute_binomial_pmf(k: int, c: float) -> tuple[float, ...]:
    """P(X = x), x = 0..k: colluders among k devices drawn from an infinite registry."""
    return tuple(math.comb(k, x) * c**x * (1.0 - c) ** (k - x) for x in range(k + 1))


def compute_hypergeometric_pmf(k: int, colluders: int, devices: int) -> tuple[float, ...]:
    """P(X = x), x = 0..k: colluders among k distinct devices of ``devices``."""
    if not 0 <= colluders <= devices or k > devices:
        raise ValueError(f"cannot draw {k} of {devices} devices, {colluders} colluding")
    total = math.comb(devices, k)
    return tuple(
        math.comb(colluders, x) * math.comb(devices - colluders, k - x) / total
        for x in range(k + 1)
    )


def compute_vouchers(x: int, model: Model) -> int:
    """How many of the x colluders among the k vouch for the forgery (step 3)."""
    if model.strategy is Strategy.NAIVE or x >= model.min_colluders:
        return x
    return 0


def compute_acceptance(x: int, model: Model) -> float:
    """P(the tally accepts the forgery | x colluders among the k), before the audit."""
    if compute_vouchers(x, model) < model.min_colluders:
        return 0.0
    if model.tally is Tally.WAIT_ALL or model.race is Race.COLLUDERS_FIRST:
        return 1.0
    # FIRST_Q, random order: accepted iff the first q verdicts to arrive all vouch.
    return math.comb(x, model.q) / math.comb(model.k, model.q)


def compute_caught_undecided(x: int, model: Model) -> float:
    """P(the tally sees "valid" and "invalid" before deciding, so that the ledger verifies
    the forgery and catches it | x colluders among the k)."""
    vouchers = compute_vouchers(x, model)
    k, q = model.k, model.q
    if vouchers == 0:
        return 0.0
    if model.tally is Tally.WAIT_ALL:
        return 1.0 if vouchers < k else 0.0
    if model.race is Race.COLLUDERS_FIRST:
        return 1.0 if vouchers < q else 0.0
    # FIRST_Q, random order: caught unless the first q verdicts are all alike.
    return 1.0 - (math.comb(vouchers, q) + math.comb(k - vouchers, q)) / math.comb(k, q)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """One attempt: P(committed), and P(caught with x devices banned) for x = 0..k."""

    committed: float
    caught: tuple[float, ...]

    @property
    def caught_total(self) -> float:
        return sum(self.caught)

    @property
    def banned_mean(self) -> float:
        """Expected devices banned per attempt."""
        return sum(x * p for x, p in enumerate(self.caught))

    @property
    def banned_variance(self) -> float:
        return sum(x * x * p for x, p in enumerate(self.caught)) - self.banned_mean**2


def compute_outcomes(pmf: Sequence[float], model: Model) -> Outcomes:
    """Sum over x of P(X = x) times the tally and the audit (steps 5 and 6):

    committed = sum_x P(X=x) A(x) (1 - a)
    caught[x] = P(X=x) (A(x) a + V(x))      (V: caught before deciding)
    """
    a = model.audit
    committed = sum(p * compute_acceptance(x, model) * (1.0 - a) for x, p in enumerate(pmf))
    caught = tuple(
        p * (compute_acceptance(x, model) * a + compute_caught_undecided(x, model))
        for x, p in enumerate(pmf)
    )
    return Outcomes(committed, caught)


def compute_commit_probability(c: float, model: Model) -> float:
    """P(c, k, q, a): a forgery is committed in one attempt (registry as D -> infinity)."""
    return compute_outcomes(compute_binomial_pmf(model.k, c), model).committed


def compute_commit_probability_closed_form(c: float, model: Model) -> float:
    """The closed forms of docs/SECURITY.md 6.3 (the strategy does not change them):

    WAIT_ALL                   (1 - a) c^k
    FIRST_Q, colluders first   (1 - a) sum_{x=q..k} C(k, x) c^x (1 - c)^(k - x)
    FIRST_Q, random order      (1 - a) c^q
    """
    k, q, a = model.k, model.q, model.audit
    if model.tally is Tally.WAIT_ALL:
        return (1.0 - a) * c**k
    if model.race is Race.RANDOM:
        return (1.0 - a) * c**q
    return (1.0 - a) * sum(math.comb(k, x) * c**x * (1.0 - c) ** (k - x) for x in range(q, k + 1))


@dataclass(frozen=True, slots=True)
class Campaign:
    """Committed forgeries over a campaign: attempts until the colluders left are too few
    to ever be accepted (too few for a quorum, or all banned)."""

    forgeries: float  # expected; math.inf when nothing ever catches them
    variance: float


def compute_campaign(devices: int, colluders: int, model: Model) -> Campaign:
    """Expected committed forgeries (and their variance) before the attacker is spent.

    With m colluders left (n = devices - colluders honest ones, never banned), let s(m)
    and d(m) be the chances that an attempt succeeds or is caught.  The successes before
    the first catch are geometric with mean s/d; a catch then bans x with chance
    caught[x]/d.  So F(m) = s/d + sum_x caught[x]/d * F(m - x), F(m) = 0 where s = 0.
    """
    honest = devices - colluders
    mean = [0.0] * (colluders + 1)
    second = [0.0] * (colluders + 1)  # E[F(m)^2]
    for m in range(1, colluders + 1):
        outcomes = compute_outcomes(compute_hypergeometric_pmf(model.k, m, honest + m), model)
        s, d = outcomes.committed, outcomes.caught_total
        if s == 0.0:
            continue  # never accepted again: nothing more to gain
        if d == 0.0:
            mean[m] = second[m] = math.inf
            continue
        geometric_mean = s / d  # successes before the first catch
        r = s / (s + d)
        geometric_second = r * (1.0 + r) / (1.0 - r) ** 2
        then = [(p / d, m - x) for x, p in enumerate(outcomes.caught) if p > 0.0]
        after_mean = sum(w * mean[left] for w, left in then)
        after_second = sum(w * second[left] for w, left in then)
        mean[m] = geometric_mean + after_mean
        second[m] = geometric_second + 2.0 * geometric_mean * after_mean + after_second
    if math.isinf(mean[colluders]):
        return Campaign(math.inf, math.inf)
    return Campaign(mean[colluders], second[colluders] - mean[colluders] ** 2)


@dataclass(frozen=True, slots=True)
class DeviceLife:
    """One device's working life, counted in its own assignments (batches it is given)."""

    assignments: int = 10_000  # N: the horizon
    forged_share: float = 0.01  # phi: share of a colluder's assignments with a forgery
    vesting: int = 1_000  # W: a reward vests this many assignments after it is earned
    reward: float = 1.0  # rho: what an assignment earns, on average


@dataclass(frozen=True, slots=True)
class Income:
    honest: float  # rho N: an honest device is never banned
    liar: float  # expected rewards a colluder keeps (vested, or earned by the horizon)
    liar_variance: float
    burned: float  # expected unvested rewards it forfeits when banned
    banned: float  # P(banned within the horizon)
    forgeries: float  # expected committed forgeries it vouched for


def compute_device_income(pmf: Sequence[float], model: Model, life: DeviceLife) -> Income:
    """What a colluder keeps, against an honest device's rho N.

    Given that the colluder is among the k, the colluders there are size-biased:
    P(X = x | in) = x P(X = x) / E[X].  Per assignment it is banned with chance
    h = phi sum_x P(X = x | in) (A(x) a + V(x)); banned at its t-th assignment it keeps
    rho max(0, t - 1 - W) and burns the rest; alive after N it keeps rho N.
    """
    mean_x = sum(x * p for x, p in enumerate(pmf))
    given_in = [x * p / mean_x for x, p in enumerate(pmf)]
    a, n, w, rho = model.audit, life.assignments, life.vesting, life.reward
    hazard = life.forged_share * sum(
        p * (compute_acceptance(x, model) * a + compute_caught_undecided(x, model))
        for x, p in enumerate(given_in)
    )
    success = life.forged_share * sum(
        p * compute_acceptance(x, model) * (1.0 - a) for x, p in enumerate(given_in)
    )
    survive = 1.0 - hazard
    kept = kept_sq = burned = forgeries = 0.0
    alive = 1.0  # P(not banned before assignment t)
    for t in range(1, n + 1):
        banned_now = alive * hazard
        keep = rho * max(0, t - 1 - w)
        kept += banned_now * keep
        kept_sq += banned_now * keep * keep
        burned += banned_now * rho * min(w, t - 1)
        forgeries += alive * success
        alive *= survive
    kept += alive * rho * n
    kept_sq += alive * (rho * n) ** 2
    return Income(rho * n, kept, kept_sq - kept * kept, burned, 1.0 - alive, forgeries)


def compute_grinding(pmf_entitled: Sequence[float], model: Model, tries: int) -> float:
    """P(a Byzantine issuer finds, within ``tries`` seq values, a batch id whose 2k
    entitled devices include enough colluders to be accepted: min_colluders of them).

    It may give the batch to any k of the 2k (nobody can check which were available), so
    ``pmf_entitled`` is that of the colluders among 2k.  Per try p = P(Y >= need); within
    G tries 1 - (1 - p)^G; expected tries 1/p.  The audit still applies afterwards.
    """
    per_try = sum(pmf_entitled[model.min_colluders :])
    return 1.0 - (1.0 - per_try) ** tries


# ---- simulation -------------------------------------------------------------------------


@dataclass(slots=True)
class SimRegistry:
    """Device ids 0..devices-1, those below ``colluders`` colluding; banned ones leave.

    The ranking is a uniformly random order (``random.sample``), or with ``sha256`` the
    real one (protocol/assignment.py) over derived keys and random batch ids.
    """

    devices: int
    colluders: int
    sha256: bool = False
    alive: list[int] = field(init=False)
    keys: list[bytes] = field(init=False)
    by_key: dict[bytes, int] = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.colluders <= self.devices:
            raise ValueError(f"{self.colluders} colluders among {self.devices} devices")
        self.alive = list(range(self.devices))
        self.keys = [sha256(b"security-model device %d" % d) for d in range(self.devices)]
        self.by_key = {key: d for d, key in enumerate(self.keys)}

    def is_colluder(self, device: int) -> bool:
        return device < self.colluders

    def colluding_alive(self) -> int:
        return sum(1 for d in self.alive if d < self.colluders)

    def entitled(self, rng: random.Random, k: int) -> list[int]:
        """The first 2k of a fresh batch's ranking, best first."""
        if not self.sha256:
            return rng.sample(self.alive, ENTITLED_PER_K * k)
        batch_id = rng.randbytes(32)
        keys = compute_entitled(batch_id, (self.keys[d] for d in self.alive), k)
        return [self.by_key[key] for key in keys]

    def ban(self, devices: Sequence[int]) -> None:
        banned = set(devices)
        self.alive = [d for d in self.alive if d not in banned]


@dataclass(frozen=True, slots=True)
class Judged:
    committed: bool
    caught: bool
    vouchers: tuple[int, ...]  # positions among the k that said "valid"


def compute_tally_decision(valid: Sequence[bool], model: Model) -> str:
    """The tally over verdicts in arrival order: "accept", "reject" or "verify"."""
    yes = no = 0
    for is_valid in valid:
        yes, no = yes + is_valid, no + (not is_valid)
        if model.tally is Tally.WAIT_ALL:
            continue
        if yes and no:
            return "verify"  # [FIRST_Q] a disagreement before deciding
        if yes >= model.q:
            return "accept"
        if no >= model.q:
            return "reject"
    if yes == model.k:
        return "accept"
    return "verify" if yes else "reject"


def simulate_judging(rng: random.Random, colluding: Sequence[bool], model: Model) -> Judged:
    """Steps 3 to 6 for the k devices given a forgery (``colluding[i]``: the i-th is one)."""
    vouch = model.strategy is Strategy.NAIVE or sum(colluding) >= model.min_colluders
    vouchers = tuple(i for i, is_c in enumerate(colluding) if is_c) if vouch else ()
    # What the tally sees: the verdicts' kinds in arrival order.
    arrivals = [True] * len(vouchers) + [False] * (len(colluding) - len(vouchers))
    if model.race is Race.RANDOM:
        rng.shuffle(arrivals)
    decision = compute_tally_decision(arrivals, model)
    if decision == "accept":
        audited = rng.random() < model.audit
        return Judged(not audited, audited, vouchers)
    return Judged(False, decision == "verify", vouchers)


@dataclass(frozen=True, slots=True)
class Attempt:
    committed: bool
    caught: bool
    banned: int


def simulate_attempt(
    rng: random.Random, registry: SimRegistry, model: Model, *, ban: bool = True
) -> Attempt:
    """One forgery through steps 2 to 7; with ``ban``, a catch bans its vouchers."""
    picked = registry.entitled(rng, model.k)[: model.k]  # the issuer's first k
    judged = simulate_judging(rng, [registry.is_colluder(d) for d in picked], model)
    banned = [picked[i] for i in judged.vouchers] if judged.caught else []
    if ban:
        registry.ban(banned)
    return Attempt(judged.committed, judged.caught, len(banned))


def simulate_attempts(
    rng: random.Random, registry: SimRegistry, model: Model, attempts: int
) -> list[Attempt]:
    """Independent attempts against one registry: nobody leaves it between them."""
    return [simulate_attempt(rng, registry, model, ban=False) for _ in range(attempts)]


def simulate_campaign(
    rng: random.Random, devices: int, colluders: int, model: Model, max_attempts: int = 10**6
) -> int:
    """Committed forgeries over one campaign: attempts until too few colluders are left
    to ever be accepted, with every catch banning its vouchers."""
    registry = SimRegistry(devices, colluders)
    forgeries = 0
    for _ in range(max_attempts):
        if registry.colluding_alive() < model.min_colluders:
            return forgeries
        forgeries += simulate_attempt(rng, registry, model).committed
    raise RuntimeError(f"campaign still running after {max_attempts} attempts")


def simulate_device_life(
    rng: random.Random, devices: int, colluders: int, model: Model, life: DeviceLife
) -> tuple[float, int]:
    """One colluder's life (device 0 of a registry whose other colluders are replaced as
    they are banned): the rewards it keeps, and the committed forgeries it vouched for."""
    others = range(1, devices)  # ids below ``colluders`` collude
    done = forgeries = 0
    while True:
        # Plain assignments before the next forged one: geometric.
        if life.forged_share >= 1.0:
            gap = 0
        elif life.forged_share <= 0.0:
            gap = life.assignments
        else:
            u = 1.0 - rng.random()
            gap = int(math.log(u) / math.log(1.0 - life.forged_share))
        done += gap
        if done >= life.assignments:
            return life.reward * life.assignments, forgeries
        picked = [0, *rng.sample(others, model.k - 1)]
        judged = simulate_judging(rng, [d < colluders for d in picked], model)
        if judged.caught and 0 in judged.vouchers:
            return life.reward * max(0, done - life.vesting), forgeries  # banned at done + 1
        forgeries += judged.committed and 0 in judged.vouchers
        done += 1


def simulate_grinding(rng: random.Random, registry: SimRegistry, model: Model, tries: int) -> bool:
    """A Byzantine issuer steps seq ``tries`` times; True if some batch id entitles
    ``model.min_colluders`` colluders among its 2k."""
    for _ in range(tries):
        entitled = registry.entitled(rng, model.k)
        if sum(registry.is_colluder(d) for d in entitled) >= model.min_colluders:
            return True
    return False


# ---- tables (docs/SECURITY.md section 6) ------------------------------------------------

TABLE_C = (0.01, 0.05, 0.1, 0.25, 0.33)
TABLE_KQ = ((3, 2), (5, 3), (5, 5))
TABLE_A = (0.0, 0.05, 0.2)
TABLE_DEVICES = 1000  # the registry of the campaign table


def format_number(value: float) -> str:
    if math.isinf(value):
        return "∞"
    if value == 0.0:
        return "0"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _grid_header() -> list[str]:
    return ["c", *(f"k={k} q={q} a={a:g}" for k, q in TABLE_KQ for a in TABLE_A)]


def render_commit_table(tally: Tally, race: Race) -> list[str]:
    """P(c, k, q, a) over the table grid (D -> infinity)."""
    rows = [
        [f"{c:g}"]
        + [
            format_number(compute_commit_probability(c, Model(k, q, a, tally, race)))
            for k, q in TABLE_KQ
            for a in TABLE_A
        ]
        for c in TABLE_C
    ]
    return _markdown(_grid_header(), rows)


def render_gain_table() -> list[str]:
    """How many times likelier FIRST_Q (colluders first) commits a forgery than WAIT_ALL."""
    rows = [
        [f"{c:g}"]
        + [
            format_number(
                compute_commit_probability(c, Model(k, q, 0.0))
                / compute_commit_probability(c, Model(k, q, 0.0, Tally.WAIT_ALL))
            )
            for k, q in TABLE_KQ
        ]
        for c in TABLE_C
    ]
    return _markdown(["c", *(f"k={k} q={q}" for k, q in TABLE_KQ)], rows)


def render_campaign_table(tally: Tally, strategy: Strategy, devices: int) -> list[str]:
    """Expected committed forgeries before the colluders are spent, registry of D."""
    rows = []
    for c in TABLE_C:
        colluders = round(c * devices)
        cells = [
            compute_campaign(devices, colluders, Model(k, q, a, tally, strategy=strategy))
            for k, q in TABLE_KQ
            for a in TABLE_A
        ]
        rows.append([f"{c:g}", *(format_number(cell.forgeries) for cell in cells)])
    return _markdown(_grid_header(), rows)


def render_income_table(life: DeviceLife) -> list[str]:
    """Per (tally, colluders, a), k=3 q=2: the share of an honest device's rewards that a
    colluder keeps, and (in brackets) the committed forgeries it vouched for."""
    rows = []
    for tally in Tally:
        for strategy in Strategy:
            for a in (DEFAULT_AUDIT_RATE, 0.2):
                model = Model(audit=a, tally=tally, strategy=strategy)
                cells = []
                for c in TABLE_C:
                    pmf = compute_binomial_pmf(model.k, c)
                    income = compute_device_income(pmf, model, life)
                    share = f"{income.liar / income.honest:.0%}"
                    cells.append(f"{share} ({format_number(income.forgeries)})")
                rows.append([f"{tally}, {strategy}, a={a:g}", *cells])
    return _markdown(["tally, colluders, a", *(f"c={c:g}" for c in TABLE_C)], rows)


def render_grinding_table() -> list[str]:
    """A Byzantine issuer: per-try chance, expected tries, chance within ASSIGN_TRIES."""
    header = ["c"]
    for k, q in TABLE_KQ:
        header += [f"k={k} q={q} per try", "tries", f"within {ASSIGN_TRIES}"]
    rows = []
    for c in TABLE_C:
        cells = [f"{c:g}"]
        for k, q in TABLE_KQ:
            pmf = compute_binomial_pmf(ENTITLED_PER_K * k, c)
            per_try = compute_grinding(pmf, Model(k, q), 1)
            cells += [
                format_number(per_try),
                format_number(1.0 / per_try),
                format_number(compute_grinding(pmf, Model(k, q), ASSIGN_TRIES)),
            ]
        rows.append(cells)
    return _markdown(header, rows)


def render_table_parts(devices: int = TABLE_DEVICES, life: DeviceLife | None = None) -> list[str]:
    """Every table of docs/SECURITY.md section 6, as Markdown with a title each."""
    life = life or DeviceLife()
    parts = [
        ("P(c, k, q, a), first-q tally, colluders answer first",
         render_commit_table(Tally.FIRST_Q, Race.COLLUDERS_FIRST)),
        ("P(c, k, q, a), first-q tally, verdicts in random order",
         render_commit_table(Tally.FIRST_Q, Race.RANDOM)),
        ("P(c, k, q, a), wait-all tally",
         render_commit_table(Tally.WAIT_ALL, Race.COLLUDERS_FIRST)),
        ("First-q (colluders first) over wait-all: how many times likelier",
         render_gain_table()),
        *(
            (f"Committed forgeries per campaign, {tally} tally, {strategy} colluders, "
             f"D = {devices}", render_campaign_table(tally, strategy, devices))
            for tally in Tally
            for strategy in Strategy
        ),
        ("Rewards a colluder keeps, as a share of an honest device's, and (in brackets) "
         f"the committed forgeries it vouched for: k=3 q=2, N={life.assignments}, "
         f"phi={life.forged_share:g}, W={life.vesting}", render_income_table(life)),
        ("A Byzantine issuer grinding seq (need among the 2k entitled: q)",
         render_grinding_table()),
    ]  # fmt: skip
    return [f"#### {title}\n\n" + "\n".join(lines) + "\n" for title, lines in parts]


def render_tables(devices: int = TABLE_DEVICES, life: DeviceLife | None = None) -> str:
    return "\n".join(render_table_parts(devices, life))


def render_check(seed: int, attempts: int, devices: int) -> str:
    """Formula against simulation at the defaults (k=3, q=2, a=0.05), registry of D."""
    rng = random.Random(seed)
    lines = []
    for c in TABLE_C:
        colluders = round(c * devices)
        pmf = compute_hypergeometric_pmf(DEFAULT_PARAMS.k, colluders, devices)
        for tally in Tally:
            model = Model(tally=tally)
            expected = compute_outcomes(pmf, model).committed
            found = simulate_attempts(rng, SimRegistry(devices, colluders), model, attempts)
            share = sum(a.committed for a in found) / attempts
            error = math.sqrt(expected * (1.0 - expected) / attempts)
            z = (share - expected) / error if error else 0.0
            lines.append(
                f"c={c:<5g} {tally!s:<8} formula {expected:.3e}  simulation {share:.3e}  z={z:+.2f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="print SECURITY.md 6's tables")
    parser.add_argument("--check", action="store_true", help="formula against simulation")
    parser.add_argument("--devices", type=int, default=TABLE_DEVICES, help="registry size D")
    parser.add_argument("--attempts", type=int, default=100_000, help="per point, --check")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not (args.table or args.check):
        parser.error("give --table or --check")
    if args.table:
        sys.stdout.write(render_tables(args.devices))
    if args.check:
        print(render_check(args.seed, args.attempts, args.devices))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
