"""The hostile-devices model (micromine/security_model.py, docs/SECURITY.md section 6):
its formulas against a seeded Monte-Carlo simulation of the same process.

Statistics.  Each Monte-Carlo check is a two-sided z-test at level 1e-5 (|z| <= 4.42),
of a share (binomial variance) or of a mean whose exact variance the formulas give; the
normal approximation is kept honest by asking for at least 100 expected events (or,
for means, at least 200 samples).  There are about 40 such checks, so a correct formula
passes them all for at least 99.9% of seeds (Bonferroni).  The seeds are fixed, so the
suite is deterministic; it runs in a few seconds.  Quantities that are exactly 0 are
checked for exactly 0.
"""

import itertools
import math
import random
from pathlib import Path
from statistics import NormalDist, fmean, variance

import pytest

from micromine.security_model import (
    DEFAULT_AUDIT_RATE,
    DeviceLife,
    Model,
    Race,
    SimRegistry,
    Strategy,
    Tally,
    compute_acceptance,
    compute_binomial_pmf,
    compute_campaign,
    compute_caught_undecided,
    compute_commit_probability,
    compute_commit_probability_closed_form,
    compute_device_income,
    compute_grinding,
    compute_hypergeometric_pmf,
    compute_outcomes,
    compute_tally_decision,
    compute_vouchers,
    render_table_parts,
    simulate_attempts,
    simulate_campaign,
    simulate_device_life,
    simulate_grinding,
    simulate_judging,
)

LEVEL = 1e-5  # per check
Z = NormalDist().inv_cdf(1 - LEVEL / 2)  # 4.42
MIN_EVENTS = 100
DOCS = Path(__file__).resolve().parent.parent / "docs" / "SECURITY.md"


def check_share(name: str, hits: int, trials: int, p: float) -> None:
    """``hits`` of ``trials`` against probability ``p``."""
    if p == 0.0:
        assert hits == 0, f"{name}: {hits} where the formula says never"
        return
    events = trials * min(p, 1 - p)
    assert events >= MIN_EVENTS, f"{name}: {events:.0f} expected events, too few for the test"
    z = (hits - trials * p) / math.sqrt(trials * p * (1 - p))
    assert abs(z) <= Z, f"{name}: {hits}/{trials} against p={p:.4g} (z={z:+.2f})"


def check_mean(name: str, samples: list[float], mean: float, var: float) -> None:
    """The mean of ``samples`` against the exact ``mean`` and ``var`` of one sample."""
    assert len(samples) >= 200
    if var == 0.0:
        assert all(s == mean for s in samples), name
        return
    z = (fmean(samples) - mean) / math.sqrt(var / len(samples))
    assert abs(z) <= Z, f"{name}: {fmean(samples):.4g} against {mean:.4g} (z={z:+.2f})"


def every_model(k: int, q: int, audit: float = DEFAULT_AUDIT_RATE) -> list[Model]:
    return [
        Model(k, q, audit, tally, race, strategy)
        for tally in Tally
        for race in Race
        for strategy in Strategy
    ]


# ---- exact checks ----------------------------------------------------------------------


@pytest.mark.parametrize("kq", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (5, 5), (6, 2)])
def test_tally_formulas_match_every_arrival_order(kq: tuple[int, int]) -> None:
    """A(x) and V(x) against the tally run over every arrangement of the verdicts."""
    k, q = kq
    for model in every_model(k, q):
        for x in range(k + 1):
            vouchers = compute_vouchers(x, model)
            orders = [
                [i in chosen for i in range(k)]
                for chosen in itertools.combinations(range(k), vouchers)
            ]
            if model.race is Race.COLLUDERS_FIRST:
                orders = [[i < vouchers for i in range(k)]]
            decisions = [compute_tally_decision(order, model) for order in orders]
            accept = decisions.count("accept") / len(decisions)
            verify = decisions.count("verify") / len(decisions)
            assert compute_acceptance(x, model) == pytest.approx(accept, abs=1e-12), (model, x)
            assert compute_caught_undecided(x, model) == pytest.approx(verify, abs=1e-12)


@pytest.mark.parametrize("c", [0.0, 0.01, 0.05, 0.1, 0.25, 0.33, 0.9, 1.0])
def test_closed_forms_are_the_general_model(c: float) -> None:
    for k, q in [(3, 2), (5, 3), (5, 5), (7, 4)]:
        for a in (0.0, 0.05, 0.2, 1.0):
            for model in every_model(k, q, a):
                general = compute_commit_probability(c, model)
                closed = compute_commit_probability_closed_form(c, model)
                assert general == pytest.approx(closed, rel=1e-12, abs=1e-15), model


def test_finite_registry_closed_forms() -> None:
    """SECURITY.md 6.3 for a registry of D: wait-all C(C,k)/C(D,k), random-order
    first-q C(C,q)/C(D,q), both times (1 - a)."""
    devices, colluders = 100, 25
    for k, q in [(3, 2), (5, 3), (5, 5)]:
        pmf = compute_hypergeometric_pmf(k, colluders, devices)
        wait_all = compute_outcomes(pmf, Model(k, q, 0.05, Tally.WAIT_ALL)).committed
        random_order = compute_outcomes(pmf, Model(k, q, 0.05, race=Race.RANDOM)).committed
        hyper_k = math.comb(colluders, k) / math.comb(devices, k)
        hyper_q = math.comb(colluders, q) / math.comb(devices, q)
        assert wait_all == pytest.approx(0.95 * hyper_k, rel=1e-12)
        assert random_order == pytest.approx(0.95 * hyper_q, rel=1e-12)


def test_the_defaults_numbers() -> None:
    """The figures SECURITY.md 6 quotes for k=3, q=2, a=0.05, c=0.05."""
    c = 0.05
    first_q = compute_commit_probability(c, Model())
    wait_all = compute_commit_probability(c, Model(tally=Tally.WAIT_ALL))
    assert first_q == pytest.approx(0.95 * (3 * c**2 * (1 - c) + c**3))  # 0.00689
    assert wait_all == pytest.approx(0.95 * c**3)  # 0.000119
    assert first_q / wait_all == pytest.approx(58.0)


def test_strategic_colluders_are_spent_only_by_audits() -> None:
    spent = compute_campaign(1000, 50, Model(audit=0.0, strategy=Strategy.STRATEGIC))
    assert math.isinf(spent.forgeries)
    # Each catch bans the q (or more) vouchers; (1 - a)/a forgeries per catch, about.
    campaign = compute_campaign(1000, 50, Model(strategy=Strategy.STRATEGIC))
    assert 19 * 50 / 3 < campaign.forgeries < 19 * 50 / 2


def test_the_tables_in_security_md_are_current() -> None:
    """`python -m micromine.security_model --table` prints what SECURITY.md shows."""
    text = DOCS.read_text(encoding="utf-8")
    for part in render_table_parts():
        assert part in text, part.splitlines()[0]


# ---- formula against simulation ----------------------------------------------------------

ATTEMPT_GRID = [
    # (c, model, attempts); D = 100 devices, so the formulas are hypergeometric.
    (0.05, Model(), 40_000),  # the defaults: k=3, q=2, a=0.05, first-q, colluders first
    (0.25, Model(), 10_000),
    (0.25, Model(tally=Tally.WAIT_ALL), 20_000),
    (0.1, Model(race=Race.RANDOM), 20_000),
    (0.33, Model(audit=0.0, tally=Tally.WAIT_ALL, strategy=Strategy.STRATEGIC), 10_000),
    (0.33, Model(5, 3, 0.2, strategy=Strategy.STRATEGIC), 10_000),
    (0.25, Model(5, 3, 0.0, race=Race.RANDOM, strategy=Strategy.STRATEGIC), 10_000),
    (0.33, Model(5, 5, 0.2, Tally.WAIT_ALL), 40_000),
    (0.33, Model(audit=0.2, tally=Tally.WAIT_ALL, race=Race.RANDOM), 10_000),
]


@pytest.mark.parametrize(("c", "model", "attempts"), ATTEMPT_GRID)
def test_one_attempt_matches_the_simulation(c: float, model: Model, attempts: int) -> None:
    devices = 100
    colluders = round(c * devices)
    expected = compute_outcomes(compute_hypergeometric_pmf(model.k, colluders, devices), model)
    rng = random.Random(f"attempts {c} {model}")
    found = simulate_attempts(rng, SimRegistry(devices, colluders), model, attempts)
    check_share("committed", sum(a.committed for a in found), attempts, expected.committed)
    check_share("caught", sum(a.caught for a in found), attempts, expected.caught_total)
    check_mean(
        "banned",
        [float(a.banned) for a in found],
        expected.banned_mean,
        expected.banned_variance,
    )


def test_the_real_ranking_gives_the_same_numbers() -> None:
    """With protocol/assignment.py's SHA-256 ranking instead of random.sample."""
    devices, colluders, attempts = 60, 15, 3_000
    model = Model(audit=0.2)
    expected = compute_outcomes(compute_hypergeometric_pmf(model.k, colluders, devices), model)
    rng = random.Random("sha256 ranking")
    registry = SimRegistry(devices, colluders, sha256=True)
    found = simulate_attempts(rng, registry, model, attempts)
    check_share("committed", sum(a.committed for a in found), attempts, expected.committed)
    check_share("caught", sum(a.caught for a in found), attempts, expected.caught_total)


def test_the_simulation_tells_the_tallies_apart() -> None:
    """Power: first-q's formula is far outside the bound for a wait-all simulation."""
    devices, colluders, attempts = 100, 25, 20_000
    rng = random.Random("power")
    found = simulate_attempts(
        rng, SimRegistry(devices, colluders), Model(tally=Tally.WAIT_ALL), attempts
    )
    wrong = compute_outcomes(compute_hypergeometric_pmf(3, colluders, devices), Model())
    with pytest.raises(AssertionError):
        check_share("committed", sum(a.committed for a in found), attempts, wrong.committed)


CAMPAIGN_GRID = [
    # (devices, colluders, model, campaigns)
    (40, 10, Model(audit=0.2), 300),
    (40, 12, Model(tally=Tally.WAIT_ALL), 300),
    (20, 6, Model(audit=0.2, strategy=Strategy.STRATEGIC), 200),
    (30, 8, Model(5, 3, 0.2, race=Race.RANDOM), 300),
]


@pytest.mark.parametrize(("devices", "colluders", "model", "campaigns"), CAMPAIGN_GRID)
def test_forgeries_before_the_colluders_are_spent(
    devices: int, colluders: int, model: Model, campaigns: int
) -> None:
    expected = compute_campaign(devices, colluders, model)
    rng = random.Random(f"campaign {devices} {colluders} {model}")
    found = [float(simulate_campaign(rng, devices, colluders, model)) for _ in range(campaigns)]
    check_mean("forgeries", found, expected.forgeries, expected.variance)


LIFE_GRID = [
    # (devices, colluders, model, life, lives)
    (100, 30, Model(), DeviceLife(2_000, 0.0005, 200), 2_000),
    (100, 10, Model(audit=0.2, strategy=Strategy.STRATEGIC), DeviceLife(2_000, 0.01, 200), 2_000),
]


@pytest.mark.parametrize(("devices", "colluders", "model", "life", "lives"), LIFE_GRID)
def test_a_liars_rewards(
    devices: int, colluders: int, model: Model, life: DeviceLife, lives: int
) -> None:
    pmf = compute_hypergeometric_pmf(model.k, colluders, devices)
    expected = compute_device_income(pmf, model, life)
    rng = random.Random(f"life {model} {life}")
    found = [simulate_device_life(rng, devices, colluders, model, life) for _ in range(lives)]
    kept = [k for k, _ in found]
    check_mean("kept", kept, expected.liar, expected.liar_variance)
    banned = sum(k < expected.honest for k in kept)
    check_share("banned", banned, lives, expected.banned)
    forgeries = [float(f) for _, f in found]
    check_mean("forgeries", forgeries, expected.forgeries, variance(forgeries))


@pytest.mark.parametrize(("colluders", "model"), [(10, Model()), (25, Model(5, 5))])
def test_a_byzantine_issuer_grinding(colluders: int, model: Model) -> None:
    devices, trials, tries = 100, 3_000, 8
    pmf = compute_hypergeometric_pmf(2 * model.k, colluders, devices)
    expected = compute_grinding(pmf, model, tries)
    rng = random.Random(f"grinding {colluders} {model}")
    registry = SimRegistry(devices, colluders)
    found = sum(simulate_grinding(rng, registry, model, tries) for _ in range(trials))
    check_share("found", found, trials, expected)


def test_runs_are_deterministic() -> None:
    def run() -> list[object]:
        rng = random.Random(7)
        registry = SimRegistry(50, 10)
        return [
            *simulate_attempts(rng, registry, Model(race=Race.RANDOM), 200),
            simulate_campaign(rng, 40, 10, Model(audit=0.2)),
            simulate_device_life(rng, 50, 10, Model(), DeviceLife(500, 0.1, 50)),
            simulate_judging(rng, [True, False, True], Model(race=Race.RANDOM)),
        ]

    assert run() == run()


def test_binomial_is_the_limit_of_the_registry() -> None:
    for k, c in [(3, 0.05), (5, 0.33)]:
        big = compute_hypergeometric_pmf(k, round(c * 10**6), 10**6)
        assert big == pytest.approx(compute_binomial_pmf(k, c), abs=1e-5)
